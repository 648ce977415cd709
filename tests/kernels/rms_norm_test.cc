// rms_norm with and without the fused residual add, f32/f16/bf16 weights, odd dims, out
// aliasing input; argument errors.
#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

void run_case(int64_t T, int64_t dim, DType wdtype, bool with_residual, bool in_place) {
  SCOPED_TRACE(::testing::Message() << "T=" << T << " dim=" << dim << " w=" << dtype_name(wdtype)
                                    << " residual=" << with_residual << " in_place=" << in_place);
  std::mt19937 rng(static_cast<uint32_t>(T * 7 + dim));
  HostTensor input = ref::random_tensor(rng, DType::kF32, {T, dim}, -2.0f, 2.0f);
  HostTensor residual = ref::random_tensor(rng, DType::kF32, {T, dim}, -2.0f, 2.0f);
  HostTensor weight = ref::random_tensor(rng, wdtype, {dim}, 0.5f, 1.5f);
  HostTensor out = ref::poisoned(DType::kF32, {T, dim});
  const float eps = 1e-5f;
  // Reference input: the f32 sum residual + input (an exact, correctly rounded f32 add).
  std::vector<double> x(T * dim), new_residual(T * dim);
  for (int64_t i = 0; i < T * dim; ++i) {
    new_residual[i] = static_cast<float>(residual.f32()[i] + input.f32()[i]);
    x[i] = with_residual ? new_residual[i] : input.get(i);
  }
  const std::vector<double> want = ref::ref_rms_norm(x, weight, T, dim, eps);
  auto backend = make_cpu_backend(2);
  RmsNormArgs a{input.view(), with_residual ? residual.view() : TensorView(), weight.view(),
                in_place ? input.view() : out.view(), eps};
  ASSERT_TRUE(backend->rms_norm(a).ok());
  EXPECT_TRUE(ref::all_close(in_place ? input.f32() : out.f32(), want, 1e-6, 1e-5));
  if (with_residual) {
    EXPECT_TRUE(ref::all_close(residual.f32(), new_residual, 0.0, 0.0));
  }
}

TEST(RmsNormTest, MatchesReference) {
  for (DType wdtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t T : {1, 3, 7}) {
      for (int64_t dim : {1, 5, 8, 13, 64, 1000}) {
        for (bool with_residual : {false, true}) {
          for (bool in_place : {false, true}) run_case(T, dim, wdtype, with_residual, in_place);
        }
      }
    }
  }
}

TEST(RmsNormTest, ManyRowsAcrossThreads) {
  run_case(67, 2048, DType::kBF16, true, false);
}

TEST(RmsNormTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(2);
  HostTensor input = ref::random_tensor(rng, DType::kF32, {2, 8});
  HostTensor weight = ref::random_tensor(rng, DType::kF32, {8});
  HostTensor weight_bad = ref::random_tensor(rng, DType::kF32, {7});
  HostTensor residual_bad = ref::random_tensor(rng, DType::kF32, {3, 8});
  HostTensor out = ref::poisoned(DType::kF32, {2, 8});
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("rms_norm: " + needle), std::string::npos) << s.message();
  };
  expect_invalid(backend->rms_norm({input.view(), {}, weight_bad.view(), out.view()}), "weight");
  expect_invalid(backend->rms_norm({input.view(), residual_bad.view(), weight.view(), out.view()}),
                 "residual");
  expect_invalid(backend->rms_norm({input.view(), input.view(), weight.view(), out.view()}),
                 "residual");  // residual aliasing input
  expect_invalid(backend->rms_norm({input.view(), {}, weight.view(), out.view(), -1.0f}), "eps");
}

}  // namespace
}  // namespace pagoda
