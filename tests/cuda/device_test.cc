// CUDA plumbing: availability and backend creation (these run without a device, so CI checks
// them), the error-to-Status mapping, and on a device: allocation, copies, OOM, stubs.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "tests/cuda/cuda_test_util.h"

namespace pagoda {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(CudaAvailability, BackendCreationAgreesWithAvailability) {
  const bool available = cuda_device_available();
  auto backend = make_cuda_backend(0);
  EXPECT_EQ(available, backend.ok()) << backend.status().to_string();
  if (!available) {
    EXPECT_EQ(backend.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_TRUE(contains(backend.status().message(), "no CUDA device"))
        << backend.status().message();
  }
}

TEST(CudaAvailability, BadDeviceIndexIsAnError) {
  for (const int index : {-1, 1 << 20}) {
    auto backend = make_cuda_backend(index);
    ASSERT_FALSE(backend.ok()) << index;
    EXPECT_EQ(backend.status().code(), cuda_device_available() ? StatusCode::kInvalidArgument
                                                               : StatusCode::kFailedPrecondition)
        << backend.status().to_string();
  }
}

Status fails_at_second_call() {
  PAGODA_CUDA_RETURN_IF_ERROR(cudaSuccess);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaErrorMemoryAllocation);
  return Internal("not reached");
}

TEST(CudaCheck, CudaErrorsBecomeStatuses) {
  EXPECT_TRUE(PAGODA_CUDA_STATUS(cudaSuccess).ok());
  const Status s = fails_at_second_call();
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(contains(s.message(), "device_test.cc:")) << s.message();
  EXPECT_TRUE(contains(s.message(), "cudaErrorMemoryAllocation")) << s.message();
  EXPECT_EQ(PAGODA_CUDA_STATUS(cudaErrorNoDevice).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(PAGODA_CUDA_STATUS(cudaErrorInvalidValue).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PAGODA_CUDA_STATUS(cudaErrorLaunchFailure).code(), StatusCode::kInternal);
}

TEST(CudaCheck, CublasErrorsBecomeStatuses) {
  EXPECT_TRUE(PAGODA_CUBLAS_STATUS(CUBLAS_STATUS_SUCCESS).ok());
  const Status s = PAGODA_CUBLAS_STATUS(CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message(), "CUBLAS_STATUS_INVALID_VALUE")) << s.message();
  EXPECT_EQ(PAGODA_CUBLAS_STATUS(CUBLAS_STATUS_ALLOC_FAILED).code(),
            StatusCode::kResourceExhausted);
}

TEST(CudaBackend, Identity) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  EXPECT_EQ(backend->device(), Device::kCuda);
  EXPECT_EQ(backend->activation_dtype(), DType::kBF16);
  EXPECT_EQ(backend->name().rfind("cuda:0 (", 0), 0u) << backend->name();
}

TEST(CudaBackend, AllocateReturnsZeroedMemory) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  constexpr size_t kBytes = 1000003;
  // Dirty some memory first so that a fresh allocation could plausibly reuse it.
  {
    auto dirty = backend->allocate(kBytes);
    ASSERT_TRUE(dirty.ok()) << dirty.status().to_string();
    const std::vector<uint8_t> ones(kBytes, 0x5a);
    ASSERT_TRUE(backend->copy_from_host(dirty->data(), ones.data(), kBytes).ok());
  }
  auto buf = backend->allocate(kBytes);
  ASSERT_TRUE(buf.ok()) << buf.status().to_string();
  EXPECT_EQ(buf->size(), kBytes);
  std::vector<uint8_t> host(kBytes, 0xff);
  ASSERT_TRUE(backend->copy_to_host(host.data(), buf->data(), kBytes).ok());
  for (size_t i = 0; i < kBytes; ++i) ASSERT_EQ(host[i], 0) << "byte " << i;
}

TEST(CudaBackend, CopyRoundTrip) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(7);
  for (const size_t bytes : {size_t{1}, size_t{12345}, size_t{1} << 22}) {
    std::vector<uint8_t> src(bytes);
    for (auto& b : src) b = static_cast<uint8_t>(rng());
    auto buf = backend->allocate(bytes);
    ASSERT_TRUE(buf.ok()) << buf.status().to_string();
    ASSERT_TRUE(backend->copy_from_host(buf->data(), src.data(), bytes).ok());
    std::vector<uint8_t> back(bytes, 0);
    ASSERT_TRUE(backend->copy_to_host(back.data(), buf->data(), bytes).ok());
    EXPECT_EQ(src, back) << bytes << " bytes";
  }
  auto empty = backend->allocate(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_TRUE(backend->copy_from_host(nullptr, nullptr, 0).ok());
  EXPECT_TRUE(backend->synchronize().ok());
}

TEST(CudaBackend, OutOfMemoryIsResourceExhausted) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  constexpr size_t kHuge = size_t{1} << 50;  // 1 PiB
  auto buf = backend->allocate(kHuge);
  ASSERT_FALSE(buf.ok());
  EXPECT_EQ(buf.status().code(), StatusCode::kResourceExhausted) << buf.status().to_string();
  EXPECT_TRUE(contains(buf.status().message(), std::to_string(kHuge))) << buf.status().message();
  // The failure is not sticky.
  auto small = backend->allocate(4096);
  EXPECT_TRUE(small.ok()) << small.status().to_string();
  EXPECT_TRUE(backend->synchronize().ok());
}

// Every op is dispatched; empty arguments are refused by the launchers, not the device.
TEST(CudaBackend, EmptyArgumentsAreInvalidForEveryOp) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  EXPECT_EQ(backend->matmul(MatmulArgs{}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->attention(AttentionArgs{}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->embedding(EmbeddingArgs{}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->rope(RopeArgs{}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->kv_write(KvWriteArgs{}).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pagoda
