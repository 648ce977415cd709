// Paged attention against a double reference: head dims 8/12/64/128, GQA ratios 1/2/4/8, block
// sizes 1/16/32, shuffled block tables, decodes and prefill chunks (with and without prior
// context) mixed in one call, f32/f16/bf16 caches, long contexts over many blocks; argument
// errors. And bit for bit: the kernel computes a GQA group's heads and a prefill chunk's rows
// together, so every (token, head) is checked against the same query computed alone (one head,
// one decode row, one thread), and whole batches against runs on 1..8 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
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

TEST(AttentionTest, LongContextsAcrossManyBlocks) {
  // 700..1100 keys: 44..69 blocks of 16, 1100 blocks of 1; GQA groups of 1, 4 and 8.
  struct Long {
    AttentionCase c;
    std::vector<int32_t> q_lens, seq_lens;
  };
  const std::vector<Long> cases = {
      {{64, 8, 1, 16, DType::kF32}, {1, 1, 5}, {1100, 700, 913}},
      {{128, 8, 2, 16, DType::kBF16}, {1, 3}, {1024, 777}},
      {{12, 4, 4, 1, DType::kF16}, {1, 2}, {1100, 801}},
      {{64, 4, 1, 32, DType::kF16, 4.0f}, {1, 1}, {1057, 64}},
  };
  for (const Long& l : cases) {
    const AttentionCase& c = l.c;
    SCOPED_TRACE(::testing::Message()
                 << "D=" << c.D << " H=" << c.H << " KV=" << c.KV << " block_size=" << c.block_size
                 << " cache=" << dtype_name(c.cache_dtype));
    std::mt19937 rng(static_cast<uint32_t>(c.D + c.H * 31 + c.KV * 7 + c.block_size));
    int64_t num_blocks = 0;
    const PagedBatch batch =
        ref::make_paged_batch(rng, l.q_lens, l.seq_lens, c.block_size, 2, &num_blocks);
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
    auto backend = make_cpu_backend(2);
    ASSERT_TRUE(backend
                    ->attention({q.view(), k_cache.view(), v_cache.view(), tables.view(),
                                 seq_lens.view(), query_start.view(), out.view(), scale})
                    .ok());
    const std::vector<double> want =
        ref::ref_attention(q, k_cache, v_cache, batch, c.H, c.KV, c.D, c.block_size, scale);
    EXPECT_TRUE(ref::all_close(out.f32(), want, 1e-5, 1e-5));
  }
}

// Runs the whole batch on `threads` threads, then every (t, h) alone: one query row as a decode
// over its own context, one head reading a one-kv-head copy of its kv head's cache, on one
// thread. All must give the same bits as the batch on 2 threads.
void expect_same_bits_alone(const AttentionCase& c, const std::vector<int32_t>& q_lens,
                            const std::vector<int32_t>& seq_lens) {
  SCOPED_TRACE(::testing::Message()
               << "D=" << c.D << " H=" << c.H << " KV=" << c.KV << " block_size=" << c.block_size
               << " cache=" << dtype_name(c.cache_dtype));
  std::mt19937 rng(static_cast<uint32_t>(c.D * 131 + c.H * 17 + c.KV + c.block_size * 7));
  int64_t num_blocks = 0;
  const PagedBatch batch =
      ref::make_paged_batch(rng, q_lens, seq_lens, c.block_size, 1, &num_blocks);
  const int64_t T = batch.T(), H = c.H, KV = c.KV, D = c.D, bs = c.block_size;
  HostTensor q = ref::random_tensor(rng, DType::kF32, {T, H, D}, -c.q_range, c.q_range);
  HostTensor k_cache = ref::random_tensor(rng, c.cache_dtype, {num_blocks, bs, KV, D});
  HostTensor v_cache = ref::random_tensor(rng, c.cache_dtype, {num_blocks, bs, KV, D});
  HostTensor tables = batch.table_tensor();
  HostTensor lens = ref::i32_tensor(batch.seq_lens);
  HostTensor starts = ref::i32_tensor(batch.query_start());
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  auto run = [&](Backend* backend) {
    HostTensor out = ref::poisoned(DType::kF32, {T, H, D});
    EXPECT_TRUE(backend
                    ->attention({q.view(), k_cache.view(), v_cache.view(), tables.view(),
                                 lens.view(), starts.view(), out.view(), scale})
                    .ok());
    return out;
  };
  auto two = make_cpu_backend(2);
  const HostTensor full = run(two.get());
  const size_t bytes = static_cast<size_t>(T * H * D) * sizeof(float);
  for (int threads : {1, 3, 8}) {
    auto backend = make_cpu_backend(threads);
    EXPECT_TRUE(ref::same_bits(run(backend.get()).data(), full.data(), bytes))
        << threads << " threads";
  }

  // One kv head's cache at a time, as a cache with one kv head.
  const size_t elem = dtype_size(c.cache_dtype), row = static_cast<size_t>(D) * elem;
  auto kv_slice = [&](const HostTensor& cache, int64_t g) {
    HostTensor s(c.cache_dtype, {num_blocks, bs, 1, D});
    for (int64_t r = 0; r < num_blocks * bs; ++r) {
      std::memcpy(static_cast<char*>(s.data()) + r * row,
                  static_cast<const char*>(cache.data()) + (r * KV + g) * row, row);
    }
    return s;
  };
  auto one = make_cpu_backend(1);
  const std::vector<int32_t> qs = batch.query_start();
  for (int64_t g = 0; g < KV; ++g) {
    const HostTensor kg = kv_slice(k_cache, g), vg = kv_slice(v_cache, g);
    for (size_t b = 0; b < q_lens.size(); ++b) {
      PagedBatch single;
      single.max_blocks = batch.max_blocks;
      single.tables = {batch.tables[b]};
      single.q_lens = {1};
      const HostTensor table = single.table_tensor();
      const HostTensor start = ref::i32_tensor({0, 1});
      for (int32_t j = 0; j < q_lens[b]; ++j) {
        const int64_t t = qs[b] + j;
        const HostTensor len = ref::i32_tensor({seq_lens[b] - q_lens[b] + j + 1});
        for (int64_t h = g * (H / KV); h < (g + 1) * (H / KV); ++h) {
          HostTensor q1(DType::kF32, {1, 1, D});
          std::memcpy(q1.data(), q.f32() + (t * H + h) * D, D * sizeof(float));
          HostTensor out1 = ref::poisoned(DType::kF32, {1, 1, D});
          ASSERT_TRUE(one->attention({q1.view(), kg.view(), vg.view(), table.view(), len.view(),
                                      start.view(), out1.view(), scale})
                          .ok());
          EXPECT_TRUE(ref::same_bits(out1.data(), full.f32() + (t * H + h) * D, D * sizeof(float)))
              << "token " << t << " head " << h;
        }
      }
    }
  }
}

TEST(AttentionTest, EachQueryGivesTheSameBitsAloneAndOnAnyThreads) {
  // Decodes, a prefill chunk after prior context and one from scratch; GQA groups of 1, 2, 3,
  // 4 and 8 (tiles of 3, 2 and 1 query vectors); head dims with and without an 8-lane tail.
  const std::vector<int32_t> q_lens = {1, 7, 1, 12, 1};
  const std::vector<int32_t> seq_lens = {45, 30, 130, 12, 1};
  expect_same_bits_alone({64, 8, 1, 16, DType::kF32}, q_lens, seq_lens);
  expect_same_bits_alone({12, 8, 2, 7, DType::kF32}, q_lens, seq_lens);
  expect_same_bits_alone({128, 6, 2, 16, DType::kBF16}, q_lens, seq_lens);
  expect_same_bits_alone({3, 4, 4, 1, DType::kF16}, q_lens, seq_lens);
  expect_same_bits_alone({40, 4, 1, 32, DType::kF16, 6.0f}, q_lens, seq_lens);
  expect_same_bits_alone({64, 2, 1, 16, DType::kBF16}, q_lens, seq_lens);
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
