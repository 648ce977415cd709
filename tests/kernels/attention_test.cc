// Paged attention against a double reference: head dims 8/12/64/128, GQA ratios 1/2/4/8, block
// sizes 1/16/32, shuffled block tables, decodes and prefill chunks (with and without prior
// context) mixed in one call, f32/f16/bf16 caches; argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <tuple>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;
using ref::PagedBatch;

struct AttentionCase {
  int64_t D, H, KV, block_size;
  DType cache_dtype = DType::kF32;
  float q_range = 1.0f;  // larger: peakier softmax
  int threads = 2;
};

// Decodes over short and long contexts, a q_len-0 sequence, a prefill chunk after prior
// context and a prefill from scratch.
const std::vector<int32_t> kQLens = {1, 9, 1, 0, 1, 20};
const std::vector<int32_t> kSeqLens = {1, 40, 37, 5, 70, 20};

void run_case(const AttentionCase& c) {
  SCOPED_TRACE(::testing::Message()
               << "D=" << c.D << " H=" << c.H << " KV=" << c.KV << " block_size=" << c.block_size
               << " cache=" << dtype_name(c.cache_dtype) << " q_range=" << c.q_range
               << " threads=" << c.threads);
  std::mt19937 rng(static_cast<uint32_t>(c.D * 7919 + c.H * 131 + c.KV * 17 + c.block_size));
  int64_t num_blocks = 0;
  const PagedBatch batch =
      ref::make_paged_batch(rng, kQLens, kSeqLens, c.block_size, 3, &num_blocks);
  const int64_t T = batch.T();
  HostTensor q = ref::random_tensor(rng, DType::kF32, {T, c.H, c.D}, -c.q_range, c.q_range);
  HostTensor k_cache =
      ref::random_tensor(rng, c.cache_dtype, {num_blocks, c.block_size, c.KV, c.D});
  HostTensor v_cache =
      ref::random_tensor(rng, c.cache_dtype, {num_blocks, c.block_size, c.KV, c.D});
  HostTensor tables = batch.table_tensor();
  HostTensor seq_lens = ref::i32_tensor(batch.seq_lens);
  HostTensor query_start = ref::i32_tensor(batch.query_start());
  HostTensor out = ref::poisoned(DType::kF32, {T, c.H, c.D});
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  auto backend = make_cpu_backend(c.threads);
  AttentionArgs a{q.view(),        k_cache.view(),     v_cache.view(), tables.view(),
                  seq_lens.view(), query_start.view(), out.view(),     scale};
  const Status s = backend->attention(a);
  ASSERT_TRUE(s.ok()) << s.to_string();
  const std::vector<double> want =
      ref::ref_attention(q, k_cache, v_cache, batch, c.H, c.KV, c.D, c.block_size, scale);
  EXPECT_TRUE(ref::all_close(out.f32(), want, 1e-5, 1e-5));
}

class AttentionSweep
    : public ::testing::TestWithParam<std::tuple<int64_t, std::pair<int, int>, int64_t>> {};

TEST_P(AttentionSweep, MatchesReference) {
  const auto [D, heads, block_size] = GetParam();
  run_case({D, heads.first, heads.second, block_size});
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionSweep,
                         ::testing::Combine(::testing::Values(8, 12, 64, 128),
                                            ::testing::Values(std::pair{2, 2}, std::pair{4, 2},
                                                              std::pair{8, 2}, std::pair{8, 1}),
                                            ::testing::Values(1, 16, 32)),
                         [](const auto& info) {
                           const auto& heads = std::get<1>(info.param);
                           std::ostringstream name;
                           name << "D" << std::get<0>(info.param) << "_H" << heads.first << "_KV"
                                << heads.second << "_BS" << std::get<2>(info.param);
                           return name.str();
                         });

TEST(AttentionTest, HalfPrecisionCaches) {
  run_case({64, 8, 2, 16, DType::kF16});
  run_case({12, 4, 1, 5, DType::kBF16});
  run_case({128, 4, 4, 32, DType::kBF16});
}

TEST(AttentionTest, PeakedSoftmaxAndLargeHeadDim) {
  run_case({64, 4, 2, 16, DType::kF32, 12.0f});
  run_case({256, 2, 1, 16, DType::kF32, 3.0f});
}

TEST(AttentionTest, SingleThreadAndOddBlockSize) {
  run_case({64, 4, 2, 7, DType::kF32, 1.0f, 1});
  run_case({8, 8, 1, 3, DType::kF32, 1.0f, 2});
}

TEST(AttentionTest, OutMayAliasQ) {
  std::mt19937 rng(3);
  const int64_t H = 4, KV = 2, D = 16, bs = 4;
  int64_t num_blocks = 0;
  const PagedBatch batch = ref::make_paged_batch(rng, {3, 1}, {6, 9}, bs, 0, &num_blocks);
  HostTensor q = ref::random_tensor(rng, DType::kF32, {batch.T(), H, D});
  HostTensor k_cache = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, KV, D});
  HostTensor v_cache = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, KV, D});
  HostTensor tables = batch.table_tensor();
  HostTensor seq_lens = ref::i32_tensor(batch.seq_lens);
  HostTensor query_start = ref::i32_tensor(batch.query_start());
  const std::vector<double> want =
      ref::ref_attention(q, k_cache, v_cache, batch, H, KV, D, bs, 0.25);
  auto backend = make_cpu_backend(2);
  ASSERT_TRUE(backend
                  ->attention({q.view(), k_cache.view(), v_cache.view(), tables.view(),
                               seq_lens.view(), query_start.view(), q.view(), 0.25f})
                  .ok());
  EXPECT_TRUE(ref::all_close(q.f32(), want, 1e-5, 1e-5));
}

TEST(AttentionTest, RejectsBadArguments) {
  std::mt19937 rng(11);
  const int64_t H = 4, KV = 2, D = 8, bs = 4;
  int64_t num_blocks = 0;
  const PagedBatch batch = ref::make_paged_batch(rng, {2, 1}, {5, 3}, bs, 1, &num_blocks);
  HostTensor q = ref::random_tensor(rng, DType::kF32, {3, H, D});
  HostTensor k_cache = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, KV, D});
  HostTensor v_cache = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, KV, D});
  HostTensor k_cache_3 = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, 3, D});
  HostTensor v_cache_3 = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, 3, D});
  HostTensor v_cache_bf16 = ref::random_tensor(rng, DType::kBF16, {num_blocks, bs, KV, D});
  HostTensor out = ref::poisoned(DType::kF32, {3, H, D});
  auto backend = make_cpu_backend(2);
  auto run = [&](std::vector<int32_t> seq_lens, std::vector<int32_t> qs,
                 std::vector<std::vector<int32_t>> tables, const HostTensor& kc,
                 const HostTensor& vc) {
    PagedBatch b = batch;
    b.tables = std::move(tables);
    HostTensor t = b.table_tensor();
    HostTensor sl = ref::i32_tensor(seq_lens);
    HostTensor st = ref::i32_tensor(qs);
    return backend->attention(
        {q.view(), kc.view(), vc.view(), t.view(), sl.view(), st.view(), out.view(), 0.3f});
  };
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("attention: " + needle), std::string::npos) << s.message();
  };
  const auto& good = batch.tables;
  ASSERT_TRUE(run({5, 3}, {0, 2, 3}, good, k_cache, v_cache).ok());
  expect_invalid(run({1, 3}, {0, 2, 3}, good, k_cache, v_cache), "seq_lens");     // < q_len
  expect_invalid(run({5, 3}, {0, 2, 4}, good, k_cache, v_cache), "query_start");  // != T
  expect_invalid(run({5, 3}, {0, 4, 3}, good, k_cache, v_cache), "query_start");  // decreasing
  expect_invalid(run({5, 3}, {1, 2, 3}, good, k_cache, v_cache), "query_start");  // [0] != 0
  expect_invalid(run({5, 3}, {0, 2, 3}, {{good[0][0], static_cast<int32_t>(num_blocks)}, good[1]},
                     k_cache, v_cache),
                 "block_tables");  // block id out of range
  expect_invalid(run({5, 3}, {0, 2, 3}, {{good[0][0], -2}, good[1]}, k_cache, v_cache),
                 "block_tables");
  expect_invalid(run({5, 13}, {0, 2, 3}, good, k_cache, v_cache), "seq_lens");     // > table
  expect_invalid(run({5, 9}, {0, 2, 3}, good, k_cache, v_cache), "block_tables");  // -1 pad
  expect_invalid(run({5, 3}, {0, 2, 3}, good, k_cache_3, v_cache_3), "k_cache");   // 4 % 3
  expect_invalid(run({5, 3}, {0, 2, 3}, good, k_cache, v_cache_bf16), "v_cache");
  expect_invalid(run({5, 3}, {0, 2, 3}, good, k_cache, v_cache_3), "v_cache");
  expect_invalid(run({5, 3, 1}, {0, 2, 3}, good, k_cache, v_cache), "block_tables");
}

}  // namespace
}  // namespace pagoda
