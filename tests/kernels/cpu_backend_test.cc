// CpuBackend plumbing: identity, zeroed aligned allocations, copies, and the bandwidth probe.
#include "kernels/cpu/cpu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pagoda {
namespace {

TEST(CpuBackendTest, Identity) {
  auto backend = make_cpu_backend(2);
  EXPECT_EQ(backend->device(), Device::kCpu);
  EXPECT_EQ(backend->activation_dtype(), DType::kF32);
  EXPECT_EQ(backend->name(), "cpu (2 threads, avx2)");
  EXPECT_NE(make_cpu_backend(0)->name().find("threads"), std::string::npos);
}

TEST(CpuBackendTest, AllocatesZeroedAlignedMemoryAndCopies) {
  auto backend = make_cpu_backend(1);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{100}, size_t{1} << 20}) {
    StatusOr<DeviceBuffer> buf = backend->allocate(bytes);
    ASSERT_TRUE(buf.ok());
    ASSERT_NE(buf->data(), nullptr);
    EXPECT_EQ(buf->size(), bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf->data()) % 64, 0u);
    const uint8_t* bytes_p = static_cast<const uint8_t*>(buf->data());
    EXPECT_TRUE(std::all_of(bytes_p, bytes_p + bytes, [](uint8_t b) { return b == 0; }));
    std::vector<uint8_t> src(bytes), back(bytes);
    for (size_t i = 0; i < bytes; ++i) src[i] = static_cast<uint8_t>(i * 7 + 1);
    ASSERT_TRUE(backend->copy_from_host(buf->data(), src.data(), bytes).ok());
    ASSERT_TRUE(backend->copy_to_host(back.data(), buf->data(), bytes).ok());
    EXPECT_EQ(src, back);
  }
  EXPECT_TRUE(backend->synchronize().ok());
  EXPECT_EQ(backend->copy_from_host(nullptr, "x", 1).code(), StatusCode::kInvalidArgument);
}

TEST(CpuBackendTest, ReadBandwidthIsPositiveAndFinite) {
  for (int threads : {1, 2}) {
    const double gbs = measure_read_bandwidth_gbs(threads, size_t{4} << 20);
    EXPECT_TRUE(std::isfinite(gbs)) << gbs;
    EXPECT_GT(gbs, 0.0);
  }
}

}  // namespace
}  // namespace pagoda
