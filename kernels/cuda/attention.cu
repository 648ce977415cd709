// attention.cu: causal paged attention over the ragged batch (AttentionArgs in kernels/ops.h),
// decode rows and prefill chunks mixed in one launch. The CPU twin is kernels/cpu/attention.cc.
//
// Math, for query row t and query head h, all in f32 (values rounded to the activation dtype
// only when stored):
//   b    = the sequence with query_start[b] <= t < query_start[b + 1]
//   pos  = seq_lens[b] - q_len(b) + (t - query_start[b]);   g = h / G,  G = n_heads / n_kv_heads
//   K_p  = k_cache[block_tables[b][p / block_size], p % block_size, g, :]   (V_p alike)
//   s_p  = scale * dot(q[t, h], K_p)   for p in [0, pos]
//   out[t, h, :] = sum_p exp(s_p - m) V_p / sum_p exp(s_p - m),   m = max_p s_p
// computed in base 2: q is scaled by scale * log2(e) once, so s_p carries log2(e) and every
// exp(x) is exp2f(x') of the scaled x'. (m below is in those units.)
// Layout: q, out [T, n_heads, head_dim] (f32 or bf16, the same dtype); k_cache, v_cache
// [num_blocks, block_size, n_kv_heads, head_dim] (f32, f16 or bf16, the same dtype);
// block_tables [B, max_blocks] i32; seq_lens [B] i32; query_start [B + 1] i32.
//
// CTAs: one per (row t, kv head g, slice of g's query heads[, split z]); a slice is GH <= 8
// query heads (G > 8: ceil(G / 8) slices of ceil(G / slices) heads; GH the power of two at or
// above), so every K/V row a CTA loads serves all its heads (G = 4, llama3-8b: each KV byte is
// read once per row t). One range of keys [k0, k1) is computed by the CTA's kThreads = 128
// threads (attention_tiles.cuh, attend_range):
//  - lanes: a key row is shared by a group of lpk lanes (lpk = the power of two >= D / 8: 16 for
//    D = 128), lane c holding dims [8c, 8c + 8) of the row; the CTA has 128 / lpk groups;
//  - loads: a lane's chunk is one 16-byte load (f16/bf16) or two (f32), coalesced per row;
//    rows that are not 16-byte aligned (D * sizeof(cache) % 16 != 0, or a misaligned cache
//    base) take element loads instead (same values, same bits, only slower);
//  - keys: each group walks KB consecutive keys per iteration (KB = 2..8, from GH and the cache
//    dtype), the CTA 128 / lpk * KB keys; all K and V chunks of an iteration are loaded before
//    any is used; q stays in registers (the lane's dims of GH rows);
//  - scores: each lane's 8-term dot, then xor shuffles inside the group (log2 lpk steps);
//  - softmax: each group keeps its own online state (m, l, acc) per head in registers
//    (attention_tiles.cuh has the update), so the key loop has no barrier and no shared memory.
// At the end of the range the groups merge: first inside each warp by xor shuffles over the
// group index (merge_warp_groups), then across the 4 warps through shared memory in warp order
// (range_partial): M = max_w m_w, c_w = exp(m_w - M), l = sum_w l_w c_w, acc = sum_w acc_w c_w.
// That is the range's partial (m, l, acc[D]) per head:
//   m = max_p s_p,  l = sum_p exp(s_p - m),  acc = sum_p exp(s_p - m) V_p   over [k0, k1).
// Its bits depend on (k0, k1, D, G, cache dtype) and the data, not on anything else in the batch.
//
// Split-K ("flash-decoding"): one CTA per (t, g) would give a decode row with a long context only
// a few CTAs for the whole GPU. A row of n = pos + 1 keys is cut into contiguous splits
// (split_plan): n <= kSplitKeys: one range [0, n); else len = ceil(n / min(ceil(n / kSplitKeys),
// kMaxSplits)) rounded up to a multiple of 128, S = ceil(n / len) splits (2..kMaxSplits, the last
// one shorter). The partials (m_i, l_i, acc_i) of a row's ranges are merged in increasing i,
// online:
//   M' = max(M, m_i);  a = exp(M - M'),  c = exp(m_i - M')
//   L' = L a + l_i c;  A' = A a + acc_i c        (from M = -inf, L = 0, A = 0)
//   out = A / L
// with explicit _rn intrinsics (no contraction left to the compiler), so it gives the same bits
// wherever it runs. Two launch shapes compute exactly these operations in exactly this order:
//  - split CTAs (grid [T, KV * slices, S_max]): CTA z computes split z's partials into scratch
//    memory, and merge_kernel (grid [T, H], per query head) merges them and writes out. Rows
//    with fewer splits than z, and z > 0 for short rows, exit at once. S_max bounds the splits of
//    any row of the batch (from max_blocks * block_size). Used when the partials, T * H * S_max *
//    (D + 2) floats, fit the per-stream scratch (kScratchBytes), i.e. for decode-sized batches.
//  - one CTA per (t, g, slice) (grid [T, KV * slices, 1]) walking all of the row's ranges itself
//    and merging each partial as it comes (the short row: one range, merged once). Used when the
//    partials do not fit (large prefill batches: T * KV already fills the GPU), the scratch
//    cannot be had, or while the stream is being captured into a CUDA graph without scratch.
// Both shapes run the same kernel, whose range code is written once (the loop in
// attention_kernel), and the same merge arithmetic: a row's output is bit-identical whatever
// else is in the batch and whichever shape the launch takes (tests/cuda/attention_test.cc checks
// both shapes bit for bit).
// out may alias q exactly: a CTA reads its q rows (t, its heads) into shared memory before
// anything else, and out rows are written last, by the CTA that read them (short rows, walked
// rows) or by merge_kernel after every split CTA has finished.
// Bad device-side metadata (query_start not a prefix sum, seq_len < q_len, too many blocks for
// max_blocks: every row of the sequence; a block id outside [0, num_blocks): the rows that
// reach it) is never dereferenced: the CTA's rows (all its heads) are set to NaN (a split that
// meets a bad block id writes NaN partials, and NaN survives the merge).
//
// Tensor cores for prefill (opt-in, attention_prefill.cu): with p.tc_min_q_len > 0 both kernels
// here return at once for the rows that path owns (tc_row_owner, from query_start alone).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "kernels/cuda/attention_prefill.cuh"
#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {

namespace {

using namespace attention_tiles;  // kThreads, kChunk, KeyRows, attend_range, ...

// Split-K: rows with more keys than kSplitKeys are split into at most kMaxSplits ranges of
// about kSplitKeys keys or more (multiples of kSplitAlign). Changing these changes the bits of
// long rows.
constexpr int kSplitKeys = 512;
constexpr int kMaxSplits = 32;
constexpr int kSplitAlign = 128;
// The split CTAs' partials: one buffer of this size per (device, stream) (attention_scratch.cc).
// A launch uses the split CTAs only if T * H * S_max * (D + 2) floats fit in it.
constexpr size_t kScratchBytes = kAttentionScratchBytes;
constexpr int kMergeDimsPerThread = kMaxHeadDim / kThreads;  // merge_kernel: one (t, h) per CTA
constexpr float kLog2e = 1.4426950408889634f;

static_assert(kSplitKeys % kSplitAlign == 0 && kSplitKeys >= 2 * kSplitAlign);
static_assert(kMaxHeadDim % kThreads == 0);

// How a row of n keys is split: `count` ranges [i * len, min(n, (i + 1) * len)), all non-empty.
// count == 1 (n <= kSplitKeys): the whole row, the short path. Otherwise count is in
// [2, min(ceil(n / kSplitKeys), kMaxSplits)] and len is a multiple of kSplitAlign. (count >= 2:
// len <= (n + 1) / 2 + kSplitAlign - 1 < n for n > kSplitKeys >= 2 kSplitAlign.) A function of
// n alone: the batch-invariance contract.
struct SplitPlan {
  int count;
  int len;
};
__host__ __device__ __forceinline__ SplitPlan split_plan(int n) {
  if (n <= kSplitKeys) return {1, n};
  const int ideal = (n - 1) / kSplitKeys + 1;  // ceil(n / kSplitKeys)
  const int wanted = ideal < kMaxSplits ? ideal : kMaxSplits;
  const int len = ((n - 1) / wanted / kSplitAlign + 1) * kSplitAlign;  // ceil(n / wanted), aligned
  return {(n - 1) / len + 1, len};
}

struct AttentionParams {
  const void* q;                // [T, H, D]
  const void* k_cache;          // [num_blocks, block_size, KV, D]
  const void* v_cache;          // [num_blocks, block_size, KV, D]
  const int32_t* block_tables;  // [B, max_blocks]
  const int32_t* seq_lens;      // [B]
  const int32_t* query_start;   // [B + 1]
  void* out;                    // [T, H, D]
  int B, H, KV, D, block_size, max_blocks, num_blocks;
  int G;             // H / KV: query heads per kv head
  int slices;        // CTAs per (t, g): ceil(G / kMaxGroupHeads)
  int slice_heads;   // ceil(G / slices) <= GH: slice i has heads [i, i + 1) * slice_heads of g
  int lpk;           // lanes per key row (attention_tiles.cuh)
  float scale_log2;  // scale * log2(e)
  // Split CTAs only (else null / 1): partial (t, h, z) is slot (t * H + h) * max_splits + z,
  // holding part_ml[2 slot] = m, part_ml[2 slot + 1] = l and part_acc[slot * D + d] = acc[d].
  float* part_ml;    // [T, H, max_splits, 2]
  float* part_acc;   // [T, H, max_splits, D]
  int max_splits;    // S_max >= split_plan(n).count of every row with valid metadata
  int tc_min_q_len;  // > 0: rows of sequences with q_len >= this are attention_prefill.cu's
};

// Where query row t reads: its sequence b and position pos; ok is false for bad metadata
// (then b and pos are not to be used).
struct RowInfo {
  bool ok;
  int b;
  int pos;
};
__device__ __forceinline__ RowInfo locate_row(const AttentionParams& p, int t) {
  const int b = find_sequence(p.query_start, p.B, t);
  bool ok = b < p.B && p.query_start[b] <= t && t < p.query_start[b + 1];
  int pos = -1;
  if (ok) {
    // Checked per sequence, so that bad metadata makes all its rows NaN, not only some (with
    // seq_len < q_len the later rows' positions would come out >= 0; found by a host
    // emulation of this kernel).
    const int64_t q_len = static_cast<int64_t>(p.query_start[b + 1]) - p.query_start[b];
    const int64_t seq_len = p.seq_lens[b];
    ok = q_len <= seq_len && (seq_len - 1) / p.block_size < p.max_blocks;
    if (ok) pos = static_cast<int>(seq_len - q_len + (t - p.query_start[b]));
  }
  return {ok, b, pos};
}

// One online merge step (top of the file): M, L absorb the partial (m, l) and return the factors
// that A (each element, merge_value) absorbs acc with. Explicit _rn intrinsics, so the walking
// CTA and merge_kernel do bit-identical arithmetic. A NaN partial (a bad block) makes L and A
// NaN for good: NaN * 0 is NaN.
struct MergeFactors {
  float a, c;
};
__device__ __forceinline__ MergeFactors merge_partial(float& M, float& L, float m, float l) {
  const float m_new = fmaxf(M, m);
  const float a = exp2f(__fsub_rn(M, m_new));  // 0 for the first partial (M = -inf)
  const float c = exp2f(__fsub_rn(m, m_new));
  L = __fmaf_rn(l, c, __fmul_rn(L, a));
  M = m_new;
  return {a, c};
}
__device__ __forceinline__ float merge_value(float A, float acc, MergeFactors f) {
  return __fmaf_rn(acc, f.c, __fmul_rn(A, f.a));
}
template <typename Act>
__device__ __forceinline__ Act final_value(float A, float L) {
  return from_f32<Act>(__fmul_rn(A, __fdiv_rn(1.0f, L)));
}

// Shared memory of attention_kernel.
template <int GH>
struct CtaShared {
  union {
    float q[GH][kMaxHeadDim];            // the slice's q rows, scaled (until the key walk)
    float acc[kWarps][GH][kMaxHeadDim];  // each warp's acc of a range (merge_warp_groups)
  } u;
  float m[kWarps][GH], l[kWarps][GH];  // each warp's m and l of a range
  float c[kWarps][GH];                 // exp2(m_w - M) of the range
  MergeFactors f[GH];                  // the walk's merge factors of the range
  float run_m[GH], run_l[GH];          // the walk's running M, L (thread j < GH: head j)
  float run_acc[GH * kMaxHeadDim];     // the walk's running A, element j * D + d
};

// The partial of the range just walked (st: each lane's group state after merge_warp_groups) is
// combined across warps in warp order and then either stored as split z's partial (part_slot0
// >= 0: slot of head h0 + j is part_slot0 + j * max_splits) or merged into the walk's running
// state (sh.run_*). Three barriers: at the start (sh.u is free), after the warps' writes, after
// the per-head step (thread j < GH: m, l, the warp factors c_w and the merge factors).
template <int GH>
__device__ __forceinline__ void range_partial(const AttentionParams& p, CtaShared<GH>& sh,
                                              const GroupState<GH>& st, int nh,
                                              int64_t part_slot0) {
  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int D = p.D;
  __syncthreads();  // the q stage, or the previous range's reads of sh.u.acc, are done
  if (lane < p.lpk) {
    const int d0 = lane * kChunk;
#pragma unroll
    for (int j = 0; j < GH; ++j) {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        if (d0 + i < D) sh.u.acc[warp][j][d0 + i] = st.acc[j][i];
      }
      if (lane == 0) {
        sh.m[warp][j] = st.m[j];
        sh.l[warp][j] = st.l[j];
      }
    }
  }
  __syncthreads();
  if (tid < GH) {  // head j = tid: the range's m and l
    const int j = tid;
    float M = sh.m[0][j];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) M = fmaxf(M, sh.m[w][j]);
    const float m_use = M == -INFINITY ? 0.0f : M;
    float L = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float c = exp2f(__fsub_rn(sh.m[w][j], m_use));
      sh.c[w][j] = c;
      L = __fmaf_rn(sh.l[w][j], c, L);
    }
    if (part_slot0 >= 0) {
      if (j < nh) {
        const int64_t slot = part_slot0 + int64_t{j} * p.max_splits;
        p.part_ml[2 * slot] = M;
        p.part_ml[2 * slot + 1] = L;
      }
    } else {
      sh.f[j] = merge_partial(sh.run_m[j], sh.run_l[j], M, L);
    }
  }
  __syncthreads();
  for (int e = tid; e < nh * D; e += kThreads) {  // element e = (head j, dim d)
    const int j = e / D, d = e - j * D;
    float acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) acc = __fmaf_rn(sh.u.acc[w][j][d], sh.c[w][j], acc);
    if (part_slot0 >= 0) {
      p.part_acc[(part_slot0 + int64_t{j} * p.max_splits) * D + d] = acc;
    } else {
      sh.run_acc[e] = merge_value(sh.run_acc[e], acc, sh.f[j]);
    }
  }
}

// grid: [T, KV * p.slices, 1] (no split CTAs: p.part_ml null) or [T, KV * p.slices,
// p.max_splits]; block: [kThreads]. GH: power of two >= p.slice_heads. kVec: 16-byte loads
// (rows 16-byte aligned), else element loads.
template <typename Act, typename Cache, int GH, bool kVec>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionParams p) {
  __shared__ CtaShared<GH> sh;
  const int t = blockIdx.x;
  const int g = blockIdx.y / p.slices;
  const int first_head = (blockIdx.y % p.slices) * p.slice_heads;  // within g's group
  const int nh = min(p.slice_heads, p.G - first_head);             // heads h0 .. h0 + nh - 1
  if (nh <= 0) return;                                             // uniform over the CTA
  const int h0 = g * p.G + first_head;
  const int z = blockIdx.z;
  if (tc_row_owner(p.query_start, p.B, t, p.tc_min_q_len) >= 0) return;  // uniform
  const int tid = threadIdx.x;
  const int D = p.D;
  Act* out = static_cast<Act*>(p.out) + (static_cast<int64_t>(t) * p.H + h0) * D;  // [nh, D]

  // Locate the row in its sequence and choose this CTA's ranges.
  const RowInfo r = locate_row(p, t);
  const int n_ctx = r.ok ? r.pos + 1 : 0;
  const SplitPlan plan = split_plan(n_ctx);
  // This CTA computes split z's partials (the merge is merge_kernel's). The count check never
  // fails for valid metadata (max_splits bounds it); were it to, the row is walked by CTA z = 0,
  // which gives the same bits.
  const bool split_cta = p.part_ml != nullptr && plan.count > 1 && plan.count <= p.max_splits;
  if (z > 0 && !(split_cta && z < plan.count)) return;  // uniform over the CTA
  const int k0 = split_cta ? z * plan.len : 0;
  const int k1 = split_cta ? k0 + min(plan.len, n_ctx - k0) : n_ctx;
  const int64_t part_slot0 =
      split_cta ? (static_cast<int64_t>(t) * p.H + h0) * p.max_splits + z : int64_t{-1};

  // Reject metadata that would read out of bounds: a bad row, or a block id outside the cache
  // among the blocks of [k0, k1).
  const int32_t* table = p.block_tables + static_cast<int64_t>(r.ok ? r.b : 0) * p.max_blocks;
  const int first_block = k0 / p.block_size;
  const int end_block = r.ok ? (k1 - 1) / p.block_size + 1 : 0;
  bool bad_block = false;
  for (int i = first_block + tid; i < end_block; i += kThreads) {
    bad_block |= table[i] < 0 || table[i] >= p.num_blocks;
  }
  const float nan = __int_as_float(0x7fc00000);
  if (__syncthreads_or(bad_block) || !r.ok) {
    if (split_cta) {  // NaN partials: the merged rows are NaN
      if (tid < nh) {
        const int64_t slot = part_slot0 + int64_t{tid} * p.max_splits;
        p.part_ml[2 * slot] = p.part_ml[2 * slot + 1] = nan;
      }
      for (int e = tid; e < nh * D; e += kThreads) {
        const int j = e / D;
        p.part_acc[(part_slot0 + int64_t{j} * p.max_splits) * D + (e - j * D)] = nan;
      }
    } else {
      for (int e = tid; e < nh * D; e += kThreads) out[e] = from_f32<Act>(nan);
    }
    return;
  }

  // q rows of the slice -> shared (scaled; zero for the heads past nh) -> registers.
  const Act* q = static_cast<const Act*>(p.q) + (static_cast<int64_t>(t) * p.H + h0) * D;
  for (int e = tid; e < GH * D; e += kThreads) {
    const int j = e / D;
    sh.u.q[j][e - j * D] = j < nh ? to_f32(q[e]) * p.scale_log2 : 0.0f;
  }
  if (tid < GH) {
    sh.run_m[tid] = -INFINITY;
    sh.run_l[tid] = 0.0f;
  }
  for (int e = tid; e < nh * D; e += kThreads) sh.run_acc[e] = 0.0f;
  __syncthreads();
  const int d0 = ((tid % kWarpSize) & (p.lpk - 1)) * kChunk;
  float qr[GH][kChunk];
#pragma unroll
  for (int j = 0; j < GH; ++j) {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) qr[j][i] = d0 + i < D ? sh.u.q[j][d0 + i] : 0.0f;
  }

  const int64_t slot_stride = static_cast<int64_t>(p.KV) * D;
  const KeyRows<Cache> rows{static_cast<const Cache*>(p.k_cache),
                            static_cast<const Cache*>(p.v_cache),
                            table,
                            p.block_size,
                            slot_stride * p.block_size,
                            slot_stride,
                            static_cast<int64_t>(g) * D,
                            D,
                            p.lpk};
  // The ranges: split z alone, or all of the row's in order (one for a short row).
  const int r0 = split_cta ? z : 0;
  const int r1 = split_cta ? z + 1 : plan.count;
  for (int i = r0; i < r1; ++i) {
    const int s0 = i * plan.len;
    GroupState<GH> st;
    attend_range<Cache, GH, kVec>(rows, s0, s0 + min(plan.len, n_ctx - s0), qr, st);
    merge_warp_groups(st, p.lpk);
    range_partial(p, sh, st, nh, part_slot0);
  }
  if (!split_cta) {  // the walk's result: out = A / L (sh.run_l written before the last barrier)
    for (int e = tid; e < nh * D; e += kThreads) {
      out[e] = final_value<Act>(sh.run_acc[e], sh.run_l[e / D]);
    }
  }
}

// grid: [T, H], block: [kThreads]; after attention_kernel with split CTAs. Merges the partials
// of each long row in increasing split order and writes out; short and bad rows were written
// by attention_kernel (CTA z = 0) and are left alone.
template <typename Act>
__global__ void __launch_bounds__(kThreads) merge_kernel(AttentionParams p) {
  const int t = blockIdx.x;
  const int h = blockIdx.y;
  const int D = p.D;
  if (tc_row_owner(p.query_start, p.B, t, p.tc_min_q_len) >= 0) return;  // not ours
  const RowInfo r = locate_row(p, t);
  if (!r.ok) return;
  const SplitPlan plan = split_plan(r.pos + 1);
  if (plan.count == 1 || plan.count > p.max_splits) return;  // as attention_kernel decided

  const int64_t slot0 = (static_cast<int64_t>(t) * p.H + h) * p.max_splits;
  float M = -INFINITY, L = 0.0f, A[kMergeDimsPerThread];
#pragma unroll
  for (int i = 0; i < kMergeDimsPerThread; ++i) A[i] = 0.0f;
  for (int z = 0; z < plan.count; ++z) {
    const int64_t slot = slot0 + z;
    const MergeFactors f = merge_partial(M, L, p.part_ml[2 * slot], p.part_ml[2 * slot + 1]);
#pragma unroll
    for (int i = 0; i < kMergeDimsPerThread; ++i) {
      const int d = threadIdx.x + i * kThreads;
      if (d < D) A[i] = merge_value(A[i], p.part_acc[slot * D + d], f);
    }
  }
  Act* out = static_cast<Act*>(p.out) + (static_cast<int64_t>(t) * p.H + h) * D;
#pragma unroll
  for (int i = 0; i < kMergeDimsPerThread; ++i) {
    const int d = threadIdx.x + i * kThreads;
    if (d < D) out[d] = final_value<Act>(A[i], L);
  }
}

// ---- launch ----------------------------------------------------------------------------------

// The most splits a row with valid metadata can have in a batch whose tables hold max_blocks
// blocks of block_size: such a row has pos / block_size < max_blocks, so n = pos + 1 <=
// max_keys, and split_plan(n).count <= min(ceil(n / kSplitKeys), kMaxSplits), monotone in n.
int max_splits_for(int64_t max_keys) {
  if (max_keys <= kSplitKeys) return 1;
  return static_cast<int>(std::min<int64_t>((max_keys - 1) / kSplitKeys + 1, kMaxSplits));
}

// kAuto: split CTAs when the partials fit the scratch (and it can be had), else walk. The tests
// force either shape; both give the same bits.
enum class Shape { kAuto, kSplitCtas, kWalk };

template <typename Act, typename Cache, int GH>
void launch_kernel(const AttentionParams& p, bool vec, dim3 grid, cudaStream_t stream) {
  if (vec) {
    attention_kernel<Act, Cache, GH, true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    attention_kernel<Act, Cache, GH, false><<<grid, kThreads, 0, stream>>>(p);
  }
}

template <typename Act, typename Cache>
Status launch(const AttentionArgs& a, cudaStream_t stream, Shape shape, int tc_min_q_len) {
  const int64_t T = a.q.shape[0], H = a.q.shape[1], D = a.q.shape[2];
  const int64_t KV = a.k_cache.shape[2], G = H / KV;
  const int64_t slices = (G - 1) / kMaxGroupHeads + 1;
  const int64_t slice_heads = (G - 1) / slices + 1;  // <= kMaxGroupHeads
  int lpk = 1;
  while (lpk * kChunk < D) lpk *= 2;  // D <= 256: lpk <= 32
  // 16-byte loads need every row 16-byte aligned: rows start at multiples of D elements.
  const bool vec = (D * static_cast<int64_t>(sizeof(Cache))) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.k_cache.data) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.v_cache.data) % 16 == 0;
  AttentionParams p{a.q.data,
                    a.k_cache.data,
                    a.v_cache.data,
                    a.block_tables.as<const int32_t>(),
                    a.seq_lens.as<const int32_t>(),
                    a.query_start.as<const int32_t>(),
                    a.out.data,
                    static_cast<int>(a.seq_lens.shape[0]),
                    static_cast<int>(H),
                    static_cast<int>(KV),
                    static_cast<int>(D),
                    static_cast<int>(a.k_cache.shape[1]),
                    static_cast<int>(a.block_tables.shape[1]),
                    static_cast<int>(a.k_cache.shape[0]),
                    static_cast<int>(G),
                    static_cast<int>(slices),
                    static_cast<int>(slice_heads),
                    lpk,
                    a.scale * kLog2e,
                    /*part_ml=*/nullptr,
                    /*part_acc=*/nullptr,
                    /*max_splits=*/1,
                    tc_min_q_len};
  // Both factors are < 2^31 (check_args), so the product fits.
  const int max_splits = max_splits_for(a.block_tables.shape[1] * a.k_cache.shape[1]);
  if (max_splits > 1 && shape != Shape::kWalk) {
    // The partials: T * H * max_splits slots of (D + 2) floats. T * H < 2^47: no overflow.
    const int64_t bytes_per_pair = int64_t{max_splits} * (D + 2) * int64_t{sizeof(float)};
    float* scratch = nullptr;
    if (T * H <= static_cast<int64_t>(kScratchBytes) / bytes_per_pair) {
      PAGODA_ASSIGN_OR_RETURN(scratch, attention_split_scratch(stream));
    }
    if (scratch != nullptr) {
      p.part_ml = scratch;
      p.part_acc = scratch + 2 * T * H * max_splits;
      p.max_splits = max_splits;
    } else if (shape == Shape::kSplitCtas) {
      return FailedPrecondition("attention: split CTAs need " + std::to_string(T * H) + " x " +
                                std::to_string(bytes_per_pair) +
                                " bytes of partials; the scratch (" +
                                std::to_string(kScratchBytes) + " bytes) is too small or missing");
    }
  }
  // KV * slices <= H <= 65535 (check_args): within the grid's y limit.
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(KV * slices),
                  static_cast<unsigned>(p.max_splits));
  switch (slice_heads) {
    case 1: launch_kernel<Act, Cache, 1>(p, vec, grid, stream); break;
    case 2: launch_kernel<Act, Cache, 2>(p, vec, grid, stream); break;
    case 3:
    case 4: launch_kernel<Act, Cache, 4>(p, vec, grid, stream); break;
    default: launch_kernel<Act, Cache, 8>(p, vec, grid, stream); break;
  }
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (p.part_ml != nullptr) {
    merge_kernel<Act>
        <<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(H)), kThreads, 0, stream>>>(p);
    PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return OkStatus();
}

template <typename Act>
Status dispatch_cache(const AttentionArgs& a, cudaStream_t stream, Shape shape, int tc) {
  switch (a.k_cache.dtype) {
    case DType::kF32: return launch<Act, float>(a, stream, shape, tc);
    case DType::kF16: return launch<Act, __half>(a, stream, shape, tc);
    case DType::kBF16: return launch<Act, __nv_bfloat16>(a, stream, shape, tc);
    default: return InvalidArgument("attention: k_cache unsupported dtype");
  }
}

// tc_min_q_len > 0 and eligible arguments: attention_prefill.cu takes the rows of sequences with
// q_len >= tc_min_q_len (launched first, on the same stream), the kernels here the others.
Status run(const AttentionArgs& a, cudaStream_t stream, Shape shape, int tc_min_q_len) {
  PAGODA_RETURN_IF_ERROR(check_attention_args(a));
  if (a.q.shape[0] == 0 || a.q.shape[1] == 0) return OkStatus();
  const int tc = tc_min_q_len > 0 && attention_tc_eligible(a) ? tc_min_q_len : 0;
  if (tc > 0) PAGODA_RETURN_IF_ERROR(attention_prefill_cuda(a, stream, tc));
  switch (a.q.dtype) {
    case DType::kF32: return dispatch_cache<float>(a, stream, shape, tc);
    case DType::kBF16: return dispatch_cache<__nv_bfloat16>(a, stream, shape, tc);
    default: return InvalidArgument("attention: q unsupported dtype");
  }
}

}  // namespace

Status attention_cuda(const AttentionArgs& a, cudaStream_t stream) {
  return run(a, stream, Shape::kAuto, attention_tc_min_q_len());
}
// Test hooks (launchers.h): the launch shape forced (split CTAs: FailedPrecondition if the
// partials do not fit the scratch), and the split rule.
Status attention_cuda_for_test(const AttentionArgs& a, cudaStream_t stream, bool split_ctas) {
  return run(a, stream, split_ctas ? Shape::kSplitCtas : Shape::kWalk, 0);
}

// With the tensor-core path forced on at min_q_len >= 1 (else InvalidArgument, nothing queued).
Status attention_cuda_tc_for_test(const AttentionArgs& a, cudaStream_t stream, int min_q_len) {
  if (min_q_len < 1) return attention_prefill_cuda(a, stream, min_q_len);  // (checks it first)
  return run(a, stream, Shape::kAuto, min_q_len);
}

int attention_num_splits(int n_keys) {
  return split_plan(n_keys).count;
}

}  // namespace pagoda::cuda
