// CUDA rms_norm against a double-precision CPU reference: odd dims, f32/bf16 activations,
// f32/f16/bf16 weights, residual on/off, poisoned outputs; plus aliasing, misaligned views,
// batch invariance and argument checks (the argument checks also run without a device).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/launchers.h"
#include "tests/cuda/cuda_test_util.h"

namespace pagoda {
namespace {

using testing::DeviceTensor;
using testing::download;
using testing::poison;
using testing::random_values;
using testing::upload;

constexpr float kEps = 1e-5f;

struct Reference {
  std::vector<float> residual;  // residual after the add, rounded to the activation dtype
  std::vector<double> out;
};

// in, res: [T, dim] (res may be empty); w: [dim].
Reference reference(const std::vector<float>& in, const std::vector<float>& res,
                    const std::vector<float>& w, int64_t rows, int64_t dim, DType act, float eps) {
  Reference r;
  r.out.resize(rows * dim);
  std::vector<float> x(in);
  if (!res.empty()) {
    r.residual.resize(rows * dim);
    for (int64_t i = 0; i < rows * dim; ++i) {
      // f32 add, then one rounding to the activation dtype, as the contract says.
      std::vector<uint8_t> tmp(4);
      store_from_f32(tmp.data(), act, 0, res[i] + in[i]);
      r.residual[i] = load_as_f32(tmp.data(), act, 0);
    }
    x = r.residual;
  }
  for (int64_t t = 0; t < rows; ++t) {
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += double{x[t * dim + i]} * x[t * dim + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) r.out[t * dim + i] = x[t * dim + i] * inv * w[i];
  }
  return r;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, DType act,
                  const std::string& what) {
  // f32: f32 sums and rsqrtf; bf16: one output rounding (half an ulp = 2^-9) plus that.
  const double rtol = act == DType::kF32 ? 2e-5 : 1.0 / 256;
  const double atol = act == DType::kF32 ? 1e-6 : 1e-5;
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(std::fabs(got[i] - want[i]) <= tol)) {  // also catches NaN (poison left behind)
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
}

using Param = std::tuple<int64_t, DType, DType, bool>;  // dim, activation, weight, residual

class CudaRmsNormTest : public ::testing::TestWithParam<Param> {};

TEST_P(CudaRmsNormTest, MatchesReference) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  const auto [dim, act, wdt, with_residual] = GetParam();
  constexpr int64_t kRows = 5;
  std::mt19937 rng(static_cast<uint32_t>(dim * 131 + static_cast<int>(act) * 7 +
                                         static_cast<int>(wdt) * 3 + with_residual));
  const std::vector<float> in = random_values(kRows * dim, act, rng);
  const std::vector<float> res =
      with_residual ? random_values(kRows * dim, act, rng) : std::vector<float>{};
  const std::vector<float> w = random_values(dim, wdt, rng, -1.5f, 1.5f);

  DeviceTensor d_in = upload(*backend, in, act, {kRows, dim});
  DeviceTensor d_res;
  if (with_residual) d_res = upload(*backend, res, act, {kRows, dim});
  DeviceTensor d_w = upload(*backend, w, wdt, {dim});
  DeviceTensor d_out = upload(*backend, in, act, {kRows, dim});
  poison(*backend, d_out.view);

  const Status s = backend->rms_norm({d_in.view, d_res.view, d_w.view, d_out.view, kEps});
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_TRUE(backend->synchronize().ok());

  const Reference ref = reference(in, res, w, kRows, dim, act, kEps);
  expect_close(download(*backend, d_out.view), ref.out, act, "out");
  if (with_residual) {
    EXPECT_EQ(download(*backend, d_res.view), ref.residual) << "residual";
  }
  EXPECT_EQ(download(*backend, d_in.view), in) << "input must not change";
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [dim, act, wdt, with_residual] = info.param;
  return "dim" + std::to_string(dim) + "_" + dtype_name(act) + "_w" + dtype_name(wdt) +
         (with_residual ? "_residual" : "");
}

INSTANTIATE_TEST_SUITE_P(Sweep, CudaRmsNormTest,
                         ::testing::Combine(::testing::Values(1, 7, 64, 1000, 4096 + 3),
                                            ::testing::Values(DType::kF32, DType::kBF16),
                                            ::testing::Values(DType::kF32, DType::kF16,
                                                              DType::kBF16),
                                            ::testing::Bool()),
                         param_name);

// out == input (allowed by the contract), with and without residual; and views one element
// off alignment, which must take the scalar path and still be right.
TEST(CudaRmsNorm, InPlaceAndMisaligned) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  constexpr int64_t kRows = 3, kDim = 1024;
  std::mt19937 rng(11);
  for (const DType act : {DType::kF32, DType::kBF16}) {
    for (const bool with_residual : {false, true}) {
      for (const size_t offset : {size_t{0}, size_t{1}}) {
        const std::string what = std::string(dtype_name(act)) + (with_residual ? " residual" : "") +
                                 " offset " + std::to_string(offset);
        const std::vector<float> in = random_values(kRows * kDim, act, rng);
        const std::vector<float> res = random_values(kRows * kDim, act, rng);
        const std::vector<float> w = random_values(kDim, DType::kBF16, rng);
        DeviceTensor d_in = upload(*backend, in, act, {kRows, kDim}, offset);
        DeviceTensor d_res;
        if (with_residual) d_res = upload(*backend, res, act, {kRows, kDim}, offset);
        DeviceTensor d_w = upload(*backend, w, DType::kBF16, {kDim}, offset);
        const Status s = backend->rms_norm({d_in.view, d_res.view, d_w.view, d_in.view, kEps});
        ASSERT_TRUE(s.ok()) << what << ": " << s.to_string();
        const Reference ref =
            reference(in, with_residual ? res : std::vector<float>{}, w, kRows, kDim, act, kEps);
        expect_close(download(*backend, d_in.view), ref.out, act, what);
      }
    }
  }
}

// A row's output does not depend on how many other rows are in the batch.
TEST(CudaRmsNorm, BatchInvariant) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  constexpr int64_t kRows = 9, kDim = 4096;
  std::mt19937 rng(5);
  const std::vector<float> in = random_values(kRows * kDim, DType::kBF16, rng);
  const std::vector<float> w = random_values(kDim, DType::kBF16, rng);
  DeviceTensor d_in = upload(*backend, in, DType::kBF16, {kRows, kDim});
  DeviceTensor d_w = upload(*backend, w, DType::kBF16, {kDim});
  DeviceTensor d_out = upload(*backend, in, DType::kBF16, {kRows, kDim});
  ASSERT_TRUE(backend->rms_norm({d_in.view, {}, d_w.view, d_out.view, kEps}).ok());
  const std::vector<float> batched = download(*backend, d_out.view);
  const std::vector<float> row4(in.begin() + 4 * kDim, in.begin() + 5 * kDim);
  DeviceTensor d_in1 = upload(*backend, row4, DType::kBF16, {1, kDim});
  DeviceTensor d_out1 = upload(*backend, row4, DType::kBF16, {1, kDim});
  ASSERT_TRUE(backend->rms_norm({d_in1.view, {}, d_w.view, d_out1.view, kEps}).ok());
  const std::vector<float> alone = download(*backend, d_out1.view);
  EXPECT_EQ(alone, std::vector<float>(batched.begin() + 4 * kDim, batched.begin() + 5 * kDim));
}

TEST(CudaRmsNorm, EmptyBatchIsANoOp) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  DeviceTensor d_w = upload(*backend, std::vector<float>(64, 1.0f), DType::kBF16, {64});
  const TensorView none(nullptr, DType::kBF16, {0, 64}, Device::kCuda);
  EXPECT_TRUE(backend->rms_norm({none, {}, d_w.view, none, kEps}).ok());
  EXPECT_TRUE(backend->synchronize().ok());
}

// Argument checks happen before any device work, so these run in CI too. The pointers are
// fake and never dereferenced.
class CudaRmsNormArgsTest : public ::testing::Test {
 protected:
  static void* fake(uintptr_t p) { return reinterpret_cast<void*>(p); }
  TensorView in{fake(0x10000), DType::kBF16, {4, 64}, Device::kCuda};
  TensorView res{fake(0x20000), DType::kBF16, {4, 64}, Device::kCuda};
  TensorView w{fake(0x30000), DType::kF32, {64}, Device::kCuda};
  TensorView out{fake(0x40000), DType::kBF16, {4, 64}, Device::kCuda};

  void expect_invalid(const RmsNormArgs& a, const std::string& needle) {
    const Status s = cuda::rms_norm_cuda(a, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("rms_norm"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  }
};

TEST_F(CudaRmsNormArgsTest, BadArgumentsAreInvalidArgument) {
  TensorView f16_in = in;
  f16_in.dtype = DType::kF16;
  expect_invalid({f16_in, res, w, out, kEps}, "input dtype");
  TensorView i32_w = w;
  i32_w.dtype = DType::kI32;
  expect_invalid({in, res, i32_w, out, kEps}, "weight dtype");
  TensorView short_w = w;
  short_w.shape[0] = 63;
  expect_invalid({in, res, short_w, out, kEps}, "weight must be [64]");
  TensorView f32_out = out;
  f32_out.dtype = DType::kF32;
  expect_invalid({in, res, w, f32_out, kEps}, "out must match");
  TensorView wide_res = res;
  wide_res.shape[1] = 65;
  expect_invalid({in, wide_res, w, out, kEps}, "residual must match");
  TensorView cpu_out = out;
  cpu_out.device = Device::kCpu;
  expect_invalid({in, res, w, cpu_out, kEps}, "out must be on the cuda device");
  const TensorView flat(fake(0x10000), DType::kBF16, {256}, Device::kCuda);
  expect_invalid({flat, {}, w, flat, kEps}, "input must be [T, dim]");
  expect_invalid({in, res, w, res, kEps}, "out must not overlap residual");
  expect_invalid({in, in, w, out, kEps}, "residual must not overlap input");  // as on the CPU
  TensorView shifted_out = in;
  shifted_out.data = fake(0x10000 + 2);
  expect_invalid({in, {}, w, shifted_out, kEps}, "out must be input itself");
  expect_invalid({in, res, w, out, -1.0f}, "eps");
  expect_invalid({in, res, w, out, NAN}, "eps");
}

TEST(CudaRmsNormBackend, BadArgumentThroughBackend) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  DeviceTensor d_in = upload(*backend, std::vector<float>(2 * 8, 1.0f), DType::kBF16, {2, 8});
  DeviceTensor d_w = upload(*backend, std::vector<float>(7, 1.0f), DType::kBF16, {7});
  const Status s = backend->rms_norm({d_in.view, {}, d_w.view, d_in.view, kEps});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
}

}  // namespace
}  // namespace pagoda
