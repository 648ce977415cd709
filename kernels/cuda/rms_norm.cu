// rms_norm.cu: RMSNorm with an optional fused residual add (RmsNormArgs in kernels/ops.h).
//
// Math, per row t, in f32 (values are rounded to the activation dtype only where stored):
//   with residual:    r[t, i] = act(residual[t, i] + input[t, i]), written back to residual
//   without residual: r[t, i] = input[t, i]
//   inv_rms[t] = 1 / sqrt(sum_i r[t, i]^2 / dim + eps)
//   out[t, i]  = act(r[t, i] * inv_rms[t] * weight[i])
// Layout: input, residual, out [T, dim] row-major in the activation dtype (f32 or bf16);
// weight [dim] in f32, f16 or bf16.
//
// Parallel plan: one block per row. Pass 1: each thread strides over the row in vectors of
// kVec elements (16-byte activation accesses when every pointer is aligned and dim % kVec == 0,
// else kVec = 1), adds and stores the residual, and accumulates its sum of squares; the block
// reduces the partial sums with warp shuffles, then one f32 per warp through shared memory.
// Pass 2: each thread re-reads the elements it touched in pass 1 (L1/L2-resident) and writes
// out. The block size depends only on dim, so a row's reduction order does not depend on T:
// batch invariance. out may alias input: all pass-1 reads happen before the reduction's
// barrier, and in pass 2 each element is read and then written by the same thread.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxThreads = 1024;
constexpr int kVecBytes = 16;  // activation bytes per vector access

// kN elements moved as one aligned access (a 32-byte Vec becomes two 16-byte accesses).
template <typename T, int kN>
struct alignas(sizeof(T) * kN) Vec {
  T v[kN];
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum of v over the block; blockDim.x is a multiple of 32. Every thread gets the total.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[kMaxThreads / kWarpSize];
  __shared__ float total;
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x / kWarpSize;
    float s = lane < n_warps ? warp_sums[lane] : 0.0f;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// grid: [T], block: [threads]. Pointers are row-major [T, dim] (weight [dim]); when kVec > 1 each
// is aligned to kVec elements and dim % kVec == 0.
template <typename Act, typename W, bool kResidual, int kVec>
__global__ void __launch_bounds__(kMaxThreads)
    rms_norm_kernel(const Act* input, Act* residual, const W* weight, Act* out, int dim,
                    float eps) {
  using ActVec = Vec<Act, kVec>;
  using WVec = Vec<W, kVec>;
  const int64_t row_offset = static_cast<int64_t>(blockIdx.x) * dim;
  const int n_vec = dim / kVec;
  const ActVec* in_row = reinterpret_cast<const ActVec*>(input + row_offset);
  ActVec* res_row = kResidual ? reinterpret_cast<ActVec*>(residual + row_offset) : nullptr;

  // Pass 1: residual add, sum of squares.
  float sum_sq = 0.0f;
  for (unsigned i = threadIdx.x; i < static_cast<unsigned>(n_vec); i += blockDim.x) {
    ActVec x = in_row[i];
    if constexpr (kResidual) {
      ActVec r = res_row[i];
#pragma unroll
      for (int j = 0; j < kVec; ++j) r.v[j] = from_f32<Act>(to_f32(r.v[j]) + to_f32(x.v[j]));
      res_row[i] = r;
      x = r;
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float f = to_f32(x.v[j]);
      sum_sq += f * f;
    }
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq) / static_cast<float>(dim) + eps);

  // Pass 2: normalize and scale.
  const ActVec* src = kResidual ? res_row : in_row;
  const WVec* w = reinterpret_cast<const WVec*>(weight);
  ActVec* out_row = reinterpret_cast<ActVec*>(out + row_offset);
  for (unsigned i = threadIdx.x; i < static_cast<unsigned>(n_vec); i += blockDim.x) {
    const ActVec x = src[i];
    const WVec wv = w[i];
    ActVec o;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      o.v[j] = from_f32<Act>(to_f32(x.v[j]) * inv_rms * to_f32(wv.v[j]));
    }
    out_row[i] = o;
  }
}

// ---- launcher ----------------------------------------------------------------------------

bool is_aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// True if the byte ranges of a and b intersect.
template <typename Act, typename W, int kVec>
void launch(const RmsNormArgs& a, int rows, int dim, cudaStream_t stream) {
  const int n_vec = dim / kVec;
  const int threads =
      std::min(kMaxThreads, std::max(kWarpSize, (n_vec + kWarpSize - 1) / kWarpSize * kWarpSize));
  const auto* input = static_cast<const Act*>(a.input.data);
  auto* residual = static_cast<Act*>(a.residual.data);
  const auto* weight = static_cast<const W*>(a.weight.data);
  auto* out = static_cast<Act*>(a.out.data);
  if (a.residual.empty()) {
    rms_norm_kernel<Act, W, false, kVec>
        <<<rows, threads, 0, stream>>>(input, residual, weight, out, dim, a.eps);
  } else {
    rms_norm_kernel<Act, W, true, kVec>
        <<<rows, threads, 0, stream>>>(input, residual, weight, out, dim, a.eps);
  }
}

template <typename Act, typename W>
Status dispatch_vec(const RmsNormArgs& a, int rows, int dim, cudaStream_t stream) {
  constexpr int kVec = kVecBytes / sizeof(Act);
  const bool vectorizable =
      dim % kVec == 0 && is_aligned(a.input.data, sizeof(Act) * kVec) &&
      is_aligned(a.out.data, sizeof(Act) * kVec) &&
      (a.residual.empty() || is_aligned(a.residual.data, sizeof(Act) * kVec)) &&
      is_aligned(a.weight.data, sizeof(W) * kVec);
  if (vectorizable) {
    launch<Act, W, kVec>(a, rows, dim, stream);
  } else {
    launch<Act, W, 1>(a, rows, dim, stream);
  }
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

template <typename Act>
Status dispatch_weight(const RmsNormArgs& a, int rows, int dim, cudaStream_t stream) {
  switch (a.weight.dtype) {
    case DType::kF32: return dispatch_vec<Act, float>(a, rows, dim, stream);
    case DType::kF16: return dispatch_vec<Act, __half>(a, rows, dim, stream);
    case DType::kBF16: return dispatch_vec<Act, __nv_bfloat16>(a, rows, dim, stream);
    default: return InvalidArgument("rms_norm: unsupported weight dtype");
  }
}

Status check_args(const RmsNormArgs& a) {
  const bool has_residual = !a.residual.empty();
  if (a.input.ndim != 2) {
    return InvalidArgument("rms_norm: input must be [T, dim], got " + a.input.describe());
  }
  const int64_t rows = a.input.shape[0];
  const int64_t dim = a.input.shape[1];
  if (dim <= 0 || dim > std::numeric_limits<int>::max() || rows > std::numeric_limits<int>::max()) {
    return InvalidArgument("rms_norm: input dims out of range (dim in [1, 2^31), T < 2^31), got " +
                           a.input.describe());
  }
  if (a.input.dtype != DType::kF32 && a.input.dtype != DType::kBF16) {
    return InvalidArgument("rms_norm: input dtype must be f32 or bf16, got " + a.input.describe());
  }
  if (a.out.ndim != 2 || a.out.shape[0] != rows || a.out.shape[1] != dim ||
      a.out.dtype != a.input.dtype) {
    return InvalidArgument("rms_norm: out must match input " + a.input.describe() + ", got " +
                           a.out.describe());
  }
  if (has_residual && (a.residual.ndim != 2 || a.residual.shape[0] != rows ||
                       a.residual.shape[1] != dim || a.residual.dtype != a.input.dtype)) {
    return InvalidArgument("rms_norm: residual must match input " + a.input.describe() + ", got " +
                           a.residual.describe());
  }
  if (a.weight.ndim != 1 || a.weight.shape[0] != dim) {
    return InvalidArgument("rms_norm: weight must be [" + std::to_string(dim) + "], got " +
                           a.weight.describe());
  }
  if (a.weight.dtype != DType::kF32 && a.weight.dtype != DType::kF16 &&
      a.weight.dtype != DType::kBF16) {
    return InvalidArgument("rms_norm: weight dtype must be f32, f16 or bf16, got " +
                           a.weight.describe());
  }
  if (!std::isfinite(a.eps) || a.eps < 0.0f) {
    return InvalidArgument("rms_norm: eps must be finite and >= 0, got " + std::to_string(a.eps));
  }
  PAGODA_RETURN_IF_ERROR(check_on_cuda("rms_norm", "input", a.input));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("rms_norm", "weight", a.weight));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("rms_norm", "out", a.out));
  if (has_residual) PAGODA_RETURN_IF_ERROR(check_on_cuda("rms_norm", "residual", a.residual));
  if (rows == 0) return OkStatus();
  if (a.input.empty() || a.out.empty() || a.weight.empty()) {
    return InvalidArgument("rms_norm: input, weight and out need data (got a null pointer)");
  }
  if (a.out.data != a.input.data && overlaps(a.out, a.input)) {
    return InvalidArgument("rms_norm: out must be input itself or not overlap it");
  }
  if (has_residual) {
    if (overlaps(a.out, a.residual)) {
      return InvalidArgument("rms_norm: out must not overlap residual");
    }
    // As the CPU twin: residual == input would add the row to itself (RmsNormArgs: out may
    // alias input, not residual).
    if (overlaps(a.residual, a.input)) {
      return InvalidArgument("rms_norm: residual must not overlap input");
    }
  }
  return OkStatus();
}

}  // namespace

Status rms_norm_cuda(const RmsNormArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int rows = static_cast<int>(a.input.shape[0]);
  const int dim = static_cast<int>(a.input.shape[1]);
  if (rows == 0) return OkStatus();
  switch (a.input.dtype) {
    case DType::kF32: return dispatch_weight<float>(a, rows, dim, stream);
    case DType::kBF16: return dispatch_weight<__nv_bfloat16>(a, rows, dim, stream);
    default: return InvalidArgument("rms_norm: unsupported activation dtype");
  }
}

}  // namespace pagoda::cuda
