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
// Parallel plan (first correct version): one CTA of kThreads threads per (t, h), grid [T, H].
// The CTA finds b by binary search over query_start (the host cannot read device memory), loads
// q[t, h] into shared memory, then walks the context in tiles of kThreads keys with an online
// (flash-style) softmax: thread i scores key p0 + i; the CTA reduces the tile max m_tile and the
// running max becomes m' = max(m, m_tile); e_i = exp(s_i - m'); the running sum and each
// thread's output accumulators (dims d = tid, tid + kThreads, ...) are rescaled by exp(m - m')
// and the tile's e_i V_i are added in increasing p. out = acc / sum.
// The launch shape and every reduction order depend only on (pos, head_dim), never on T or on
// the other rows: a row's output is bit-identical whatever else is in the batch.
// out may alias q exactly: a CTA reads only its own q[t, h] (first) and writes only out[t, h]
// (last).
// Bad device-side metadata (query_start not a prefix sum, seq_len < q_len, too many blocks for
// max_blocks, a block id outside [0, num_blocks)) is never dereferenced: the row is set to NaN.
//
// TODO(issue 7): split-K / flash-decoding for long contexts (partition the context across CTAs,
// write (m, sum, acc) partials, merge in a second kernel) so decode at small batch fills the
// GPU; one CTA per (t, kv head) sharing K/V loads across the GQA group; tensor-core (mma /
// wgmma on sm_90a) QK^T and PV for prefill tiles; 16-byte vectorized, coalesced K loads.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr int kThreads = 128;  // keys per tile and threads per CTA
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;
constexpr int kMaxGridY = 65535;

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
};

// grid: [T, H], block: [kThreads].
template <typename Act, typename Cache>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionParams p) {
  __shared__ float s_q[kMaxHeadDim];
  __shared__ float s_prob[kThreads];
  __shared__ int64_t s_row[kThreads];  // element offset of each tile key's K/V row (head g)
  __shared__ float s_scratch[kWarps];
  const int t = blockIdx.x;
  const int h = blockIdx.y;
  const int tid = threadIdx.x;
  const int D = p.D;
  Act* out = static_cast<Act*>(p.out) + (static_cast<int64_t>(t) * p.H + h) * D;

  // Locate the row in its sequence; reject metadata that would read out of bounds.
  const int b = find_sequence(p.query_start, p.B, t);
  bool ok = b < p.B && p.query_start[b] <= t && t < p.query_start[b + 1];
  int pos = -1;
  if (ok) {
    const int q_len = p.query_start[b + 1] - p.query_start[b];
    pos = p.seq_lens[b] - q_len + (t - p.query_start[b]);
    ok = pos >= 0 && pos / p.block_size < p.max_blocks;
  }
  const int32_t* table = p.block_tables + static_cast<int64_t>(ok ? b : 0) * p.max_blocks;
  const int n_ctx = pos + 1;
  const int n_blocks = ok ? pos / p.block_size + 1 : 0;
  bool bad_block = false;
  for (int i = tid; i < n_blocks; i += kThreads) {
    bad_block |= table[i] < 0 || table[i] >= p.num_blocks;
  }
  if (__syncthreads_or(bad_block) || !ok) {
    for (int d = tid; d < D; d += kThreads) out[d] = from_f32<Act>(__int_as_float(0x7fc00000));
    return;
  }

  const Act* q = static_cast<const Act*>(p.q) + (static_cast<int64_t>(t) * p.H + h) * D;
  for (int d = tid; d < D; d += kThreads) s_q[d] = to_f32(q[d]);
  __syncthreads();

  const Cache* k_cache = static_cast<const Cache*>(p.k_cache);
  const Cache* v_cache = static_cast<const Cache*>(p.v_cache);
  const int g = h / (p.H / p.KV);
  float m_run = -INFINITY;
  float l_run = 0.0f;
  float acc[kDimsPerThread];
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) acc[i] = 0.0f;

  for (int p0 = 0; p0 < n_ctx; p0 += kThreads) {
    const int n = min(kThreads, n_ctx - p0);
    // Scores: thread tid takes key p0 + tid.
    float s = -INFINITY;
    if (tid < n) {
      const int key = p0 + tid;
      const int64_t slot =
          static_cast<int64_t>(table[key / p.block_size]) * p.block_size + key % p.block_size;
      const int64_t row = (slot * p.KV + g) * D;
      s_row[tid] = row;
      const Cache* k = k_cache + row;
      float dot = 0.0f;
#pragma unroll 8
      for (int d = 0; d < D; ++d) dot = fmaf(s_q[d], to_f32(k[d]), dot);
      s = dot * p.scale;
    }
    const float m_new = fmaxf(m_run, block_reduce(s, s_scratch, MaxOp{}));
    const float e = tid < n ? expf(s - m_new) : 0.0f;
    s_prob[tid] = e;
    const float alpha = expf(m_run - m_new);                      // 0 on the first tile
    l_run = l_run * alpha + block_reduce(e, s_scratch, SumOp{});  // barrier: s_prob visible

    // Values: thread tid owns dims tid, tid + kThreads, ...; keys in increasing p.
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) {
      const int d = tid + i * kThreads;
      if (d < D) {
        float a = acc[i] * alpha;
        for (int k = 0; k < n; ++k) a = fmaf(s_prob[k], to_f32(v_cache[s_row[k] + d]), a);
        acc[i] = a;
      }
    }
    m_run = m_new;
    __syncthreads();  // s_prob and s_row are rewritten by the next tile
  }

  const float inv_sum = 1.0f / l_run;
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) {
    const int d = tid + i * kThreads;
    if (d < D) out[d] = from_f32<Act>(acc[i] * inv_sum);
  }
}

// ---- launcher ----------------------------------------------------------------------------

Status arg_error(const char* arg, const std::string& what) {
  return InvalidArgument(std::string("attention: ") + arg + " " + what);
}

Status check_rank(const char* arg, const TensorView& v, int ndim, const char* layout) {
  if (v.ndim != ndim)
    return arg_error(arg, std::string("must be ") + layout + ", got " + v.describe());
  if (v.device != Device::kCuda) {
    return arg_error(arg, "must be on the cuda device, got " + v.describe() + " on the cpu");
  }
  return OkStatus();
}

Status check_args(const AttentionArgs& a) {
  PAGODA_RETURN_IF_ERROR(check_rank("q", a.q, 3, "[T, n_heads, head_dim]"));
  PAGODA_RETURN_IF_ERROR(check_rank("k_cache", a.k_cache, 4, "[blocks, block_size, kv, hd]"));
  PAGODA_RETURN_IF_ERROR(check_rank("v_cache", a.v_cache, 4, "[blocks, block_size, kv, hd]"));
  PAGODA_RETURN_IF_ERROR(check_rank("block_tables", a.block_tables, 2, "[B, max_blocks]"));
  PAGODA_RETURN_IF_ERROR(check_rank("seq_lens", a.seq_lens, 1, "[B]"));
  PAGODA_RETURN_IF_ERROR(check_rank("query_start", a.query_start, 1, "[B + 1]"));
  PAGODA_RETURN_IF_ERROR(check_rank("out", a.out, 3, "[T, n_heads, head_dim]"));
  if (a.q.dtype != DType::kF32 && a.q.dtype != DType::kBF16) {
    return arg_error("q", "dtype must be f32 or bf16, got " + a.q.describe());
  }
  if (a.out.dtype != a.q.dtype) {
    return arg_error("out", "dtype must match q " + a.q.describe() + ", got " + a.out.describe());
  }
  if (!is_float(a.k_cache.dtype)) {
    return arg_error("k_cache", "dtype must be f32, f16 or bf16, got " + a.k_cache.describe());
  }
  if (a.v_cache.dtype != a.k_cache.dtype) {
    return arg_error("v_cache", "dtype must match k_cache " + a.k_cache.describe() + ", got " +
                                    a.v_cache.describe());
  }
  for (const auto* idx : {&a.block_tables, &a.seq_lens, &a.query_start}) {
    if (idx->dtype != DType::kI32) {
      const char* name = idx == &a.block_tables ? "block_tables"
                         : idx == &a.seq_lens   ? "seq_lens"
                                                : "query_start";
      return arg_error(name, "dtype must be i32, got " + idx->describe());
    }
  }
  const int64_t T = a.q.shape[0], H = a.q.shape[1], D = a.q.shape[2];
  const int64_t num_blocks = a.k_cache.shape[0], block_size = a.k_cache.shape[1];
  const int64_t KV = a.k_cache.shape[2];
  const int64_t B = a.seq_lens.shape[0], max_blocks = a.block_tables.shape[1];
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (D <= 0 || D > kMaxHeadDim) {
    return arg_error(
        "q", "head_dim must be in [1, " + std::to_string(kMaxHeadDim) + "], got " + a.q.describe());
  }
  if (T > kIntMax || H > kMaxGridY) {
    return arg_error("q", "must have T < 2^31 and n_heads <= 65535, got " + a.q.describe());
  }
  if (a.out.shape[0] != T || a.out.shape[1] != H || a.out.shape[2] != D) {
    return arg_error("out",
                     "must have the shape of q " + a.q.describe() + ", got " + a.out.describe());
  }
  if (block_size <= 0 || num_blocks > kIntMax || block_size > kIntMax) {
    return arg_error("k_cache",
                     "must have block_size > 0 and sizes < 2^31, got " + a.k_cache.describe());
  }
  if (KV <= 0 || H % KV != 0) {
    return arg_error("k_cache", "n_kv_heads must divide n_heads = " + std::to_string(H) + ", got " +
                                    a.k_cache.describe());
  }
  if (a.k_cache.shape[3] != D) {
    return arg_error("k_cache",
                     "head_dim must match q " + a.q.describe() + ", got " + a.k_cache.describe());
  }
  for (int i = 0; i < 4; ++i) {
    if (a.v_cache.shape[i] != a.k_cache.shape[i]) {
      return arg_error("v_cache", "must have the shape of k_cache " + a.k_cache.describe() +
                                      ", got " + a.v_cache.describe());
    }
  }
  if (B > kIntMax - 1 || a.block_tables.shape[0] != B || max_blocks > kIntMax) {
    return arg_error("block_tables", "must be [B = " + std::to_string(B) +
                                         " (seq_lens dim 0), max_blocks < 2^31], got " +
                                         a.block_tables.describe());
  }
  if (a.query_start.shape[0] != B + 1) {
    return arg_error("query_start", "must be [B + 1 = " + std::to_string(B + 1) + "], got " +
                                        a.query_start.describe());
  }
  if (B == 0 && T > 0) {
    return arg_error("seq_lens", "is empty (B = 0) but q has T = " + std::to_string(T) + " rows");
  }
  if (!std::isfinite(a.scale)) {
    return arg_error("scale", "must be finite, got " + std::to_string(a.scale));
  }
  if (T == 0 || H == 0) return OkStatus();
  if (a.q.empty() || a.k_cache.empty() || a.v_cache.empty() || a.block_tables.empty() ||
      a.seq_lens.empty() || a.query_start.empty() || a.out.empty()) {
    return arg_error("tensors", "need data (got a null pointer)");
  }
  if (a.out.data != a.q.data && overlaps(a.out, a.q)) {
    return arg_error("out", "must be q itself or not overlap it");
  }
  if (overlaps(a.out, a.k_cache) || overlaps(a.out, a.v_cache)) {
    return arg_error("out", "must not overlap k_cache or v_cache");
  }
  return OkStatus();
}

template <typename Act, typename Cache>
Status launch(const AttentionArgs& a, cudaStream_t stream) {
  const AttentionParams p{a.q.data,
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
                          a.scale};
  const dim3 grid(static_cast<unsigned>(a.q.shape[0]), static_cast<unsigned>(a.q.shape[1]));
  attention_kernel<Act, Cache><<<grid, kThreads, 0, stream>>>(p);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

template <typename Act>
Status dispatch_cache(const AttentionArgs& a, cudaStream_t stream) {
  switch (a.k_cache.dtype) {
    case DType::kF32: return launch<Act, float>(a, stream);
    case DType::kF16: return launch<Act, __half>(a, stream);
    case DType::kBF16: return launch<Act, __nv_bfloat16>(a, stream);
    default: return arg_error("k_cache", "unsupported dtype");
  }
}

}  // namespace

Status attention_cuda(const AttentionArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  if (a.q.shape[0] == 0 || a.q.shape[1] == 0) return OkStatus();
  switch (a.q.dtype) {
    case DType::kF32: return dispatch_cache<float>(a, stream);
    case DType::kBF16: return dispatch_cache<__nv_bfloat16>(a, stream);
    default: return arg_error("q", "unsupported dtype");
  }
}

}  // namespace pagoda::cuda
