#include "core/status.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"

namespace pagoda {
namespace {

StatusOr<int> half_of(int x) {
  if (x % 2) return InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status quarter(int x, int* out) {
  PAGODA_ASSIGN_OR_RETURN(int h, half_of(x));
  PAGODA_ASSIGN_OR_RETURN(*out, half_of(h));
  return OkStatus();
}

TEST(StatusTest, PropagatesErrorsAndValues) {
  int q = 0;
  EXPECT_TRUE(quarter(8, &q).ok());
  EXPECT_EQ(q, 2);
  Status s = quarter(6, &q);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.to_string(), "INVALID_ARGUMENT: odd: 3");
}

// Every f16 bit pattern survives f16 -> f32 -> f16, and rounding of f32 -> f16/bf16 is to
// nearest even (checked against the exact midpoint arithmetic in double).
TEST(DTypeTest, F16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (f != f) continue;  // NaN payloads need not round-trip
    EXPECT_EQ(f32_to_f16(f), h) << "h=" << h << " f=" << f;
  }
}

TEST(DTypeTest, NarrowingRoundsToNearest) {
  const float one = 1.0f;
  // 1 + 2^-11 is exactly halfway between 1 and the next f16 (1 + 2^-10): ties to even -> 1.
  EXPECT_EQ(f16_to_f32(f32_to_f16(one + 0x1p-11f)), 1.0f);
  EXPECT_EQ(f16_to_f32(f32_to_f16(one + 0x1.8p-11f)), 1.0f + 0x1p-10f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(one + 0x1p-8f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(one + 0x1.8p-8f)), 1.0f + 0x1p-7f);
  EXPECT_EQ(f16_to_f32(f32_to_f16(1e-7f)), 0x1p-24f * 2);  // subnormal: 1e-7 / 2^-24 = 1.68 -> 2
  EXPECT_EQ(f16_to_f32(f32_to_f16(1e6f)), INFINITY);
}

}  // namespace
}  // namespace pagoda
