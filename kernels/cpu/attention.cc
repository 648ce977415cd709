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
// All f32. Each (t, h) reads only its own query and its sequence's context, in a fixed order,
// so its output is bit-identical whatever else is in the batch and however work is split.
//
// How it is computed. Decode attention is bound by reading K and V, so the unit of work is
// (sequence b, kv head g, the query heads of g, a tile of b's query rows): all query vectors
// (row, head) of a unit share each K/V row it reads, so a decode reads its K and V once for
// the whole GQA group instead of once per query head. Within a unit:
// - pass 1 walks the context in chunks of kChunk keys; a chunk's K rows (read in place from an
//   f32 cache, widened into a zero-padded scratch for f16/bf16 or head_dim % 8 != 0) stay in
//   L1 while every query vector of the unit scores them, 3 query vectors x 4 keys per register
//   tile (attention_tiles.h);
// - the softmax numerators per query vector, as in the formula above;
// - pass 2 walks the chunks again for V; each query vector's [head_dim] accumulator lives in a
//   scratch between chunks and in registers (3 vectors x 32 dims) within one;
// - K then V rows are prefetched kPrefetch positions ahead, one row between register tiles.
// None of this changes any single value's sequence of operations (a tile's horizontal sums are
// hsum8's tree lane by lane; the zero padding is the zero padding of dot()'s tail), so every
// value is the formula's bits whatever the tiling, the unit and the thread; the tests compare
// the bits with the one-(t, h)-at-a-time kernel this replaced.
// Work split: units in order (b, g, head group, row tile), cut into one contiguous range per
// thread with about equal total work. A GQA group is split into head groups only when there
// are fewer units than threads (a small decode batch on many threads).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/simd.h"

namespace pagoda::cpu {
namespace {

constexpr int64_t kChunk = 32;             // keys per chunk: its K (or V) rows stay in L1
constexpr int64_t kPrefetch = 48;          // rows requested ahead of the computation
constexpr int64_t kUnitQueryVectors = 32;  // a prefill unit takes rows up to this many (row, head)
constexpr int64_t kUnitScoreFloats = int64_t{1} << 20;  // and keeps its scores under 4 MiB

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

// Query rows [t0, t0 + rows) of one sequence (consecutive positions) x query heads
// [h0, h0 + heads), all reading kv head h0 / (H / KV). Query vector i is (t0 + i / heads,
// h0 + i % heads), so its context length never decreases with i.
struct Unit {
  int64_t t0, rows, h0, heads;
};

int64_t round_up8(int64_t n) {
  return (n + kLanes - 1) / kLanes * kLanes;
}

// v with lanes >= n (0 < n < 8) set to zero.
inline __m256 zero_lanes_from(__m256 v, int n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
  return _mm256_and_ps(v, _mm256_castsi256_ps(keep));
}

// max(s[0 .. n)) ignoring NaN, as the sequential std::max(m, s_p) from -inf does; the max of
// the non-NaN values is the same in any order (a +-0 tie can only flip the sign of a zero m,
// which changes no s_p - m and so no e_p).
float row_max(const float* s, int64_t n) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 m = ninf;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) m = _mm256_max_ps(load8(s + i), m);  // NaN: keeps m
  if (i < n) {
    const int r = static_cast<int>(n - i);
    const __m256 tail = load_partial8(s + i, r);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(r), lane));
    m = _mm256_max_ps(_mm256_blendv_ps(ninf, tail, keep), m);
  }
  return hmax8(m);
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

// Where a unit reads its context: kv head g's rows of K, then of V, position by position.
struct ContextView {
  const int32_t* table;       // [max_blocks]
  int64_t block_size, D, Dp;  // Dp: D rounded up to 8 lanes
  size_t token_bytes, head_offset, row_bytes;
  bool direct;  // f32 cache and D % 8 == 0: kernels read the cache rows themselves
};

// Positions 0 .. ctx-1 of K, then of V, in order (no division per row).
struct RowWalk {
  const ContextView* c;
  const char* cache[2];  // K, V
  int64_t ctx;
  int phase = 0;  // 0: K, 1: V, 2: done
  int64_t p = 0, blk = 0, off = 0;
  const char* row() const {
    return cache[phase] +
           (static_cast<size_t>(c->table[blk]) * c->block_size + off) * c->token_bytes +
           c->head_offset;
  }
  void next() {
    if (++off == c->block_size) off = 0, ++blk;
    if (++p == ctx) p = 0, blk = 0, off = 0, ++phase;
  }
};

// Requests every cache line of [row, row + bytes).
inline void prefetch_row(const char* row, size_t bytes) {
  const uintptr_t last = reinterpret_cast<uintptr_t>(row) + bytes - 1;
  for (uintptr_t a = reinterpret_cast<uintptr_t>(row) & ~uintptr_t{63}; a <= last; a += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(a), _MM_HINT_T0);
  }
}

// Prefetches the rows of a RowWalk running kPrefetch positions ahead of the computation, one
// row per tick(): the ticks come between register tiles, so that requests leave at the pace
// memory can take them (a burst of a whole chunk's rows would fill the line fill buffers and
// stall the core with no compute to overlap) while the tiles keep the FMA ports busy.
struct Prefetcher {
  RowWalk ahead;
  int64_t owed = 0;  // rows the computation has consumed and not yet replaced
  void tick() {
    if (owed <= 0 || ahead.phase == 2) return;
    --owed;
    prefetch_row(ahead.row(), ahead.c->row_bytes);
    ahead.next();
  }
  void flush() {
    while (owed > 0 && ahead.phase < 2) tick();
    owed = 0;
  }
};

// rows[i] (i < n) = the f32 rows of the next n positions of `walk`, D values then zeros up to
// Dp: the cache row itself when c.direct, else widened into scratch[i * Dp ..] (exact: f16/bf16
// -> f32 loses nothing, and the zero tail is what dot()'s zero-padded tail load reads).
// rows[n .. n_pad) repeat the last row, so that tiles may run past n.
template <DType CD>
void next_rows(RowWalk& walk, int64_t n, int64_t n_pad, float* scratch, const float** rows) {
  const ContextView& c = *walk.c;
  for (int64_t i = 0; i < n; ++i) {
    const char* src = walk.row();
    walk.next();
    if (c.direct) {
      rows[i] = reinterpret_cast<const float*>(src);
      continue;
    }
    float* dst = scratch + i * c.Dp;
    int64_t d = 0;
    for (; d + kLanes <= c.D; d += kLanes) store8(dst + d, load8<CD>(src, d));
    if (d < c.D) store8(dst + d, load_partial8<CD>(src, d, static_cast<int>(c.D - d)));
    rows[i] = dst;
  }
  for (int64_t i = n; i < n_pad; ++i) rows[i] = rows[n - 1];
}

// value_tile over all Dp dims, 32 at a time.
template <int NQ>
void value_range(float* const* acc, const float* const* e, const float* const* v, int64_t k0,
                 int64_t k1, int64_t Dp, Prefetcher& pf) {
  if (k0 >= k1) return;
  constexpr int64_t kMaxVectors = 4;
  for (int64_t d0 = 0; d0 < Dp; d0 += kMaxVectors * kLanes) {
    switch (std::min<int64_t>((Dp - d0) / kLanes, kMaxVectors)) {
      case 1: value_tile<NQ, 1>(acc, e, v, k0, k1, d0); break;
      case 2: value_tile<NQ, 2>(acc, e, v, k0, k1, d0); break;
      case 3: value_tile<NQ, 3>(acc, e, v, k0, k1, d0); break;
      default: value_tile<NQ, 4>(acc, e, v, k0, k1, d0); break;
    }
    pf.tick();
  }
}

// Query vectors per register tile, for the `left` (>= 1) vectors still to tile: threes (12
// accumulators), a four or a two as two pairs, a single one alone.
inline int64_t group_size(int64_t left) {
  return left == 4 || left == 2 ? 2 : left == 1 ? 1 : 3;
}

// Per-thread scratch, grown as needed and kept across calls (no allocation per row or call).
float* scratch_floats(size_t n) {
  thread_local std::vector<float> arena;
  if (arena.size() < n) arena.resize(n);
  return arena.data();
}

// out[t, h, :] for every query vector (t, h) of the unit u.
template <DType CD>
void attend_unit(const AttentionProblem& p, const Unit& u) {
  const int64_t D = p.D, Dp = round_up8(D), nq = u.rows * u.heads;
  const int64_t ctx_max = static_cast<int64_t>(p.pos_of_token[u.t0 + u.rows - 1]) + 1;
  // Score rows 64 bytes longer than needed: at contexts of a multiple of 1024 keys the rows
  // would sit a multiple of 4 KiB apart, and a tile's stores to one row would look like they
  // alias the loads of the next (4K aliasing stalls).
  const int64_t stride = round_up8(ctx_max) + 16;
  const size_t elem = storage_size_of<CD>();
  const ContextView c{p.tables + p.seq_of_token[u.t0] * p.max_blocks,
                      p.block_size,
                      D,
                      Dp,
                      static_cast<size_t>(p.KV * D) * elem,
                      static_cast<size_t>(u.h0 / (p.H / p.KV) * D) * elem,
                      static_cast<size_t>(D) * elem,
                      CD == DType::kF32 && D % kLanes == 0};
  // Scratch: q and acc [nq][Dp], scores [nq][stride], rows [kChunk][Dp], inv_sum [nq].
  float* q = scratch_floats(static_cast<size_t>(2 * nq * Dp + nq * stride + kChunk * Dp + nq));
  float* acc = q + nq * Dp;
  float* scores = acc + nq * Dp;
  float* rows_scratch = scores + nq * stride;
  float* inv_sum = rows_scratch + kChunk * Dp;
  auto ctx_of = [&](int64_t i) {
    return static_cast<int64_t>(p.pos_of_token[u.t0 + i / u.heads]) + 1;
  };
  for (int64_t i = 0; i < nq; ++i) {  // copied first: out may alias q
    const float* src = p.q + ((u.t0 + i / u.heads) * p.H + u.h0 + i % u.heads) * D;
    std::copy_n(src, D, q + i * Dp);
    std::fill(q + i * Dp + D, q + (i + 1) * Dp, 0.0f);
  }
  const float* rows[kChunk + kLanes];
  RowWalk walk{&c, {p.k_cache, p.v_cache}, ctx_max};
  Prefetcher pf{walk, kPrefetch};
  pf.flush();

  // Pass 1: scores, 3 (or 2) query vectors x 4 keys per tile, 1 x 8 for a single one. Scores of
  // keys past a vector's own context (a tile's padding, or the earlier rows of a prefill group
  // spanning rows) land in its row's unused tail and are never read.
  const __m256 scale = _mm256_set1_ps(p.scale);
  for (int64_t c0 = 0; c0 < ctx_max; c0 += kChunk) {
    const int64_t n = std::min(kChunk, ctx_max - c0);
    next_rows<CD>(walk, n, round_up8(n), rows_scratch, rows);
    pf.owed += n;
    for (int64_t i = 0, g; i < nq; i += g) {
      g = group_size(nq - i);
      const int64_t need = std::min(n, ctx_of(i + g - 1) - c0);  // keys the group uses
      if (need <= 0) continue;  // (prefill rows whose context ends before c0)
      const float* qi[3] = {q + i * Dp, q + (i + 1) * Dp, q + (i + 2) * Dp};
      float* si[3] = {scores + i * stride + c0, scores + (i + 1) * stride + c0,
                      scores + (i + 2) * stride + c0};
      const int64_t step = g == 1 ? 8 : 4;
      for (int64_t k = 0; k < need; k += step) {
        switch (g) {
          case 3: score_tile<3>(qi, rows + k, Dp, scale, si); break;
          case 2: score_tile<2>(qi, rows + k, Dp, scale, si); break;
          default: score_tile<1>(qi, rows + k, Dp, scale, si); break;
        }
        for (int64_t j = 0; j < g; ++j) si[j] += step;
        pf.tick();
      }
    }
    pf.flush();
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* s = scores + i * stride;
    const int64_t ctx = ctx_of(i);
    inv_sum[i] = 1.0f / softmax_numerators(s, ctx, row_max(s, ctx));
  }

  // Pass 2: acc[i] = sum_p e_p V_p in increasing p. Keys every vector of a group reads go
  // through the group tile; the later vectors' extra keys (a prefill group spanning rows)
  // follow one vector at a time, so each accumulator still sees increasing p.
  std::fill(acc, acc + nq * Dp, 0.0f);
  for (int64_t c0 = 0; c0 < ctx_max; c0 += kChunk) {
    const int64_t n = std::min(kChunk, ctx_max - c0);
    next_rows<CD>(walk, n, n, rows_scratch, rows);
    pf.owed += n;
    for (int64_t i = 0, g; i < nq; i += g) {
      g = group_size(nq - i);
      float* ai[3] = {acc + i * Dp, acc + (i + 1) * Dp, acc + (i + 2) * Dp};
      const float* ei[3] = {scores + i * stride + c0, scores + (i + 1) * stride + c0,
                            scores + (i + 2) * stride + c0};
      const int64_t lim = std::clamp<int64_t>(ctx_of(i) - c0, 0, n);  // the group's least
      switch (g) {
        case 3: value_range<3>(ai, ei, rows, 0, lim, Dp, pf); break;
        case 2: value_range<2>(ai, ei, rows, 0, lim, Dp, pf); break;
        default: value_range<1>(ai, ei, rows, 0, lim, Dp, pf); break;
      }
      for (int64_t j = 1; j < g; ++j) {
        const int64_t end = std::clamp<int64_t>(ctx_of(i + j) - c0, 0, n);
        value_range<1>(ai + j, ei + j, rows, lim, end, Dp, pf);
      }
    }
    pf.flush();
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* out = p.out + ((u.t0 + i / u.heads) * p.H + u.h0 + i % u.heads) * D;
    const __m256 s = _mm256_set1_ps(inv_sum[i]);
    int64_t d = 0;
    for (; d + kLanes <= D; d += kLanes) store8(out + d, _mm256_mul_ps(load8(acc + i * Dp + d), s));
    if (d < D) {
      store_partial8(out + d, _mm256_mul_ps(load8(acc + i * Dp + d), s), static_cast<int>(D - d));
    }
  }
}

// The units of the batch in order (b, g, head group, row tile) and the work before each.
struct UnitPlan {
  std::vector<Unit> units;
  std::vector<int64_t> cum;  // cum[i] = work of the units before i; cum[units] = total
};

UnitPlan plan_units(const AttentionProblem& p, const int32_t* qs, int64_t B, int threads) {
  const int64_t G = p.H / p.KV;
  auto rows_per_tile = [&](int64_t heads, int64_t len) {
    const int64_t by_vectors = std::max<int64_t>(1, kUnitQueryVectors / heads);
    const int64_t by_scores = std::max<int64_t>(1, kUnitScoreFloats / (heads * round_up8(len)));
    return std::min(by_vectors, by_scores);
  };
  int64_t tiles = 0;  // row tiles over the batch with whole GQA groups
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q_len = qs[b + 1] - qs[b];
    if (q_len == 0) continue;
    const int64_t r = rows_per_tile(G, p.pos_of_token[qs[b + 1] - 1] + 1);
    tiles += (q_len + r - 1) / r;
  }
  // Fewer units than threads (a small decode batch): split each GQA group into S head groups
  // (K/V then read S times, mostly from L2) rather than leave threads idle.
  int64_t S = 1;
  while (S < G && tiles * p.KV * S < threads) {
    ++S;
    while (G % S != 0) ++S;
  }
  const int64_t heads = G / S;
  UnitPlan plan;
  plan.cum.push_back(0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t q_len = qs[b + 1] - qs[b];
    if (q_len == 0) continue;
    const int64_t r = rows_per_tile(heads, p.pos_of_token[qs[b + 1] - 1] + 1);
    for (int64_t h0 = 0; h0 < p.H; h0 += heads) {
      for (int64_t j = 0; j < q_len; j += r) {
        const Unit u{qs[b] + j, std::min(r, q_len - j), h0, heads};
        int64_t ctx_sum = 0;
        for (int64_t i = 0; i < u.rows; ++i) ctx_sum += p.pos_of_token[u.t0 + i] + 1;
        plan.units.push_back(u);
        plan.cum.push_back(plan.cum.back() + ctx_sum * heads);
      }
    }
  }
  return plan;
}

template <DType CD>
void attention_units(ThreadPool& pool, const AttentionProblem& p, const int32_t* qs, int64_t B) {
  const UnitPlan plan = plan_units(p, qs, B, pool.num_threads());
  const int64_t n = static_cast<int64_t>(plan.units.size());
  const int64_t total = plan.cum.back();
  const int64_t chunks =
      total * p.D < (int64_t{1} << 15) ? 1 : std::min<int64_t>(pool.num_threads(), n);
  auto first_unit_at = [&](int64_t c) {  // first i with cum[i] >= total * c / chunks
    const int64_t target = total / chunks * c + total % chunks * c / chunks;
    return static_cast<int64_t>(std::lower_bound(plan.cum.begin(), plan.cum.end() - 1, target) -
                                plan.cum.begin());
  };
  pool.parallel_for(chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    const int64_t end = c_end == chunks ? n : first_unit_at(c_end);
    for (int64_t i = c_begin == 0 ? 0 : first_unit_at(c_begin); i < end; ++i) {
      attend_unit<CD>(p, plan.units[i]);
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
  PAGODA_RETURN_IF_ERROR(check_v_cache_like_k(kOp, a.k_cache, a.v_cache));
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
  dispatch_float(a.k_cache.dtype, [&](auto d) { attention_units<d()>(pool, p, qs, B); });
  return OkStatus();
}

}  // namespace pagoda::cpu
