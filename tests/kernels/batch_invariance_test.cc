// Batch invariance (DESIGN.md §3): a row's matmul and attention results are bit-identical
// (memcmp) whether computed alone or inside a larger batch, with 1 or 2 threads, and — for
// attention — whether a token is computed inside a prefill chunk or as a decode.
#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;
using ref::PagedBatch;

TEST(BatchInvarianceTest, MatmulRowsDoNotDependOnBatchOrThreads) {
  auto one = make_cpu_backend(1);
  auto two = make_cpu_backend(2);
  for (DType wdtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t K : {13, 1000}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(wdtype) << " K=" << K);
      std::mt19937 rng(static_cast<uint32_t>(K));
      const int64_t T = 17, N = 301;
      HostTensor x = ref::random_tensor(rng, DType::kF32, {T, K});
      HostTensor w = ref::random_tensor(rng, wdtype, {N, K});
      HostTensor bias = ref::random_tensor(rng, wdtype, {N});
      HostTensor full = ref::poisoned(DType::kF32, {T, N});
      ASSERT_TRUE(two->matmul({x.view(), w.view(), bias.view(), full.view()}).ok());
      const size_t row_bytes = N * sizeof(float);
      // Every row alone (T = 1: the decode path), on 1 and 2 threads.
      for (int64_t t = 0; t < T; ++t) {
        for (Backend* backend : {one.get(), two.get()}) {
          HostTensor out = ref::poisoned(DType::kF32, {1, N});
          TensorView row(x.f32() + t * K, DType::kF32, {1, K});
          ASSERT_TRUE(backend->matmul({row, w.view(), bias.view(), out.view()}).ok());
          EXPECT_TRUE(ref::same_bits(out.data(), full.f32() + t * N, row_bytes)) << "row " << t;
        }
      }
      // Sub-batches starting at odd offsets (rows land at other places in the 4-row tiles).
      for (auto [start, len] : {std::pair{1, 5}, std::pair{3, 2}, std::pair{6, 11}}) {
        HostTensor out = ref::poisoned(DType::kF32, {len, N});
        TensorView rows(x.f32() + start * K, DType::kF32, {len, K});
        ASSERT_TRUE(one->matmul({rows, w.view(), bias.view(), out.view()}).ok());
        EXPECT_TRUE(ref::same_bits(out.data(), full.f32() + start * N, len * row_bytes))
            << "rows " << start << ".." << start + len;
      }
    }
  }
}

struct AttentionRun {
  HostTensor out;
  Status status;
};

// Runs attention for the sequences `pick` of `batch` (with their own q rows) on `backend`.
AttentionRun run_subset(Backend* backend, const PagedBatch& batch, const std::vector<int>& pick,
                        const HostTensor& q, const HostTensor& k_cache, const HostTensor& v_cache,
                        int64_t H, int64_t D, std::vector<int32_t> q_lens_override = {}) {
  PagedBatch sub;
  sub.max_blocks = batch.max_blocks;
  const std::vector<int32_t> qs = batch.query_start();
  std::vector<float> q_rows;
  for (size_t i = 0; i < pick.size(); ++i) {
    const int b = pick[i];
    const int32_t q_len = q_lens_override.empty() ? batch.q_lens[b] : q_lens_override[i];
    const int32_t skip = batch.q_lens[b] - q_len;  // keep the last q_len rows
    sub.q_lens.push_back(q_len);
    sub.seq_lens.push_back(batch.seq_lens[b]);
    sub.tables.push_back(batch.tables[b]);
    q_rows.insert(q_rows.end(), q.f32() + (qs[b] + skip) * H * D, q.f32() + qs[b + 1] * H * D);
  }
  const int64_t T = sub.T();
  HostTensor sub_q(DType::kF32, {T, H, D});
  std::copy(q_rows.begin(), q_rows.end(), sub_q.f32());
  HostTensor tables = sub.table_tensor();
  HostTensor seq_lens = ref::i32_tensor(sub.seq_lens);
  HostTensor query_start = ref::i32_tensor(sub.query_start());
  AttentionRun run{ref::poisoned(DType::kF32, {T, H, D}), OkStatus()};
  run.status = backend->attention({sub_q.view(), k_cache.view(), v_cache.view(), tables.view(),
                                   seq_lens.view(), query_start.view(), run.out.view(), 0.125f});
  return run;
}

TEST(BatchInvarianceTest, AttentionRowsDoNotDependOnBatchOrThreads) {
  auto one = make_cpu_backend(1);
  auto two = make_cpu_backend(2);
  const int64_t H = 8, KV = 2, D = 64, bs = 16;
  std::mt19937 rng(21);
  int64_t num_blocks = 0;
  const PagedBatch batch =
      ref::make_paged_batch(rng, {1, 12, 1, 30, 1}, {50, 40, 17, 30, 90}, bs, 2, &num_blocks);
  HostTensor q = ref::random_tensor(rng, DType::kF32, {batch.T(), H, D});
  HostTensor k_cache = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, KV, D});
  HostTensor v_cache = ref::random_tensor(rng, DType::kF32, {num_blocks, bs, KV, D});
  const std::vector<int> all = {0, 1, 2, 3, 4};
  const AttentionRun full = run_subset(two.get(), batch, all, q, k_cache, v_cache, H, D);
  ASSERT_TRUE(full.status.ok()) << full.status.to_string();
  const std::vector<int32_t> qs = batch.query_start();
  const size_t token_bytes = H * D * sizeof(float);
  for (int b : all) {
    for (Backend* backend : {one.get(), two.get()}) {
      const AttentionRun alone = run_subset(backend, batch, {b}, q, k_cache, v_cache, H, D);
      ASSERT_TRUE(alone.status.ok());
      EXPECT_TRUE(ref::same_bits(alone.out.data(), full.out.f32() + qs[b] * H * D,
                                 batch.q_lens[b] * token_bytes))
          << "sequence " << b;
    }
    // The last token of each sequence as a decode (q_len 1 over the same context).
    const AttentionRun decode = run_subset(one.get(), batch, {b}, q, k_cache, v_cache, H, D, {1});
    ASSERT_TRUE(decode.status.ok());
    EXPECT_TRUE(
        ref::same_bits(decode.out.data(), full.out.f32() + (qs[b + 1] - 1) * H * D, token_bytes))
        << "sequence " << b << " as a decode";
  }
  // A different mix: sequences 3 and 1 reordered, on 1 thread.
  const AttentionRun mix = run_subset(one.get(), batch, {3, 1}, q, k_cache, v_cache, H, D);
  ASSERT_TRUE(mix.status.ok());
  EXPECT_TRUE(ref::same_bits(mix.out.data(), full.out.f32() + qs[3] * H * D,
                             batch.q_lens[3] * token_bytes));
  EXPECT_TRUE(ref::same_bits(mix.out.f32() + batch.q_lens[3] * H * D,
                             full.out.f32() + qs[1] * H * D, batch.q_lens[1] * token_bytes));
}

}  // namespace
}  // namespace pagoda
