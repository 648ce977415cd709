// rope_kv_write.cu: RoPE and the KV cache write fused, on the output of one [q; k; v] GEMM
// (RopeKvWriteArgs in kernels/ops.h): one launch and one pass over qkv instead of rope (read
// and write q, k) followed by kv_write (read k, v again).
//
// Math, for each token t (d = head_dim, p = positions[t], slot = slot_mapping[t]):
//   q heads of qkv[t] -> rotated as in rope.cu -> act -> q_out[t]
//   k heads of qkv[t] -> rotated as in rope.cu -> act -> f32 -> cache -> k_cache row slot
//   v heads of qkv[t] ------------------------------> f32 -> cache -> v_cache row slot
// The rotation is rope.cu's, operation by operation (__fmul_rn angle, accurate sincosf, one
// fmaf per output with the product rounded first), and k is rounded to the activation dtype
// before the cache dtype, exactly as rope then kv_write store it: the results are bit for bit
// those of rope.cu + kv_write.cu on the same inputs. Padding slots (< 0) write no K/V (q is still
// rotated); a slot beyond the cache is skipped like padding (the launcher cannot read the slots
// on the device to reject it, as the CPU twin does).
// Layout: qkv [T, (H + 2 KV) d] and q_out [T, H, d] in the activation dtype (f32 or bf16);
// positions, slot_mapping [T] i32 and inv_freq [d/2] f32 on the device; k_cache, v_cache
// [num_blocks, block_size, KV, d] in f32, f16 or bf16 (both the same).
//
// Parallel plan: one block per token. Threads stride over the token's (H + KV) * d/2 rotation
// pairs (q heads first, k pairs skipped for a padding slot), then over its KV * d v elements.
// Every output element is written by one thread; the inputs are never written.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

constexpr int kMaxThreads = 256;

// grid: [T], block: [threads].
template <typename Act, typename C>
__global__ void __launch_bounds__(kMaxThreads)
    rope_kv_write_kernel(const Act* qkv, const int32_t* positions, const float* inv_freq,
                         const int32_t* slot_mapping, Act* q_out, C* k_cache, C* v_cache,
                         int64_t num_slots, int n_heads, int n_kv_heads, int head_dim) {
  const int half = head_dim / 2;
  const int64_t t = blockIdx.x;
  const int32_t slot = slot_mapping[t];
  const bool write_kv = slot >= 0 && slot < num_slots;
  const float p = __int2float_rn(positions[t]);
  const int kv_row = n_kv_heads * head_dim;
  const Act* row = qkv + t * (static_cast<int64_t>(n_heads) * head_dim + 2 * kv_row);
  Act* q_row = q_out + t * n_heads * head_dim;
  const int64_t dst = static_cast<int64_t>(slot) * kv_row;
  const int q_pairs = n_heads * half;
  const int pairs = write_kv ? (n_heads + n_kv_heads) * half : q_pairs;
  for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
    const bool is_q = j < q_pairs;
    const int jj = is_q ? j : j - q_pairs;
    const int h = jj / half, i = jj % half;
    float s, c;
    sincosf(__fmul_rn(p, inv_freq[i]), &s, &c);
    const int src = (is_q ? 0 : n_heads * head_dim) + h * head_dim + i;
    const float x0 = to_f32(row[src]);
    const float x1 = to_f32(row[src + half]);
    const Act lo = from_f32<Act>(fmaf(x0, c, -__fmul_rn(x1, s)));
    const Act hi = from_f32<Act>(fmaf(x1, c, __fmul_rn(x0, s)));
    const int out = h * head_dim + i;
    if (is_q) {
      q_row[out] = lo;
      q_row[out + half] = hi;
    } else {
      k_cache[dst + out] = from_f32<C>(to_f32(lo));
      k_cache[dst + out + half] = from_f32<C>(to_f32(hi));
    }
  }
  if (!write_kv) return;
  const Act* v = row + static_cast<int64_t>(n_heads) * head_dim + kv_row;
  for (int i = threadIdx.x; i < kv_row; i += blockDim.x) {
    v_cache[dst + i] = from_f32<C>(to_f32(v[i]));
  }
}

// ---- launcher ----------------------------------------------------------------------------

struct Dims {
  int tokens, n_heads, n_kv_heads, head_dim;
  int64_t num_slots;
};

template <typename Act, typename C>
Status launch(const RopeKvWriteArgs& a, const Dims& d, cudaStream_t stream) {
  const int work =
      std::max((d.n_heads + d.n_kv_heads) * (d.head_dim / 2), d.n_kv_heads * d.head_dim);
  const int threads = std::min(kMaxThreads, std::max(32, (work + 31) / 32 * 32));
  rope_kv_write_kernel<Act, C><<<d.tokens, threads, 0, stream>>>(
      static_cast<const Act*>(a.qkv.data), static_cast<const int32_t*>(a.positions.data),
      static_cast<const float*>(a.inv_freq.data), static_cast<const int32_t*>(a.slot_mapping.data),
      static_cast<Act*>(a.q_out.data), static_cast<C*>(a.k_cache.data),
      static_cast<C*>(a.v_cache.data), d.num_slots, d.n_heads, d.n_kv_heads, d.head_dim);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

template <typename Act>
Status dispatch_cache(const RopeKvWriteArgs& a, const Dims& d, cudaStream_t stream) {
  switch (a.k_cache.dtype) {
    case DType::kF32: return launch<Act, float>(a, d, stream);
    case DType::kF16: return launch<Act, __half>(a, d, stream);
    case DType::kBF16: return launch<Act, __nv_bfloat16>(a, d, stream);
    default: return InvalidArgument("rope_kv_write: unsupported cache dtype");
  }
}

Status invalid(const std::string& what) {
  return InvalidArgument("rope_kv_write: " + what);
}

Status check_args(const RopeKvWriteArgs& a) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  PAGODA_RETURN_IF_ERROR(check_rope_heads("rope_kv_write", "q_out", a.q_out));
  const int64_t tokens = a.q_out.shape[0], n_heads = a.q_out.shape[1], head_dim = a.q_out.shape[2];
  if (a.k_cache.ndim != 4 || a.k_cache.shape[0] < 0 || a.k_cache.shape[1] <= 0 ||
      a.k_cache.shape[2] < 0 || a.k_cache.shape[3] != head_dim) {
    return invalid("k_cache must be [num_blocks, block_size, n_kv_heads, " +
                   std::to_string(head_dim) + "], got " + a.k_cache.describe());
  }
  if (!is_float(a.k_cache.dtype)) {
    return invalid("k_cache dtype must be f32, f16 or bf16, got " + a.k_cache.describe());
  }
  const int64_t n_kv_heads = a.k_cache.shape[2];
  if (tokens < 0 || tokens > kIntMax || n_heads < 0 ||
      (n_heads + 2 * n_kv_heads) * head_dim > kIntMax) {
    return invalid("dims out of range (T and (n_heads + 2 n_kv_heads) * head_dim < 2^31), got " +
                   a.q_out.describe() + " and " + a.k_cache.describe());
  }
  const int64_t width = (n_heads + 2 * n_kv_heads) * head_dim;
  if (a.qkv.ndim != 2 || a.qkv.shape[0] != tokens || a.qkv.shape[1] != width ||
      a.qkv.dtype != a.q_out.dtype) {
    return invalid("qkv must be [" + std::to_string(tokens) + ", " + std::to_string(width) +
                   "] ((n_heads + 2 * n_kv_heads) * head_dim) with the dtype of q_out " +
                   a.q_out.describe() + ", got " + a.qkv.describe());
  }
  for (int i = 0; i < 4; ++i) {
    if (a.v_cache.ndim != 4 || a.v_cache.shape[i] != a.k_cache.shape[i] ||
        a.v_cache.dtype != a.k_cache.dtype) {
      return invalid("v_cache must match k_cache " + a.k_cache.describe() + ", got " +
                     a.v_cache.describe());
    }
  }
  PAGODA_RETURN_IF_ERROR(
      check_rope_tables("rope_kv_write", a.positions, a.inv_freq, tokens, head_dim));
  if (a.slot_mapping.ndim != 1 || a.slot_mapping.dtype != DType::kI32 ||
      a.slot_mapping.shape[0] != tokens) {
    return invalid("slot_mapping must be [" + std::to_string(tokens) + "] i32, got " +
                   a.slot_mapping.describe());
  }
  constexpr const char* kOp = "rope_kv_write";
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, "qkv", a.qkv));
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, "positions", a.positions));
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, "inv_freq", a.inv_freq));
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, "slot_mapping", a.slot_mapping));
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, "q_out", a.q_out));
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, "k_cache", a.k_cache));
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, "v_cache", a.v_cache));
  if (tokens == 0 || width == 0) return OkStatus();
  const bool has_cache = a.k_cache.shape[0] > 0 && n_kv_heads > 0;
  if (a.qkv.empty() || a.positions.empty() || a.inv_freq.empty() || a.slot_mapping.empty() ||
      (n_heads > 0 && a.q_out.empty()) || (has_cache && (a.k_cache.empty() || a.v_cache.empty()))) {
    return invalid(
        "qkv, positions, inv_freq, slot_mapping, q_out and the caches need data (got a "
        "null pointer)");
  }
  if (n_heads > 0 && overlaps(a.q_out, a.qkv)) return invalid("q_out must not overlap qkv");
  if (has_cache) {
    if (overlaps(a.k_cache, a.v_cache)) return invalid("k_cache must not overlap v_cache");
    for (const TensorView* cache : {&a.k_cache, &a.v_cache}) {
      if (overlaps(*cache, a.qkv) || (n_heads > 0 && overlaps(*cache, a.q_out))) {
        return invalid("the caches must not overlap qkv or q_out");
      }
    }
  }
  return OkStatus();
}

}  // namespace

Status rope_kv_write_cuda(const RopeKvWriteArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const Dims d{static_cast<int>(a.q_out.shape[0]), static_cast<int>(a.q_out.shape[1]),
               static_cast<int>(a.k_cache.shape[2]), static_cast<int>(a.q_out.shape[2]),
               a.k_cache.shape[0] * a.k_cache.shape[1]};
  if (d.tokens == 0 || (d.n_heads + 2 * d.n_kv_heads) == 0) return OkStatus();
  switch (a.qkv.dtype) {
    case DType::kF32: return dispatch_cache<float>(a, d, stream);
    case DType::kBF16: return dispatch_cache<__nv_bfloat16>(a, d, stream);
    default: return invalid("unsupported activation dtype");
  }
}

}  // namespace pagoda::cuda
