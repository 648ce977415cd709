// swiglu against a double reference (gates over the whole useful range of exp) and add, over
// odd sizes and in place; argument errors.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

TEST(SwigluTest, MatchesReference) {
  auto backend = make_cpu_backend(2);
  for (auto [T, H] : {std::pair{1, 1}, std::pair{1, 13}, std::pair{3, 37}, std::pair{5, 5632},
                      std::pair{2, 64}}) {
    for (int alias = 0; alias < 3; ++alias) {  // out separate, out = gate, out = up
      SCOPED_TRACE(::testing::Message() << "T=" << T << " H=" << H << " alias=" << alias);
      std::mt19937 rng(static_cast<uint32_t>(T * 31 + H + alias));
      HostTensor gate = ref::random_tensor(rng, DType::kF32, {T, H}, -20.0f, 20.0f);
      HostTensor up = ref::random_tensor(rng, DType::kF32, {T, H}, -3.0f, 3.0f);
      HostTensor out = ref::poisoned(DType::kF32, {T, H});
      std::vector<double> want(gate.numel());
      for (int64_t i = 0; i < gate.numel(); ++i) {
        const double g = gate.get(i);
        want[i] = g / (1.0 + std::exp(-g)) * up.get(i);
      }
      const HostTensor& dst = alias == 0 ? out : alias == 1 ? gate : up;
      ASSERT_TRUE(backend->swiglu({gate.view(), up.view(), dst.view()}).ok());
      EXPECT_TRUE(ref::all_close(dst.f32(), want, 1e-7, 2e-6));
    }
  }
}

TEST(SwigluTest, RejectsMismatchedShapes) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(1);
  HostTensor gate = ref::random_tensor(rng, DType::kF32, {2, 8});
  HostTensor up = ref::random_tensor(rng, DType::kF32, {2, 9});
  HostTensor out = ref::poisoned(DType::kF32, {2, 8});
  const Status s = backend->swiglu({gate.view(), up.view(), out.view()});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("swiglu: up"), std::string::npos) << s.message();
}

TEST(AddTest, AddsInPlaceExactly) {
  auto backend = make_cpu_backend(2);
  for (auto [T, D] : {std::pair{1, 1}, std::pair{3, 13}, std::pair{7, 4096}}) {
    std::mt19937 rng(static_cast<uint32_t>(T + D));
    HostTensor a = ref::random_tensor(rng, DType::kF32, {T, D});
    HostTensor b = ref::random_tensor(rng, DType::kF32, {T, D});
    std::vector<double> want(a.numel());
    for (int64_t i = 0; i < a.numel(); ++i) want[i] = static_cast<float>(a.f32()[i] + b.f32()[i]);
    ASSERT_TRUE(backend->add({a.view(), b.view()}).ok());
    EXPECT_TRUE(ref::all_close(a.f32(), want, 0.0, 0.0));
  }
}

TEST(AddTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(1);
  HostTensor a = ref::random_tensor(rng, DType::kF32, {2, 8});
  HostTensor b = ref::random_tensor(rng, DType::kF32, {2, 7});
  HostTensor b_bf16 = ref::random_tensor(rng, DType::kBF16, {2, 8});
  for (const HostTensor* bad : {&b, &b_bf16}) {
    const Status s = backend->add({a.view(), bad->view()});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("add: b"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace pagoda
