// The CUDA argmax against its CPU twin: the same index for every row, over odd shapes (one
// element, less than a warp, more than a block) and planted ties, NaN and infinities; the
// output poisoned first. Skips without a device (the argument checks run everywhere).
#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/launchers.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/kernels/argmax_rows.h"

namespace pagoda {
namespace {

using testing::upload;

TEST(CudaArgmax, MatchesTheCpuTwin) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(2);
  std::mt19937 rng(3);
  for (int64_t vocab : {1, 7, 32, 511, 513, 4096, 32000, 128256}) {
    for (int64_t rows : {1, 8, 19}) {
      std::vector<float> values = testing_rows::argmax_rows(rng, rows, vocab);
      testing::DeviceTensor logits = upload(*gpu, values, DType::kF32, {rows, vocab});
      auto out_buf = gpu->allocate(rows * sizeof(int32_t));
      ASSERT_TRUE(out_buf.ok());
      const TensorView out(out_buf->data(), DType::kI32, {rows}, Device::kCuda);
      std::vector<int32_t> got(rows, -7);
      ASSERT_TRUE(gpu->copy_from_host(out.data, got.data(), rows * sizeof(int32_t)).ok());
      const Status s = gpu->argmax({logits.view, out});
      ASSERT_TRUE(s.ok()) << s.to_string();
      ASSERT_TRUE(gpu->copy_to_host(got.data(), out.data, rows * sizeof(int32_t)).ok());

      std::vector<int32_t> want(rows, -9);
      const TensorView host_logits(values.data(), DType::kF32, {rows, vocab}, Device::kCpu);
      const TensorView host_out(want.data(), DType::kI32, {rows}, Device::kCpu);
      ASSERT_TRUE(cpu->argmax({host_logits, host_out}).ok());
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(got[r], want[r])
            << "vocab " << vocab << " row " << r << " (" << testing_rows::kind_name(r) << ")";
    }
  }
}

// The launcher checks run without a device (fake device pointers are never dereferenced).
TEST(CudaArgmaxArgs, RejectsBadArguments) {
  auto fake = [](uintptr_t p) { return reinterpret_cast<void*>(p); };
  const TensorView logits(fake(0x10000), DType::kF32, {3, 100}, Device::kCuda);
  const TensorView out(fake(0x90000), DType::kI32, {3}, Device::kCuda);
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_EQ(s.message().rfind("argmax: ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  TensorView bf16 = logits;
  bf16.dtype = DType::kBF16;
  expect_invalid(cuda::argmax_cuda({bf16, out}, nullptr), "f32");
  TensorView short_out = out;
  short_out.shape[0] = 2;
  expect_invalid(cuda::argmax_cuda({logits, short_out}, nullptr), "out must be [3] i32");
  TensorView host_out = out;
  host_out.device = Device::kCpu;
  expect_invalid(cuda::argmax_cuda({logits, host_out}, nullptr), "out");
  TensorView inside = out;
  inside.data = fake(0x10000 + 64);
  expect_invalid(cuda::argmax_cuda({logits, inside}, nullptr), "overlap");
  TensorView empty_rows = logits;
  empty_rows.shape[1] = 0;
  expect_invalid(cuda::argmax_cuda({empty_rows, out}, nullptr), "length 0");
}

}  // namespace
}  // namespace pagoda
