// Helpers shared by the CUDA attention tests (attention_test.cc, attention_prefill_test.cc): a
// ragged batch of random inputs over a paged cache with shuffled block tables (cache slots
// outside every context NaN), the CPU twin's answer, and bf16/f32 tolerance and bit-for-bit
// comparisons.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace pagoda::testing {

struct Seq {
  int32_t seq_len;  // context length after this step
  int32_t q_len;    // new tokens this step
};

// A ragged batch on the host: inputs as float values (already rounded to their dtypes).
struct Batch {
  int64_t T = 0, H = 0, KV = 0, D = 0, block_size = 0, num_blocks = 0, max_blocks = 0;
  std::vector<float> q, k_cache, v_cache;
  std::vector<int32_t> tables, seq_lens, query_start;
};

inline Batch make_batch(const std::vector<Seq>& seqs, int64_t H, int64_t KV, int64_t D, int64_t bs,
                        DType act, DType cache, std::mt19937& rng) {
  Batch b;
  b.H = H, b.KV = KV, b.D = D, b.block_size = bs;
  b.query_start.push_back(0);
  int64_t total_blocks = 0;
  for (const Seq& s : seqs) {
    const int64_t blocks = (s.seq_len + bs - 1) / bs;
    total_blocks += blocks;
    b.max_blocks = std::max(b.max_blocks, blocks + 2);  // spare entries stay -1
    b.seq_lens.push_back(s.seq_len);
    b.query_start.push_back(b.query_start.back() + s.q_len);
  }
  b.T = b.query_start.back();
  b.num_blocks = total_blocks + 5;  // some blocks belong to nobody
  std::vector<int32_t> perm(b.num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  b.tables.assign(seqs.size() * b.max_blocks, -1);
  const int64_t token = KV * D;
  b.k_cache = random_values(b.num_blocks * bs * token, cache, rng);
  b.v_cache = random_values(b.num_blocks * bs * token, cache, rng);
  std::vector<bool> used(b.num_blocks * bs, false);
  int64_t next = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int64_t p = 0; p < seqs[i].seq_len; ++p) {
      if (p % bs == 0) b.tables[i * b.max_blocks + p / bs] = perm[next++];
      used[b.tables[i * b.max_blocks + p / bs] * bs + p % bs] = true;
    }
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t slot = 0; slot < b.num_blocks * bs; ++slot) {
    if (used[slot]) continue;
    std::fill_n(b.k_cache.begin() + slot * token, token, nan);
    std::fill_n(b.v_cache.begin() + slot * token, token, nan);
  }
  b.q = random_values(b.T * H * D, act, rng);
  return b;
}

// The CPU backend's answer (q in f32 holding the activation-dtype values).
inline std::vector<float> cpu_attention(const Batch& b, DType cache, float scale) {
  auto cpu = make_cpu_backend(2);
  std::vector<float> q = b.q;
  std::vector<uint8_t> k = encode(b.k_cache, cache), v = encode(b.v_cache, cache);
  std::vector<int32_t> tables = b.tables, seq_lens = b.seq_lens, qs = b.query_start;
  std::vector<float> out(b.q.size(), std::numeric_limits<float>::quiet_NaN());
  const int64_t B = static_cast<int64_t>(seq_lens.size());
  AttentionArgs a;
  a.q = TensorView(q.data(), DType::kF32, {b.T, b.H, b.D});
  a.k_cache = TensorView(k.data(), cache, {b.num_blocks, b.block_size, b.KV, b.D});
  a.v_cache = TensorView(v.data(), cache, {b.num_blocks, b.block_size, b.KV, b.D});
  a.block_tables = TensorView(tables.data(), DType::kI32, {B, b.max_blocks});
  a.seq_lens = TensorView(seq_lens.data(), DType::kI32, {B});
  a.query_start = TensorView(qs.data(), DType::kI32, {B + 1});
  a.out = TensorView(out.data(), DType::kF32, {b.T, b.H, b.D});
  a.scale = scale;
  const Status s = cpu->attention(a);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return out;
}

inline std::vector<float> as_float(const std::vector<int32_t>& v) {
  return std::vector<float>(v.begin(), v.end());
}

inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, DType act,
                         const std::string& what) {
  // Both sides compute in f32 from the same values (the cache dtype only changes what is
  // stored), so f32 outputs agree near 1e-5 relative to V's O(1) scale; bf16 outputs carry one
  // rounding (2^-9 relative) on top: 1e-2.
  const bool f32 = act == DType::kF32;
  const double rtol = f32 ? 1e-5 : 1e-2;
  const double atol = f32 ? 1e-5 : 1e-2;
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(std::fabs(double{got[i]} - want[i]) <= tol)) {  // NaN (poison, bad read) fails too
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
}

// got and want hold the same bits (NaN included).
inline void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want,
                             const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t g = 0, w = 0;
    std::memcpy(&g, &got[i], sizeof(g));
    std::memcpy(&w, &want[i], sizeof(w));
    if (g != w) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
      return;
    }
  }
}

// Sequence i of b alone: the same cache and table row, its own rows of q.
inline Batch sequence_alone(const Batch& full, size_t i) {
  Batch alone = full;
  const int64_t row0 = full.query_start[i], rows = full.query_start[i + 1] - row0;
  const int64_t width = full.H * full.D;
  alone.T = rows;
  alone.q.assign(full.q.begin() + row0 * width, full.q.begin() + (row0 + rows) * width);
  alone.tables.assign(full.tables.begin() + i * full.max_blocks,
                      full.tables.begin() + (i + 1) * full.max_blocks);
  alone.seq_lens = {full.seq_lens[i]};
  alone.query_start = {0, static_cast<int32_t>(rows)};
  return alone;
}

// Rows [query_start[i], query_start[i + 1]) of a [T, H, D] result.
inline std::vector<float> rows_of(const Batch& b, const std::vector<float>& out, size_t i) {
  const int64_t width = b.H * b.D;
  return std::vector<float>(out.begin() + b.query_start[i] * width,
                            out.begin() + b.query_start[i + 1] * width);
}

}  // namespace pagoda::testing
