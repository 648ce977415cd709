// CUDA matmul (cuBLASLt) against its CPU twin (make_cpu_backend): T in {1, 3, 17, 64}, K in
// {8, 200, 2048}, odd N, f32 and bf16 (out bf16 or f32), bias on/off, outputs poisoned; plus
// argument checks that run without a device (fake device pointers, never dereferenced).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/launchers.h"
#include "tests/cuda/cuda_test_util.h"

namespace pagoda {
namespace {

using testing::DeviceTensor;
using testing::download;
using testing::encode;
using testing::poison;
using testing::random_values;
using testing::upload;

// The CPU twin: x is f32 there, holding exactly the (already quantized) values the device sees.
std::vector<float> cpu_matmul(const std::vector<float>& x, const std::vector<float>& w,
                              const std::vector<float>& bias, DType wdt, int64_t T, int64_t K,
                              int64_t N) {
  static std::unique_ptr<Backend> cpu = make_cpu_backend(2);
  std::vector<float> xs(x);
  std::vector<uint8_t> wb = encode(w, wdt), bb = encode(bias, wdt);
  std::vector<float> out(T * N, std::nanf(""));
  MatmulArgs a;
  a.x = TensorView(xs.data(), DType::kF32, {T, K});
  a.w = TensorView(wb.data(), wdt, {N, K});
  if (!bias.empty()) a.bias = TensorView(bb.data(), wdt, {N});
  a.out = TensorView(out.data(), DType::kF32, {T, N});
  const Status s = cpu->matmul(a);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return out;
}

// |x|·|w| per output: the scale of the rounding error of a sum of K products.
std::vector<double> magnitudes(const std::vector<float>& x, const std::vector<float>& w,
                               const std::vector<float>& bias, int64_t T, int64_t K, int64_t N) {
  std::vector<double> m(T * N);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double s = bias.empty() ? 0.0 : std::fabs(bias[n]);
      for (int64_t k = 0; k < K; ++k) s += std::fabs(double{x[t * K + k]} * w[n * K + k]);
      m[t * N + n] = s;
    }
  }
  return m;
}

// f32 outputs: 1e-5 relative (plus a summation-order term); bf16 outputs: 1e-2 relative.
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<double>& mag, DType out_dtype, const std::string& what) {
  const double rtol = out_dtype == DType::kF32 ? 1e-5 : 1e-2;
  const double mtol = out_dtype == DType::kF32 ? 1e-6 : 1e-4;
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const double tol = rtol * std::fabs(want[i]) + mtol * mag[i] + 1e-7;
    if (!(std::fabs(double{got[i]} - want[i]) <= tol)) {  // also catches NaN (poison left behind)
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i]
                    << " (tol " << tol << ")";
      ++bad;
    }
  }
}

// T, K, N, activation (= weight) dtype, out dtype, bias
using Param = std::tuple<int64_t, int64_t, int64_t, DType, DType, bool>;

class CudaMatmulTest : public ::testing::TestWithParam<Param> {};

TEST_P(CudaMatmulTest, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  const auto [T, K, N, act, out_dt, with_bias] = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(T * 7919 + K * 131 + N * 17 + static_cast<int>(act) * 5 +
                                         static_cast<int>(out_dt) * 3 + with_bias));
  const std::vector<float> x = random_values(T * K, act, rng);
  const std::vector<float> w = random_values(N * K, act, rng, -1.0f, 1.0f);
  const std::vector<float> bias =
      with_bias ? random_values(N, act, rng, -4.0f, 4.0f) : std::vector<float>{};

  DeviceTensor d_x = upload(*backend, x, act, {T, K});
  DeviceTensor d_w = upload(*backend, w, act, {N, K});
  DeviceTensor d_b;
  if (with_bias) d_b = upload(*backend, bias, act, {N});
  DeviceTensor d_out = upload(*backend, std::vector<float>(T * N, 0.0f), out_dt, {T, N});
  poison(*backend, d_out.view);

  auto stream = cuda::Stream::create(0);
  ASSERT_TRUE(stream.ok()) << stream.status().to_string();
  const Status s = cuda::matmul_cuda({d_x.view, d_w.view, d_b.view, d_out.view}, stream->get());
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_TRUE(stream->synchronize().ok());

  const std::vector<float> want = cpu_matmul(x, w, bias, act, T, K, N);
  expect_close(download(*backend, d_out.view), want, magnitudes(x, w, bias, T, K, N), out_dt,
               "out");
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [T, K, N, act, out_dt, with_bias] = info.param;
  std::string name = "T";  // appended piece by piece: g++ 12 warns (-Wrestrict) on one chain
  name += std::to_string(T) + "_K" + std::to_string(K) + "_N" + std::to_string(N);
  name += std::string("_") + dtype_name(act) + "_out_" + dtype_name(out_dt);
  if (with_bias) name += "_bias";
  return name;
}

INSTANTIATE_TEST_SUITE_P(F32, CudaMatmulTest,
                         ::testing::Combine(::testing::Values(1, 3, 17, 64),
                                            ::testing::Values(8, 200, 2048),
                                            ::testing::Values(5, 259),
                                            ::testing::Values(DType::kF32),
                                            ::testing::Values(DType::kF32), ::testing::Bool()),
                         param_name);
INSTANTIATE_TEST_SUITE_P(
    BF16, CudaMatmulTest,
    ::testing::Combine(::testing::Values(1, 3, 17, 64), ::testing::Values(8, 200, 2048),
                       ::testing::Values(5, 259), ::testing::Values(DType::kBF16),
                       ::testing::Values(DType::kBF16, DType::kF32), ::testing::Bool()),
    param_name);

// Misaligned views (offsets of one element) and an f32 bias on a bf16 output: the paths that
// cannot use the 16-byte-aligned epilogue.
TEST(CudaMatmul, MisalignedAndMixedBias) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  constexpr int64_t T = 5, K = 37, N = 21;
  std::mt19937 rng(42);
  const std::vector<float> x = random_values(T * K, DType::kBF16, rng);
  const std::vector<float> w = random_values(N * K, DType::kBF16, rng);
  const std::vector<float> bias = random_values(N, DType::kF32, rng);
  DeviceTensor d_x = upload(*backend, x, DType::kBF16, {T, K}, 1);
  DeviceTensor d_w = upload(*backend, w, DType::kBF16, {N, K}, 1);
  DeviceTensor d_b = upload(*backend, bias, DType::kF32, {N}, 1);
  DeviceTensor d_out = upload(*backend, std::vector<float>(T * N), DType::kBF16, {T, N}, 1);
  poison(*backend, d_out.view);
  auto stream = cuda::Stream::create(0);
  ASSERT_TRUE(stream.ok());
  const Status s = cuda::matmul_cuda({d_x.view, d_w.view, d_b.view, d_out.view}, stream->get());
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_TRUE(stream->synchronize().ok());
  // The CPU twin takes the bias in w's dtype; compute the reference with bias f32 by hand.
  std::vector<float> want = cpu_matmul(x, w, {}, DType::kBF16, T, K, N);
  for (int64_t i = 0; i < T * N; ++i) want[i] += bias[i % N];
  expect_close(download(*backend, d_out.view), want, magnitudes(x, w, bias, T, K, N), DType::kBF16,
               "out");
}

TEST(CudaMatmul, EmptyKGivesBias) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  const std::vector<float> bias = {1.0f, -2.0f, 3.5f};
  DeviceTensor d_b = upload(*backend, bias, DType::kF32, {3});
  DeviceTensor d_out = upload(*backend, std::vector<float>(6), DType::kF32, {2, 3});
  poison(*backend, d_out.view);
  MatmulArgs a;
  a.x = TensorView(nullptr, DType::kF32, {2, 0}, Device::kCuda);
  a.w = TensorView(nullptr, DType::kF32, {3, 0}, Device::kCuda);
  a.bias = d_b.view;
  a.out = d_out.view;
  ASSERT_TRUE(cuda::matmul_cuda(a, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(download(*backend, d_out.view), (std::vector<float>{1, -2, 3.5f, 1, -2, 3.5f}));
}

// ---- argument checks: no device needed -----------------------------------------------------

class CudaMatmulArgsTest : public ::testing::Test {
 protected:
  // Fake, well-separated device addresses; validation fails before anything touches them.
  static void* fake(uintptr_t i) { return reinterpret_cast<void*>(uintptr_t{1} << 40 | i << 24); }
  MatmulArgs good(DType act = DType::kBF16) const {
    MatmulArgs a;
    a.x = TensorView(fake(1), act, {3, 8}, Device::kCuda);
    a.w = TensorView(fake(2), act, {5, 8}, Device::kCuda);
    a.bias = TensorView(fake(3), act, {5}, Device::kCuda);
    a.out = TensorView(fake(4), act, {3, 5}, Device::kCuda);
    return a;
  }
  static void expect_code(const MatmulArgs& a, StatusCode code, const std::string& what) {
    const Status s = cuda::matmul_cuda(a, nullptr);
    EXPECT_EQ(s.code(), code) << what << ": " << s.to_string();
    if (code == StatusCode::kInvalidArgument || code == StatusCode::kUnimplemented) {
      EXPECT_NE(s.message().find("matmul"), std::string::npos) << s.to_string();
    }
  }
};

TEST_F(CudaMatmulArgsTest, BadArgumentsAreInvalidArgument) {
  const StatusCode kBad = StatusCode::kInvalidArgument;
  MatmulArgs a = good();
  a.x.ndim = 1;
  expect_code(a, kBad, "x 1-d");
  a = good();
  a.x.dtype = DType::kF16;
  expect_code(a, kBad, "x f16");
  a = good();
  a.x.dtype = DType::kI32;
  expect_code(a, kBad, "x i32");
  a = good();
  a.w.dtype = DType::kI32;
  expect_code(a, kBad, "w i32");
  a = good();
  a.w.shape[1] = 9;
  expect_code(a, kBad, "w K mismatch");
  a = good();
  a.out.shape[0] = 4;
  expect_code(a, kBad, "out T mismatch");
  a = good();
  a.out.shape[1] = 6;
  expect_code(a, kBad, "out N mismatch");
  a = good(DType::kF32);
  a.out.dtype = DType::kBF16;
  expect_code(a, kBad, "f32 x with bf16 out");
  a = good();
  a.bias.shape[0] = 4;
  expect_code(a, kBad, "bias N mismatch");
  a = good();
  a.bias.dtype = DType::kI32;
  expect_code(a, kBad, "bias i32");
  a = good();
  a.w.device = Device::kCpu;
  expect_code(a, kBad, "w on the cpu");
  a = good();
  a.out.device = Device::kCpu;
  expect_code(a, kBad, "out on the cpu");
  a = good();
  a.bias.device = Device::kCpu;
  expect_code(a, kBad, "bias on the cpu");
  a = good();
  a.out.data = a.x.data;
  expect_code(a, kBad, "out aliases x");
  a = good();
  a.out.data = nullptr;
  expect_code(a, kBad, "null out");
  a = good();
  a.x.shape[1] = int64_t{1} << 31;
  a.w.shape[1] = int64_t{1} << 31;
  expect_code(a, kBad, "K too large");
}

TEST_F(CudaMatmulArgsTest, MixedDtypesAreUnimplemented) {
  MatmulArgs a = good();
  a.w.dtype = DType::kF32;
  expect_code(a, StatusCode::kUnimplemented, "bf16 x, f32 w");
  a = good();
  a.w.dtype = DType::kF16;
  expect_code(a, StatusCode::kUnimplemented, "bf16 x, f16 w");
  a = good(DType::kF32);
  a.w.dtype = DType::kBF16;
  expect_code(a, StatusCode::kUnimplemented, "f32 x, bf16 w");
}

TEST_F(CudaMatmulArgsTest, EmptyBatchIsANoOp) {
  MatmulArgs a = good();
  a.x.shape[0] = 0;
  a.out.shape[0] = 0;
  EXPECT_TRUE(cuda::matmul_cuda(a, nullptr).ok());  // returns before any CUDA call
}

}  // namespace
}  // namespace pagoda
