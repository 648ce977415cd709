// Paged causal attention over a ragged batch (decodes and prefill chunks mixed in one call).
//   q            [T, n_heads, head_dim] f32
//   k_cache      [num_blocks, block_size, n_kv_heads, head_dim] f32 / f16 / bf16
//   v_cache      same shape and dtype as k_cache
//   block_tables [B, max_blocks_per_seq] i32
//   seq_lens     [B] i32, query_start [B + 1] i32 (prefix sums of q_len, query_start[B] == T)
//   out          [T, n_heads, head_dim] f32 (may alias q exactly)
// For the query row t of sequence b (the j-th of its q_len rows) and query head h:
//   pos = seq_lens[b] - q_len + j,   g = h / (n_heads / n_kv_heads)
//   K_p = k_cache[block_tables[b][p / block_size], p % block_size, g, :] for p in [0, pos]
//   s_p = dot(q[t, h], K_p) * scale         dot: simd.h's fixed-order 8-lane FMA dot
//   m   = max_p s_p;  e_p = exp8(s_p - m);  sum = 8-lane sum of e_p in increasing p, hsum8
//   out[t, h, d] = (sum_p e_p V_p[d], FMA in increasing p) * (1 / sum)
// (scores are computed four keys at a time and V in 32-dim slices kept in registers; neither
// changes any single value's sequence of operations).
// All f32. Each (t, h) reads only its own query and its sequence's context, in a fixed order,
// so its output is bit-identical whatever else is in the batch and however work is split.
// Work split: (t, h) pairs in order, cut into one contiguous range per thread with about equal
// total context length.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/simd.h"

namespace pagoda::cpu {
namespace {

struct AttentionProblem {
  const float* q;         // [T, H, D]
  const char* k_cache;    // [num_blocks, block_size, KV, D]
  const char* v_cache;    // [num_blocks, block_size, KV, D]
  const int32_t* tables;  // [B, max_blocks]
  int64_t max_blocks;
  std::vector<int32_t> seq_of_token;  // [T]
  std::vector<int32_t> pos_of_token;  // [T]: the position of the query row
  float* out;                         // [T, H, D]
  int64_t T, H, KV, D, block_size;
  float scale;
};

// v with lanes >= n (0 < n < 8) set to zero.
inline __m256 zero_lanes_from(__m256 v, int n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
  return _mm256_and_ps(v, _mm256_castsi256_ps(keep));
}

// scores[0 .. n) = exp8(scores - m) in place; returns their sum (8-lane, increasing p, hsum8).
float softmax_numerators(float* scores, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 e = exp8(_mm256_sub_ps(load8(scores + i), vm));
    store8(scores + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    const int r = static_cast<int>(n - i);
    const __m256 e = zero_lanes_from(exp8(_mm256_sub_ps(load_partial8(scores + i, r), vm)), r);
    store_partial8(scores + i, e, r);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum8(sum);
}

// scores[o] = dot(q, K_o) * scale for the n keys K_o at k + o * stride; returns max(m, scores).
// Four keys at a time (independent FMA chains), each with exactly dot()'s sequence.
template <DType CD>
float block_scores(const float* q,  // [D]
                   const char* k, size_t stride, int64_t n, int64_t D, float scale, float* scores,
                   float m) {
  constexpr int kKeys = 4;
  int64_t o = 0;
  for (; o + kKeys <= n; o += kKeys) {
    __m256 acc[kKeys];
    for (int j = 0; j < kKeys; ++j) acc[j] = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + kLanes <= D; d += kLanes) {
      const __m256 qv = load8(q + d);
      for (int j = 0; j < kKeys; ++j) {
        acc[j] = _mm256_fmadd_ps(qv, load8<CD>(k + (o + j) * stride, d), acc[j]);
      }
    }
    if (d < D) {
      const int r = static_cast<int>(D - d);
      const __m256 qv = load_partial8(q + d, r);
      for (int j = 0; j < kKeys; ++j) {
        acc[j] = _mm256_fmadd_ps(qv, load_partial8<CD>(k + (o + j) * stride, d, r), acc[j]);
      }
    }
    for (int j = 0; j < kKeys; ++j) {
      scores[o + j] = hsum8(acc[j]) * scale;
      m = std::max(m, scores[o + j]);
    }
  }
  for (; o < n; ++o) {
    scores[o] = dot<CD>(q, k + o * stride, D) * scale;
    m = std::max(m, scores[o]);
  }
  return m;
}

// Where one (t, h) reads its context: position p is at k_cache/v_cache + offset(p).
struct ContextView {
  const int32_t* table;  // [max_blocks]
  int64_t ctx, block_size;
  size_t token_bytes, head_offset;
  size_t block_offset(int64_t start) const {
    return static_cast<size_t>(table[start / block_size]) * block_size * token_bytes + head_offset;
  }
};

// out[d0 .. d0 + 8 NV) = (sum_p e_p V_p[...], FMA in increasing p) * inv_sum; the last of the NV
// vectors holds `last` (1..8) lanes. The NV accumulators stay in registers across p.
template <DType CD, int NV>
void weighted_values(const char* v_cache, const ContextView& c, const float* e, int64_t d0,
                     int last, float inv_sum, float* out) {
  __m256 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t start = 0; start < c.ctx; start += c.block_size) {
    const char* base = v_cache + c.block_offset(start);
    const int64_t n = std::min(c.block_size, c.ctx - start);
    for (int64_t o = 0; o < n; ++o) {
      const __m256 w = _mm256_set1_ps(e[start + o]);
      const char* v = base + o * c.token_bytes;
      for (int j = 0; j < NV; ++j) {
        const int64_t d = d0 + j * kLanes;
        const __m256 vv =
            (j == NV - 1 && last < kLanes) ? load_partial8<CD>(v, d, last) : load8<CD>(v, d);
        acc[j] = _mm256_fmadd_ps(w, vv, acc[j]);
      }
    }
  }
  const __m256 scale = _mm256_set1_ps(inv_sum);
  for (int j = 0; j < NV; ++j) {
    const __m256 r = _mm256_mul_ps(acc[j], scale);
    if (j == NV - 1 && last < kLanes) {
      store_partial8(out + d0 + j * kLanes, r, last);
    } else {
      store8(out + d0 + j * kLanes, r);
    }
  }
}

// out[t, h, :] for one (t, h). scratch: scores [pos + 1], qbuf [D].
template <DType CD>
void attend_one(const AttentionProblem& p, int64_t t, int64_t h, float* scores, float* qbuf) {
  const int64_t D = p.D;
  const size_t elem = storage_size_of<CD>();
  const ContextView c{p.tables + p.seq_of_token[t] * p.max_blocks,
                      static_cast<int64_t>(p.pos_of_token[t]) + 1, p.block_size,
                      static_cast<size_t>(p.KV * D) * elem,
                      static_cast<size_t>(h / (p.H / p.KV) * D) * elem};
  std::copy_n(p.q + (t * p.H + h) * D, D, qbuf);  // out may alias q

  float m = -std::numeric_limits<float>::infinity();
  for (int64_t start = 0; start < c.ctx; start += c.block_size) {
    m = block_scores<CD>(qbuf, p.k_cache + c.block_offset(start), c.token_bytes,
                         std::min(c.block_size, c.ctx - start), D, p.scale, scores + start, m);
  }
  const float inv_sum = 1.0f / softmax_numerators(scores, c.ctx, m);

  constexpr int kMaxVectors = 4;  // 32 dims per pass over the context
  float* out = p.out + (t * p.H + h) * D;
  for (int64_t d0 = 0; d0 < D; d0 += kMaxVectors * kLanes) {
    const int64_t rest = std::min<int64_t>(D - d0, kMaxVectors * kLanes);
    const int nv = static_cast<int>((rest + kLanes - 1) / kLanes);
    const int last = static_cast<int>(rest - (nv - 1) * kLanes);
    switch (nv) {
      case 1: weighted_values<CD, 1>(p.v_cache, c, scores, d0, last, inv_sum, out); break;
      case 2: weighted_values<CD, 2>(p.v_cache, c, scores, d0, last, inv_sum, out); break;
      case 3: weighted_values<CD, 3>(p.v_cache, c, scores, d0, last, inv_sum, out); break;
      default: weighted_values<CD, 4>(p.v_cache, c, scores, d0, last, inv_sum, out); break;
    }
  }
}

template <DType CD>
void attention_pairs(ThreadPool& pool, const AttentionProblem& p) {
  // Balance by context length: pair i = (t, h) costs pos_of_token[t] + 1.
  std::vector<int64_t> cum(p.T + 1, 0);  // cum[t] = sum of ctx over tokens < t
  int64_t max_ctx = 0;
  for (int64_t t = 0; t < p.T; ++t) {
    const int64_t ctx = static_cast<int64_t>(p.pos_of_token[t]) + 1;
    cum[t + 1] = cum[t] + ctx;
    max_ctx = std::max(max_ctx, ctx);
  }
  const int64_t pairs = p.T * p.H;
  const int64_t total = cum[p.T] * p.H;  // work before pair i: cum[t] * H + h * ctx_t
  auto work_before = [&](int64_t i) {
    const int64_t t = i / p.H, h = i % p.H;
    return t == p.T ? total : cum[t] * p.H + h * (cum[t + 1] - cum[t]);
  };
  const int64_t chunks =
      total * p.D < (int64_t{1} << 15) ? 1 : std::min<int64_t>(pool.num_threads(), pairs);
  auto first_pair_at = [&](int64_t c) {  // first i with work_before(i) >= total * c / chunks
    const int64_t target = total / chunks * c + total % chunks * c / chunks;
    int64_t lo = 0, hi = pairs;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (work_before(mid) >= target)
        hi = mid;
      else
        lo = mid + 1;
    }
    return lo;
  };
  pool.parallel_for(chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    std::vector<float> scores(max_ctx), qbuf(p.D);
    const int64_t end = c_end == chunks ? pairs : first_pair_at(c_end);
    for (int64_t i = first_pair_at(c_begin); i < end; ++i) {
      attend_one<CD>(p, i / p.H, i % p.H, scores.data(), qbuf.data());
    }
  });
}

}  // namespace

Status attention(ThreadPool& pool, const AttentionArgs& a) {
  constexpr const char* kOp = "attention";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "q", a.q, 3, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "k_cache", a.k_cache, 4, kFloatDTypes));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "v_cache", a.v_cache, 4, kFloatDTypes));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "block_tables", a.block_tables, 2, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "seq_lens", a.seq_lens, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "query_start", a.query_start, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 3, {DType::kF32}));
  const int64_t T = a.q.shape[0], H = a.q.shape[1], D = a.q.shape[2];
  const int64_t num_blocks = a.k_cache.shape[0], block_size = a.k_cache.shape[1];
  const int64_t KV = a.k_cache.shape[2];
  const int64_t B = a.seq_lens.shape[0], max_blocks = a.block_tables.shape[1];
  if (D == 0) return arg_error(kOp, "q", "must have head_dim > 0, got ", a.q.describe());
  if (block_size == 0) {
    return arg_error(kOp, "k_cache", "must have block_size > 0, got ", a.k_cache.describe());
  }
  if (KV == 0 || H % KV != 0) {
    return arg_error(kOp, "k_cache", "n_kv_heads must divide n_heads = ", H, ", got ",
                     a.k_cache.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "k_cache", a.k_cache, 3, D, "head_dim (q dim 2)"));
  for (int i = 0; i < 4; ++i) {
    PAGODA_RETURN_IF_ERROR(
        check_dim(kOp, "v_cache", a.v_cache, i, a.k_cache.shape[i], "the k_cache dim"));
  }
  if (a.v_cache.dtype != a.k_cache.dtype) {
    return arg_error(kOp, "v_cache", "must have the dtype of k_cache, got ", a.v_cache.describe(),
                     " vs ", a.k_cache.describe());
  }
  PAGODA_RETURN_IF_ERROR(
      check_dim(kOp, "block_tables", a.block_tables, 0, B, "B (seq_lens dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "query_start", a.query_start, 0, B + 1, "B + 1"));
  for (int i = 0; i < 3; ++i) {
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, i, a.q.shape[i], "the q dim"));
  }
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint(kOp, "out", a.out, "q", a.q));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "k_cache", a.k_cache));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "v_cache", a.v_cache));
  if (!std::isfinite(a.scale)) return arg_error(kOp, "scale", "must be finite");

  const int32_t* qs = a.query_start.as<const int32_t>();
  const int32_t* seq_lens = a.seq_lens.as<const int32_t>();
  const int32_t* tables = a.block_tables.as<const int32_t>();
  auto at = [](int64_t i) { return cat("[", i, "]"); };
  if (qs[0] != 0) return arg_error(kOp, "query_start", "[0] must be 0, got ", qs[0]);
  if (qs[B] != T) {
    return arg_error(kOp, "query_start", at(B), " must be T = ", T, ", got ", qs[B]);
  }
  AttentionProblem p{a.q.as<const float>(),
                     static_cast<const char*>(a.k_cache.data),
                     static_cast<const char*>(a.v_cache.data),
                     tables,
                     max_blocks,
                     std::vector<int32_t>(T),
                     std::vector<int32_t>(T),
                     a.out.as<float>(),
                     T,
                     H,
                     KV,
                     D,
                     block_size,
                     a.scale};
  for (int64_t b = 0; b < B; ++b) {
    if (qs[b + 1] < qs[b]) {
      return arg_error(kOp, "query_start", "must be non-decreasing, but ", at(b + 1), " = ",
                       qs[b + 1], " < ", at(b), " = ", qs[b]);
    }
  }
  for (int64_t b = 0; b < B; ++b) {  // query_start is now known to run from 0 to T
    const int64_t q_len = qs[b + 1] - qs[b];
    if (q_len == 0) continue;  // nothing of this sequence is read
    const int64_t len = seq_lens[b];
    if (len < q_len) {
      return arg_error(kOp, "seq_lens", at(b), " = ", len, " is less than the sequence's q_len ",
                       q_len);
    }
    const int64_t blocks = (len + block_size - 1) / block_size;
    if (blocks > max_blocks) {
      return arg_error(kOp, "seq_lens", at(b), " = ", len, " needs ", blocks,
                       " blocks, block_tables has ", max_blocks, " per sequence");
    }
    for (int64_t i = 0; i < blocks; ++i) {
      const int32_t blk = tables[b * max_blocks + i];
      if (blk < 0 || blk >= num_blocks) {
        return arg_error(kOp, "block_tables", at(b), at(i), " = ", blk,
                         " is outside [0, num_blocks = ", num_blocks, ")");
      }
    }
    for (int64_t j = 0; j < q_len; ++j) {
      p.seq_of_token[qs[b] + j] = static_cast<int32_t>(b);
      p.pos_of_token[qs[b] + j] = static_cast<int32_t>(len - q_len + j);
    }
  }
  if (T == 0 || H == 0) return OkStatus();
  dispatch_float(a.k_cache.dtype, [&](auto d) { attention_pairs<d()>(pool, p); });
  return OkStatus();
}

}  // namespace pagoda::cpu
