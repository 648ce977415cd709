// attention.cu: causal paged attention over the ragged batch (AttentionArgs in kernels/ops.h),
// decode rows and prefill chunks mixed in one launch. The CPU twin is kernels/cpu/attention.cc.
//
// Math, for query row t and query head h, all in f32 (values rounded to the activation dtype
// only when stored):
//   b    = the sequence with query_start[b] <= t < query_start[b + 1]
//   pos  = seq_lens[b] - q_len(b) + (t - query_start[b]);   g = h / (n_heads / n_kv_heads)
//   K_p  = k_cache[block_tables[b][p / block_size], p % block_size, g, :]   (V_p alike)
//   s_p  = scale * dot(q[t, h], K_p)   for p in [0, pos]
//   out[t, h, :] = sum_p exp(s_p - m) V_p / sum_p exp(s_p - m),   m = max_p s_p
// Layout: q, out [T, n_heads, head_dim] (f32 or bf16, the same dtype); k_cache, v_cache
// [num_blocks, block_size, n_kv_heads, head_dim] (f32, f16 or bf16, the same dtype);
// block_tables [B, max_blocks] i32; seq_lens [B] i32; query_start [B + 1] i32.
//
// One range of keys [k0, k1) of one (t, h) is walked by one CTA of kThreads threads
// (attend_keys): q[t, h] sits in shared memory; the keys go in tiles of kThreads with an online
// (flash-style) softmax: thread i scores key p0 + i; the CTA reduces the tile max m_tile and the
// running max becomes m' = max(m, m_tile); e_i = exp(s_i - m'); the running sum and each
// thread's output accumulators (dims d = tid, tid + kThreads, ...) are rescaled by exp(m - m')
// and the tile's e_i V_i are added in increasing p. The result is a partial (m, l, acc[D]):
//   m = max_p s_p,  l = sum_p exp(s_p - m),  acc = sum_p exp(s_p - m) V_p   over [k0, k1).
//
// Short rows (n = pos + 1 <= kSplitKeys keys) are one range, [0, n): out = acc / l, by one CTA,
// exactly as in the first version of this kernel.
// Long rows (split-K, "flash-decoding"): one CTA per (t, h) would give a decode row with a long
// context only n_heads CTAs for the whole GPU. Its keys are cut into contiguous splits
// (split_plan): len = ceil(n / min(ceil(n / kSplitKeys), kMaxSplits)) rounded up to whole tiles,
// S = ceil(n / len) splits (2..kMaxSplits, the last one shorter). Each split's partial
// (m_i, l_i, acc_i) is merged in increasing i, online:
//   M' = max(M, m_i);  a = exp(M - M'),  c = exp(m_i - M')
//   L' = L a + l_i c;  A' = A a + acc_i c        (from M = -inf, L = 0, A = 0)
//   out = A / L
// which equals out = sum_i acc_i exp(m_i - m) / sum_i l_i exp(m_i - m), m = max_i m_i, and
// needs no second pass. The merge uses explicit _rn intrinsics (no contraction left to the
// compiler), so it gives the same bits wherever it runs.
// Two launch shapes compute exactly these operations in exactly this order:
//  - split CTAs (grid [T, H, S_max]): CTA z computes split z's partial into scratch memory, and
//    merge_kernel (grid [T, H]) merges them and writes out. Rows with fewer splits than z, and
//    z > 0 for short rows, exit at once. S_max bounds the splits of any row of the batch (from
//    max_blocks * block_size). Used when the partials, T * H * S_max * (D + 2) floats, fit the
//    per-stream scratch (kScratchBytes), i.e. for decode-sized batches where it pays.
//  - one CTA per (t, h) (grid [T, H, 1]), which walks a long row's splits itself, keeping the
//    partial in registers and merging as above. Used when the partials do not fit (large
//    prefill batches: T * H already fills the GPU), the scratch cannot be had, or while the
//    stream is being captured into a CUDA graph without scratch allocated.
// So a row's splits (they depend only on its own n) and the order of every reduction depend
// only on (pos, head_dim), never on T or on the other rows, whichever shape the launch takes:
// a row's output is bit-identical whatever else is in the batch. (attend_keys is inlined into
// each path from the same source; tests/cuda/attention_test.cc checks that both shapes give the
// same bits.)
// out may alias q exactly: every CTA reads only its own q[t, h] (first), and out[t, h] is
// written last (by the CTA of the short path or the walking CTA, or by merge_kernel after every
// split CTA has finished).
// Bad device-side metadata (query_start not a prefix sum, seq_len < q_len, too many blocks for
// max_blocks, a block id outside [0, num_blocks)) is never dereferenced: the row is set to NaN
// (a split that meets a bad block id writes a NaN partial, and NaN survives the merge).
//
// TODO(issue 7): one CTA per (t, kv head) sharing K/V loads across the GQA group; tensor-core
// (mma / wgmma on sm_90a) QK^T and PV for prefill tiles; 16-byte vectorized, coalesced K loads.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {

namespace {

constexpr int kWarpSize = 32;
constexpr int kThreads = 128;  // keys per tile and threads per CTA
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kMaxHeadDim = kAttentionMaxHeadDim;
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;
// Split-K: rows with more keys than kSplitKeys are split into at most kMaxSplits ranges of
// about kSplitKeys keys or more (whole tiles). Changing these changes the bits of long rows.
constexpr int kSplitKeys = 512;
constexpr int kMaxSplits = 32;
// The split CTAs' partials: one buffer of this size per (device, stream), allocated on first
// use. A launch uses the split CTAs only if T * H * S_max * (D + 2) floats fit in it.
constexpr size_t kScratchBytes = size_t{32} << 20;

static_assert(kSplitKeys % kThreads == 0 && kSplitKeys >= 2 * kThreads);

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Reduces v over the CTA; every thread gets the same total (same order everywhere). Ends with
// a barrier, so `scratch` can be reused and shared writes made before the call are visible.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch, Op op) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  if (threadIdx.x % kWarpSize == 0) scratch[threadIdx.x / kWarpSize] = v;
  __syncthreads();
  float r = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = op(r, scratch[w]);
  __syncthreads();
  return r;
}

// The largest b in [0, B] with query_start[b] <= t (query_start is non-decreasing).
__device__ __forceinline__ int find_sequence(const int32_t* query_start, int B, int t) {
  int lo = 0, hi = B;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (query_start[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// How a row of n keys is split: `count` ranges [i * len, min(n, (i + 1) * len)), all non-empty.
// count == 1 (n <= kSplitKeys): the whole row, the short path. Otherwise count is in
// [2, min(ceil(n / kSplitKeys), kMaxSplits)] and len is a multiple of kThreads, so a split's
// tiles are whole tiles of the unsplit row. (count >= 2: len <= (n + 1) / 2 + kThreads - 1 < n
// for n > kSplitKeys >= 2 kThreads.) A function of n alone: the batch-invariance contract.
struct SplitPlan {
  int count;
  int len;
};
__host__ __device__ __forceinline__ SplitPlan split_plan(int n) {
  if (n <= kSplitKeys) return {1, n};
  const int ideal = (n - 1) / kSplitKeys + 1;  // ceil(n / kSplitKeys)
  const int wanted = ideal < kMaxSplits ? ideal : kMaxSplits;
  const int len = ((n - 1) / wanted / kThreads + 1) * kThreads;  // ceil(n / wanted), whole tiles
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
  float scale;
  // Split CTAs only (else null / 1): partial (t, h, z) is slot (t * H + h) * max_splits + z,
  // holding part_ml[2 slot] = m, part_ml[2 slot + 1] = l and part_acc[slot * D + d] = acc[d].
  float* part_ml;
  float* part_acc;
  int max_splits;  // S_max >= split_plan(n).count of every row with valid metadata
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
    const int q_len = p.query_start[b + 1] - p.query_start[b];
    pos = p.seq_lens[b] - q_len + (t - p.query_start[b]);
    ok = pos >= 0 && pos / p.block_size < p.max_blocks;
  }
  return {ok, b, pos};
}

// Shared memory of one CTA walking keys.
struct KeyTiles {
  float q[kMaxHeadDim];
  float prob[kThreads];
  int64_t row[kThreads];  // element offset of each tile key's K/V row (head g)
  float scratch[kWarps];
};

// The partial (m, l, acc) of keys [k0, k1) (see the top of the file); q is in sh.q. Every thread
// gets the same m and l, and the accumulators of its dims tid + i * kThreads (< D). Ends with a
// barrier.
template <typename Cache>
__device__ __forceinline__ void attend_keys(const AttentionParams& p, const int32_t* table, int g,
                                            int k0, int k1, KeyTiles& sh, float& m_run,
                                            float& l_run, float (&acc)[kDimsPerThread]) {
  const int tid = threadIdx.x;
  const int D = p.D;
  const Cache* k_cache = static_cast<const Cache*>(p.k_cache);
  const Cache* v_cache = static_cast<const Cache*>(p.v_cache);
  m_run = -INFINITY;
  l_run = 0.0f;
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) acc[i] = 0.0f;

  for (int p0 = k0; p0 < k1; p0 += kThreads) {
    const int n = min(kThreads, k1 - p0);
    // Scores: thread tid takes key p0 + tid.
    float s = -INFINITY;
    if (tid < n) {
      const int key = p0 + tid;
      const int64_t slot =
          static_cast<int64_t>(table[key / p.block_size]) * p.block_size + key % p.block_size;
      const int64_t row = (slot * p.KV + g) * D;
      sh.row[tid] = row;
      const Cache* k = k_cache + row;
      float dot = 0.0f;
#pragma unroll 8
      for (int d = 0; d < D; ++d) dot = fmaf(sh.q[d], to_f32(k[d]), dot);
      s = dot * p.scale;
    }
    const float m_new = fmaxf(m_run, block_reduce(s, sh.scratch, MaxOp{}));
    const float e = tid < n ? expf(s - m_new) : 0.0f;
    sh.prob[tid] = e;
    const float alpha = expf(m_run - m_new);                       // 0 on the first tile
    l_run = l_run * alpha + block_reduce(e, sh.scratch, SumOp{});  // barrier: sh.prob visible

    // Values: thread tid owns dims tid, tid + kThreads, ...; keys in increasing p.
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) {
      const int d = tid + i * kThreads;
      if (d < D) {
        float a = acc[i] * alpha;
        for (int k = 0; k < n; ++k) a = fmaf(sh.prob[k], to_f32(v_cache[sh.row[k] + d]), a);
        acc[i] = a;
      }
    }
    m_run = m_new;
    __syncthreads();  // sh.prob and sh.row are rewritten by the next tile
  }
}

// One online merge step (top of the file): (M, L, A) absorbs the partial (m, l, acc). Explicit
// _rn intrinsics, so the walking CTA and merge_kernel do bit-identical arithmetic. A NaN partial
// (a bad block) makes L and A NaN for good: NaN * 0 is NaN.
__device__ __forceinline__ void merge_partial(float& M, float& L, float (&A)[kDimsPerThread],
                                              float m, float l,
                                              const float (&acc)[kDimsPerThread]) {
  const float m_new = fmaxf(M, m);
  const float a = expf(__fsub_rn(M, m_new));  // 0 for the first partial (M = -inf)
  const float c = expf(__fsub_rn(m, m_new));
  L = __fmaf_rn(l, c, __fmul_rn(L, a));
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) A[i] = __fmaf_rn(acc[i], c, __fmul_rn(A[i], a));
  M = m_new;
}

// out[d] = acc[d] / l for this thread's dims, rounded to Act.
template <typename Act>
__device__ __forceinline__ void store_row(Act* out, int D, float l,
                                          const float (&acc)[kDimsPerThread]) {
  const float inv_sum = 1.0f / l;
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) {
    const int d = threadIdx.x + i * kThreads;
    if (d < D) out[d] = from_f32<Act>(acc[i] * inv_sum);
  }
}

// grid: [T, H, 1] (no split CTAs: p.part_ml null) or [T, H, p.max_splits]; block: [kThreads].
template <typename Act, typename Cache>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionParams p) {
  __shared__ KeyTiles sh;
  const int t = blockIdx.x;
  const int h = blockIdx.y;
  const int z = blockIdx.z;
  const int tid = threadIdx.x;
  const int D = p.D;
  Act* out = static_cast<Act*>(p.out) + (static_cast<int64_t>(t) * p.H + h) * D;

  // Locate the row in its sequence and choose this CTA's keys [k0, k1).
  const RowInfo r = locate_row(p, t);
  const int n_ctx = r.ok ? r.pos + 1 : 0;
  const SplitPlan plan = split_plan(n_ctx);
  // This CTA computes split z's partial (the merge is merge_kernel's). The count check never
  // fails for valid metadata (max_splits bounds it); were it to, the row is walked by CTA z = 0,
  // which gives the same bits.
  const bool split_cta = p.part_ml != nullptr && plan.count > 1 && plan.count <= p.max_splits;
  if (z > 0 && !(split_cta && z < plan.count)) return;  // uniform over the CTA
  const int k0 = split_cta ? z * plan.len : 0;
  const int k1 = split_cta ? k0 + min(plan.len, n_ctx - k0) : n_ctx;

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
  const int64_t slot = (static_cast<int64_t>(t) * p.H + h) * p.max_splits + z;
  if (__syncthreads_or(bad_block) || !r.ok) {
    if (split_cta) {  // a NaN partial: the merged row is NaN
      if (tid == 0) p.part_ml[2 * slot] = p.part_ml[2 * slot + 1] = nan;
      for (int d = tid; d < D; d += kThreads) p.part_acc[slot * D + d] = nan;
    } else {
      for (int d = tid; d < D; d += kThreads) out[d] = from_f32<Act>(nan);
    }
    return;
  }

  const Act* q = static_cast<const Act*>(p.q) + (static_cast<int64_t>(t) * p.H + h) * D;
  for (int d = tid; d < D; d += kThreads) sh.q[d] = to_f32(q[d]);
  __syncthreads();

  const int g = h / (p.H / p.KV);
  float m, l, acc[kDimsPerThread];
  if (plan.count == 1) {  // short row: the whole context, written directly
    attend_keys<Cache>(p, table, g, 0, n_ctx, sh, m, l, acc);
    store_row<Act>(out, D, l, acc);
  } else if (split_cta) {  // one split of a long row: its partial
    attend_keys<Cache>(p, table, g, k0, k1, sh, m, l, acc);
    if (tid == 0) {
      p.part_ml[2 * slot] = m;
      p.part_ml[2 * slot + 1] = l;
    }
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) {
      const int d = tid + i * kThreads;
      if (d < D) p.part_acc[slot * D + d] = acc[i];
    }
  } else {  // a long row walked by one CTA: its splits in order, merged as they come
    float M = -INFINITY, L = 0.0f, A[kDimsPerThread];
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) A[i] = 0.0f;
    for (int i = 0; i < plan.count; ++i) {
      const int s0 = i * plan.len;
      attend_keys<Cache>(p, table, g, s0, s0 + min(plan.len, n_ctx - s0), sh, m, l, acc);
      merge_partial(M, L, A, m, l, acc);
    }
    store_row<Act>(out, D, L, A);
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
  const RowInfo r = locate_row(p, t);
  if (!r.ok) return;
  const SplitPlan plan = split_plan(r.pos + 1);
  if (plan.count == 1 || plan.count > p.max_splits) return;  // as attention_kernel decided

  const int64_t slot0 = (static_cast<int64_t>(t) * p.H + h) * p.max_splits;
  float M = -INFINITY, L = 0.0f, A[kDimsPerThread];
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) A[i] = 0.0f;
  for (int z = 0; z < plan.count; ++z) {
    const int64_t slot = slot0 + z;
    float acc[kDimsPerThread];
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) {
      const int d = threadIdx.x + i * kThreads;
      acc[i] = d < D ? p.part_acc[slot * D + d] : 0.0f;
    }
    merge_partial(M, L, A, p.part_ml[2 * slot], p.part_ml[2 * slot + 1], acc);
  }
  store_row<Act>(static_cast<Act*>(p.out) + (static_cast<int64_t>(t) * p.H + h) * D, D, L, A);
}

// ---- split scratch -----------------------------------------------------------------------
// The split CTAs' partials live in one kScratchBytes buffer per (device, stream), allocated on
// the first launch that wants it and kept for the life of the process, as matmul.cu keeps its
// cuBLASLt workspace: later steps allocate nothing, and a CUDA graph captured later may hold its
// address (it never moves). Launches on one stream are ordered, so they may share it.
struct ScratchState {
  std::mutex mu;
  std::map<std::pair<int, cudaStream_t>, float*> buffers;  // null: cudaMalloc ran out of memory
};

// Process-wide; intentionally leaked (never destroyed) so that no CUDA call runs during static
// destruction.
ScratchState& scratch_state() {
  static ScratchState* s = new ScratchState();
  return *s;
}

// The scratch of `stream` on the current device, or null where there is none to be had: out of
// memory (remembered, not retried every step), or the stream is being captured into a graph and
// none was allocated before (no allocation during a capture; tried again after it). With null,
// the launch walks long rows in one CTA each, which gives the same bits.
StatusOr<float*> split_scratch(cudaStream_t stream) {
  int device = -1;
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  ScratchState& s = scratch_state();
  std::lock_guard<std::mutex> lock(s.mu);
  const auto key = std::make_pair(device, stream);
  if (const auto it = s.buffers.find(key); it != s.buffers.end()) return it->second;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  PAGODA_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return static_cast<float*>(nullptr);
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, kScratchBytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it, so the launch check below does not report it
    ptr = nullptr;
  } else {
    PAGODA_CUDA_RETURN_IF_ERROR(err);
  }
  s.buffers.emplace(key, static_cast<float*>(ptr));
  return static_cast<float*>(ptr);
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

template <typename Act, typename Cache>
Status launch(const AttentionArgs& a, cudaStream_t stream, Shape shape) {
  AttentionParams p{a.q.data,
                    a.k_cache.data,
                    a.v_cache.data,
                    a.block_tables.as<const int32_t>(),
                    a.seq_lens.as<const int32_t>(),
                    a.query_start.as<const int32_t>(),
                    a.out.data,
                    static_cast<int>(a.seq_lens.shape[0]),
                    static_cast<int>(a.q.shape[1]),
                    static_cast<int>(a.k_cache.shape[2]),
                    static_cast<int>(a.q.shape[2]),
                    static_cast<int>(a.k_cache.shape[1]),
                    static_cast<int>(a.block_tables.shape[1]),
                    static_cast<int>(a.k_cache.shape[0]),
                    a.scale,
                    /*part_ml=*/nullptr,
                    /*part_acc=*/nullptr,
                    /*max_splits=*/1};
  const int64_t T = a.q.shape[0], H = a.q.shape[1], D = a.q.shape[2];
  // Both factors are < 2^31 (check_args), so the product fits.
  const int max_splits = max_splits_for(a.block_tables.shape[1] * a.k_cache.shape[1]);
  if (max_splits > 1 && shape != Shape::kWalk) {
    // The partials: T * H * max_splits slots of (D + 2) floats. T * H < 2^47: no overflow.
    const int64_t bytes_per_pair = int64_t{max_splits} * (D + 2) * int64_t{sizeof(float)};
    float* scratch = nullptr;
    if (T * H <= static_cast<int64_t>(kScratchBytes) / bytes_per_pair) {
      PAGODA_ASSIGN_OR_RETURN(scratch, split_scratch(stream));
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
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(H),
                  static_cast<unsigned>(p.max_splits));
  attention_kernel<Act, Cache><<<grid, kThreads, 0, stream>>>(p);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (p.part_ml != nullptr) {
    merge_kernel<Act>
        <<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(H)), kThreads, 0, stream>>>(p);
    PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return OkStatus();
}

template <typename Act>
Status dispatch_cache(const AttentionArgs& a, cudaStream_t stream, Shape shape) {
  switch (a.k_cache.dtype) {
    case DType::kF32: return launch<Act, float>(a, stream, shape);
    case DType::kF16: return launch<Act, __half>(a, stream, shape);
    case DType::kBF16: return launch<Act, __nv_bfloat16>(a, stream, shape);
    default: return InvalidArgument("attention: k_cache unsupported dtype");
  }
}

Status run(const AttentionArgs& a, cudaStream_t stream, Shape shape) {
  PAGODA_RETURN_IF_ERROR(check_attention_args(a));
  if (a.q.shape[0] == 0 || a.q.shape[1] == 0) return OkStatus();
  switch (a.q.dtype) {
    case DType::kF32: return dispatch_cache<float>(a, stream, shape);
    case DType::kBF16: return dispatch_cache<__nv_bfloat16>(a, stream, shape);
    default: return InvalidArgument("attention: q unsupported dtype");
  }
}

}  // namespace

Status attention_cuda(const AttentionArgs& a, cudaStream_t stream) {
  return run(a, stream, Shape::kAuto);
}

// Test hooks, declared again in tests/cuda/attention_test.cc (launchers.h is the backend's
// interface, and these are not part of it): attention_cuda with the launch shape forced (split
// CTAs: FailedPrecondition if the partials do not fit the scratch), and the split rule.
Status attention_cuda_for_test(const AttentionArgs& a, cudaStream_t stream, bool split_ctas) {
  return run(a, stream, split_ctas ? Shape::kSplitCtas : Shape::kWalk);
}

int attention_num_splits(int n_keys) {
  return split_plan(n_keys).count;
}

}  // namespace pagoda::cuda
