// rope against a double reference (same f32 angle, double cos/sin) for head dims 8..256,
// GQA head counts, positions from 0 to large; argument errors.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

std::vector<float> llama_inv_freq(int64_t head_dim, double theta) {
  std::vector<float> f(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    f[i] = static_cast<float>(1.0 / std::pow(theta, 2.0 * i / head_dim));
  }
  return f;
}

void run_case(int64_t T, int64_t H, int64_t KV, int64_t D) {
  SCOPED_TRACE(::testing::Message() << "T=" << T << " H=" << H << " KV=" << KV << " D=" << D);
  std::mt19937 rng(static_cast<uint32_t>(T + 100 * H + 1000 * D));
  HostTensor q = ref::random_tensor(rng, DType::kF32, {T, H, D});
  HostTensor k = ref::random_tensor(rng, DType::kF32, {T, KV, D});
  std::vector<int32_t> positions(T);
  std::uniform_int_distribution<int32_t> pos_dist(0, 9000);
  for (int64_t t = 0; t < T; ++t) positions[t] = t == 0 ? 0 : pos_dist(rng);
  const std::vector<float> inv_freq = llama_inv_freq(D, 500000.0);
  HostTensor inv_freq_t(DType::kF32, {D / 2});
  for (int64_t i = 0; i < D / 2; ++i) inv_freq_t.f32()[i] = inv_freq[i];
  HostTensor pos_t = ref::i32_tensor(positions);
  std::vector<double> want_q(q.numel()), want_k(k.numel());
  for (int64_t i = 0; i < q.numel(); ++i) want_q[i] = q.get(i);
  for (int64_t i = 0; i < k.numel(); ++i) want_k[i] = k.get(i);
  ref::ref_rope(want_q, positions, inv_freq, H, D);
  ref::ref_rope(want_k, positions, inv_freq, KV, D);
  auto backend = make_cpu_backend(2);
  ASSERT_TRUE(backend->rope({q.view(), k.view(), pos_t.view(), inv_freq_t.view()}).ok());
  EXPECT_TRUE(ref::all_close(q.f32(), want_q, 1e-6, 1e-6));
  EXPECT_TRUE(ref::all_close(k.f32(), want_k, 1e-6, 1e-6));
}

TEST(RopeTest, MatchesReference) {
  for (int64_t D : {8, 12, 64, 128, 256}) {
    for (auto [H, KV] : {std::pair{1, 1}, std::pair{4, 2}, std::pair{8, 1}}) {
      for (int64_t T : {1, 5, 33}) run_case(T, H, KV, D);
    }
  }
}

TEST(RopeTest, PositionZeroIsIdentity) {
  std::mt19937 rng(4);
  HostTensor q = ref::random_tensor(rng, DType::kF32, {1, 2, 16});
  HostTensor k = ref::random_tensor(rng, DType::kF32, {1, 1, 16});
  std::vector<double> want_q(q.numel());
  for (int64_t i = 0; i < q.numel(); ++i) want_q[i] = q.get(i);
  HostTensor pos = ref::i32_tensor({0});
  HostTensor inv_freq = ref::random_tensor(rng, DType::kF32, {8}, 0.01f, 1.0f);
  auto backend = make_cpu_backend(1);
  ASSERT_TRUE(backend->rope({q.view(), k.view(), pos.view(), inv_freq.view()}).ok());
  EXPECT_TRUE(ref::all_close(q.f32(), want_q, 0.0, 0.0));
}

TEST(RopeTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(4);
  HostTensor q = ref::random_tensor(rng, DType::kF32, {2, 2, 8});
  HostTensor k = ref::random_tensor(rng, DType::kF32, {2, 1, 8});
  HostTensor q_odd = ref::random_tensor(rng, DType::kF32, {2, 2, 7});
  HostTensor k_odd = ref::random_tensor(rng, DType::kF32, {2, 1, 7});
  HostTensor k_short = ref::random_tensor(rng, DType::kF32, {1, 1, 8});
  HostTensor inv_freq = ref::random_tensor(rng, DType::kF32, {4});
  HostTensor inv_freq_bad = ref::random_tensor(rng, DType::kF32, {3});
  HostTensor pos = ref::i32_tensor({0, 5});
  HostTensor pos_neg = ref::i32_tensor({3, -1});
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("rope: " + needle), std::string::npos) << s.message();
  };
  expect_invalid(backend->rope({q.view(), k.view(), pos_neg.view(), inv_freq.view()}), "positions");
  expect_invalid(backend->rope({q.view(), k.view(), pos.view(), inv_freq_bad.view()}), "inv_freq");
  expect_invalid(backend->rope({q_odd.view(), k_odd.view(), pos.view(), inv_freq.view()}), "q");
  expect_invalid(backend->rope({q.view(), k_short.view(), pos.view(), inv_freq.view()}), "k");
}

}  // namespace
}  // namespace pagoda
