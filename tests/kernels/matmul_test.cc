// matmul against a double reference over odd shapes, weight dtypes, bias on/off and 1 or 2
// threads; argument errors.
#include <gtest/gtest.h>

#include <tuple>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

struct MatmulCase {
  int64_t T, K, N;
  DType wdtype;
  bool bias;
  int threads;
};

void run_case(const MatmulCase& c) {
  SCOPED_TRACE(::testing::Message()
               << "T=" << c.T << " K=" << c.K << " N=" << c.N << " w=" << dtype_name(c.wdtype)
               << " bias=" << c.bias << " threads=" << c.threads);
  std::mt19937 rng(static_cast<uint32_t>(c.T * 1000003 + c.K * 101 + c.N));
  HostTensor x = ref::random_tensor(rng, DType::kF32, {c.T, c.K});
  HostTensor w = ref::random_tensor(rng, c.wdtype, {c.N, c.K});
  HostTensor bias = c.bias ? ref::random_tensor(rng, c.wdtype, {c.N}) : HostTensor();
  HostTensor out = ref::poisoned(DType::kF32, {c.T, c.N});
  auto backend = make_cpu_backend(c.threads);
  MatmulArgs a{x.view(), w.view(), c.bias ? bias.view() : TensorView(), out.view()};
  ASSERT_TRUE(backend->matmul(a).ok());
  std::vector<double> magnitude;
  const std::vector<double> want =
      ref::ref_matmul(x, w, c.bias ? &bias : nullptr, c.T, c.K, c.N, &magnitude);
  std::vector<double> tol(want.size());
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = 1e-6 + 1e-5 * magnitude[i];
  EXPECT_TRUE(ref::all_close(out.f32(), want, tol));
}

class MatmulSweep : public ::testing::TestWithParam<std::tuple<DType, bool>> {};

TEST_P(MatmulSweep, MatchesReference) {
  const auto [wdtype, bias] = GetParam();
  for (int64_t T : {1, 3, 7, 17}) {
    for (int64_t K : {8, 13, 64, 200, 1000}) {
      for (int64_t N : {1, 5, 33, 67}) run_case({T, K, N, wdtype, bias, 2});
    }
  }
}

TEST_P(MatmulSweep, MatchesReferenceSplitAcrossThreads) {
  const auto [wdtype, bias] = GetParam();
  // Large enough that both threads get a chunk, with chunk edges inside tiles.
  for (int threads : {1, 2}) {
    run_case({1, 1000, 301, wdtype, bias, threads});
    run_case({17, 200, 301, wdtype, bias, threads});
    run_case({5, 1000, 127, wdtype, bias, threads});
  }
}

INSTANTIATE_TEST_SUITE_P(DTypesAndBias, MatmulSweep,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kF16,
                                                              DType::kBF16),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_bias" : "_nobias");
                         });

TEST(MatmulTest, LargeRowCountUsesSeveralL2Passes) {
  // K = 1000 f32 rows: 128 rows per pass, so T = 300 takes three passes over each chunk.
  run_case({300, 1000, 37, DType::kBF16, true, 2});
}

TEST(MatmulTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(7);
  HostTensor x = ref::random_tensor(rng, DType::kF32, {3, 16});
  HostTensor w = ref::random_tensor(rng, DType::kBF16, {5, 16});
  HostTensor w_bad_k = ref::random_tensor(rng, DType::kBF16, {5, 15});
  HostTensor bias_bad = ref::random_tensor(rng, DType::kF32, {4});
  HostTensor out = ref::poisoned(DType::kF32, {3, 5});
  HostTensor out_bad = ref::poisoned(DType::kF32, {3, 6});
  HostTensor x_i32(DType::kI32, {3, 16});
  auto expect_invalid = [&](const MatmulArgs& a, const std::string& needle) {
    const Status s = backend->matmul(a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  expect_invalid({x.view(), w_bad_k.view(), {}, out.view()}, "matmul: w");
  expect_invalid({x.view(), w.view(), bias_bad.view(), out.view()}, "matmul: bias");
  expect_invalid({x.view(), w.view(), {}, out_bad.view()}, "matmul: out");
  expect_invalid({x_i32.view(), w.view(), {}, out.view()}, "matmul: x");
  // out overlapping x.
  TensorView alias = x.view();
  alias.shape = {3, 5, 0, 0};
  expect_invalid({x.view(), w.view(), {}, alias}, "must not overlap");
  // A tensor that claims to live on a GPU.
  TensorView on_gpu = w.view();
  on_gpu.device = Device::kCuda;
  expect_invalid({x.view(), on_gpu, {}, out.view()}, "host memory");
  // Missing data.
  TensorView no_data = x.view();
  no_data.data = nullptr;
  expect_invalid({no_data, w.view(), {}, out.view()}, "no data");
}

}  // namespace
}  // namespace pagoda
