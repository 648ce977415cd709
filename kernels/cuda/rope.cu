// rope.cu: rotary position embedding, rotate-half layout, in place on q and k (RopeArgs in
// kernels/ops.h).
//
// Math, for each token t, head h, i in [0, d/2)   (d = head_dim, p = positions[t]):
//   a  = f32(p) * inv_freq[i]                 -- an f32 product, rounded once (__fmul_rn)
//   c, s = cosf(a), sinf(a)                   -- accurate sincosf, never the fast intrinsics
//   x0 = f32(x[i]), x1 = f32(x[i + d/2])
//   x[i]       = act(fmaf(x0, c, -(x1 * s)))  -- one explicit FMA each, the product rounded
//   x[i + d/2] = act(fmaf(x1, c,   x0 * s))      first (__fmul_rn), exactly as kernels/cpu/rope.cc
// This mirrors the CPU twin operation by operation, so f32 results differ from it only by the
// last-ulp difference between CUDA's sincosf (<= 2 ulp) and the host libm.
// Layout: q [T, n_heads, d], k [T, n_kv_heads, d] row-major in the activation dtype (f32 or
// bf16); positions [T] i32 and inv_freq [d/2] f32 in device memory.
//
// Parallel plan: one block per token; thread j handles pair (h, i) = (j / (d/2), j % (d/2)) of
// the token's (n_heads + n_kv_heads) * d/2 pairs, q heads first, striding by blockDim.x. Each
// pair is read and written by one thread, so in-place is safe. The angle is recomputed per head
// (cheap next to the memory traffic and keeps the kernel free of shared memory).
// positions live on the device: the launcher cannot reject negative ones as the CPU twin does;
// the kernel rotates by whatever angle the position gives.
#include <cuda_bf16.h>
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

// Rotates pair i of the head starting at x.
template <typename Act>
__device__ __forceinline__ void rotate_pair(Act* x, int half, int i, float c, float s) {
  const float x0 = to_f32(x[i]);
  const float x1 = to_f32(x[i + half]);
  x[i] = from_f32<Act>(fmaf(x0, c, -__fmul_rn(x1, s)));
  x[i + half] = from_f32<Act>(fmaf(x1, c, __fmul_rn(x0, s)));
}

// grid: [T], block: [threads].
template <typename Act>
__global__ void __launch_bounds__(kMaxThreads)
    rope_kernel(Act* q, Act* k, const int32_t* positions, const float* inv_freq, int n_heads,
                int n_kv_heads, int head_dim) {
  const int half = head_dim / 2;
  const int64_t t = blockIdx.x;
  const float p = __int2float_rn(positions[t]);
  Act* q_row = q + t * n_heads * head_dim;
  Act* k_row = k + t * n_kv_heads * head_dim;
  const int q_pairs = n_heads * half;
  const int pairs = (n_heads + n_kv_heads) * half;
  for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
    const bool is_q = j < q_pairs;
    const int jj = is_q ? j : j - q_pairs;
    const int h = jj / half, i = jj % half;
    float s, c;
    sincosf(__fmul_rn(p, inv_freq[i]), &s, &c);
    rotate_pair((is_q ? q_row : k_row) + static_cast<int64_t>(h) * head_dim, half, i, c, s);
  }
}

// ---- launcher ----------------------------------------------------------------------------

template <typename Act>
Status launch(const RopeArgs& a, int tokens, int n_heads, int n_kv_heads, int head_dim,
              cudaStream_t stream) {
  const int pairs = (n_heads + n_kv_heads) * (head_dim / 2);
  const int threads = std::min(kMaxThreads, std::max(32, (pairs + 31) / 32 * 32));
  rope_kernel<Act><<<tokens, threads, 0, stream>>>(
      static_cast<Act*>(a.q.data), static_cast<Act*>(a.k.data),
      static_cast<const int32_t*>(a.positions.data), static_cast<const float*>(a.inv_freq.data),
      n_heads, n_kv_heads, head_dim);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

Status check_args(const RopeArgs& a) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  PAGODA_RETURN_IF_ERROR(check_rope_heads("rope", "q", a.q));
  const int64_t tokens = a.q.shape[0], n_heads = a.q.shape[1], head_dim = a.q.shape[2];
  if (a.k.ndim != 3 || a.k.shape[0] != tokens || a.k.shape[2] != head_dim ||
      a.k.dtype != a.q.dtype) {
    return InvalidArgument("rope: k must be [" + std::to_string(tokens) + ", n_kv_heads, " +
                           std::to_string(head_dim) + "] with the dtype of q " + a.q.describe() +
                           ", got " + a.k.describe());
  }
  const int64_t n_kv_heads = a.k.shape[1];
  if (tokens < 0 || tokens > kIntMax || n_heads < 0 || n_kv_heads < 0 ||
      (n_heads + n_kv_heads) * (head_dim / 2) > kIntMax) {
    return InvalidArgument("rope: q/k dims out of range (T and heads * head_dim / 2 < 2^31), got " +
                           a.q.describe() + " and " + a.k.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_rope_tables("rope", a.positions, a.inv_freq, tokens, head_dim));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("rope", "q", a.q));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("rope", "k", a.k));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("rope", "positions", a.positions));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("rope", "inv_freq", a.inv_freq));
  if (tokens == 0 || n_heads + n_kv_heads == 0) return OkStatus();
  if ((n_heads > 0 && a.q.empty()) || (n_kv_heads > 0 && a.k.empty()) || a.positions.empty() ||
      a.inv_freq.empty()) {
    return InvalidArgument("rope: q, k, positions and inv_freq need data (got a null pointer)");
  }
  if (n_heads > 0 && n_kv_heads > 0 && overlaps(a.q, a.k)) {
    return InvalidArgument("rope: q must not overlap k");
  }
  return OkStatus();
}

}  // namespace

Status rope_cuda(const RopeArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int tokens = static_cast<int>(a.q.shape[0]);
  const int n_heads = static_cast<int>(a.q.shape[1]);
  const int n_kv_heads = static_cast<int>(a.k.shape[1]);
  const int head_dim = static_cast<int>(a.q.shape[2]);
  if (tokens == 0 || n_heads + n_kv_heads == 0) return OkStatus();
  switch (a.q.dtype) {
    case DType::kF32: return launch<float>(a, tokens, n_heads, n_kv_heads, head_dim, stream);
    case DType::kBF16:
      return launch<__nv_bfloat16>(a, tokens, n_heads, n_kv_heads, head_dim, stream);
    default: return InvalidArgument("rope: unsupported activation dtype");
  }
}

}  // namespace pagoda::cuda
