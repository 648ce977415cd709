// kv_write.cu: writes each new token's K and V into the paged cache (KvWriteArgs in
// kernels/ops.h).
//
// Math: for each token t with slot = slot_mapping[t] >= 0,
//   k_cache[slot / block_size, slot % block_size, h, i] = cache(k[t, h, i])   (same for v)
// i.e. row `slot` of a cache viewed as [num_blocks * block_size, n_kv_heads * head_dim]. The
// value goes through f32 and is rounded once to the cache dtype (round-to-nearest-even; exact
// when the cache is at least as wide as the activations), as in kernels/cpu/kv_write.cc.
// Layout: k, v [T, n_kv_heads, head_dim] in the activation dtype (f32 or bf16); slot_mapping [T]
// i32 on the device; k_cache, v_cache [num_blocks, block_size, n_kv_heads, head_dim] in f32, f16
// or bf16 (both the same).
//
// Parallel plan: one block per token, threads stride over the row of n_kv_heads * head_dim
// elements, copying K and V. Slots of one call must be distinct (else which token wins is not
// defined). slot_mapping lives on the device, so the launcher cannot reject a slot beyond the
// cache as the CPU twin does: the kernel skips it (like a negative slot) instead of writing out
// of bounds.
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

// grid: [T], block: [threads]. row = n_kv_heads * head_dim.
template <typename Act, typename C>
__global__ void __launch_bounds__(kMaxThreads)
    kv_write_kernel(const Act* k, const Act* v, const int32_t* slot_mapping, C* k_cache, C* v_cache,
                    int64_t num_slots, int row) {
  const int32_t slot = slot_mapping[blockIdx.x];
  if (slot < 0 || slot >= num_slots) return;  // padding (or a slot the host could not check)
  const int64_t src = static_cast<int64_t>(blockIdx.x) * row;
  const int64_t dst = static_cast<int64_t>(slot) * row;
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    k_cache[dst + i] = from_f32<C>(to_f32(k[src + i]));
    v_cache[dst + i] = from_f32<C>(to_f32(v[src + i]));
  }
}

// ---- launcher ----------------------------------------------------------------------------

template <typename Act, typename C>
Status launch(const KvWriteArgs& a, int tokens, int row, int64_t num_slots, cudaStream_t stream) {
  const int threads = std::min(kMaxThreads, std::max(32, (row + 31) / 32 * 32));
  kv_write_kernel<Act, C><<<tokens, threads, 0, stream>>>(
      static_cast<const Act*>(a.k.data), static_cast<const Act*>(a.v.data),
      static_cast<const int32_t*>(a.slot_mapping.data), static_cast<C*>(a.k_cache.data),
      static_cast<C*>(a.v_cache.data), num_slots, row);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

template <typename Act>
Status dispatch_cache(const KvWriteArgs& a, int tokens, int row, int64_t num_slots,
                      cudaStream_t stream) {
  switch (a.k_cache.dtype) {
    case DType::kF32: return launch<Act, float>(a, tokens, row, num_slots, stream);
    case DType::kF16: return launch<Act, __half>(a, tokens, row, num_slots, stream);
    case DType::kBF16: return launch<Act, __nv_bfloat16>(a, tokens, row, num_slots, stream);
    default: return InvalidArgument("kv_write: unsupported cache dtype");
  }
}

Status check_args(const KvWriteArgs& a) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (a.k.ndim != 3) {
    return InvalidArgument("kv_write: k must be [T, n_kv_heads, head_dim], got " + a.k.describe());
  }
  if (a.k.dtype != DType::kF32 && a.k.dtype != DType::kBF16) {
    return InvalidArgument("kv_write: k dtype must be f32 or bf16, got " + a.k.describe());
  }
  const int64_t tokens = a.k.shape[0], n_kv_heads = a.k.shape[1], head_dim = a.k.shape[2];
  if (tokens < 0 || tokens > kIntMax || n_kv_heads <= 0 || head_dim <= 0 ||
      n_kv_heads * head_dim > kIntMax) {
    return InvalidArgument(
        "kv_write: k dims out of range (T < 2^31, n_kv_heads * head_dim in "
        "[1, 2^31)), got " +
        a.k.describe());
  }
  if (a.v.ndim != 3 || a.v.shape[0] != tokens || a.v.shape[1] != n_kv_heads ||
      a.v.shape[2] != head_dim || a.v.dtype != a.k.dtype) {
    return InvalidArgument("kv_write: v must match k " + a.k.describe() + ", got " +
                           a.v.describe());
  }
  if (a.slot_mapping.ndim != 1 || a.slot_mapping.dtype != DType::kI32 ||
      a.slot_mapping.shape[0] != tokens) {
    return InvalidArgument("kv_write: slot_mapping must be [" + std::to_string(tokens) +
                           "] i32, got " + a.slot_mapping.describe());
  }
  if (a.k_cache.ndim != 4 || a.k_cache.shape[0] < 0 || a.k_cache.shape[1] <= 0 ||
      a.k_cache.shape[2] != n_kv_heads || a.k_cache.shape[3] != head_dim) {
    return InvalidArgument("kv_write: k_cache must be [num_blocks, block_size, " +
                           std::to_string(n_kv_heads) + ", " + std::to_string(head_dim) +
                           "], got " + a.k_cache.describe());
  }
  if (a.k_cache.dtype != DType::kF32 && a.k_cache.dtype != DType::kF16 &&
      a.k_cache.dtype != DType::kBF16) {
    return InvalidArgument("kv_write: k_cache dtype must be f32, f16 or bf16, got " +
                           a.k_cache.describe());
  }
  for (int i = 0; i < 4; ++i) {
    if (a.v_cache.ndim != 4 || a.v_cache.shape[i] != a.k_cache.shape[i] ||
        a.v_cache.dtype != a.k_cache.dtype) {
      return InvalidArgument("kv_write: v_cache must match k_cache " + a.k_cache.describe() +
                             ", got " + a.v_cache.describe());
    }
  }
  PAGODA_RETURN_IF_ERROR(check_on_cuda("kv_write", "k", a.k));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("kv_write", "v", a.v));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("kv_write", "slot_mapping", a.slot_mapping));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("kv_write", "k_cache", a.k_cache));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("kv_write", "v_cache", a.v_cache));
  if (tokens == 0) return OkStatus();
  if (a.k.empty() || a.v.empty() || a.slot_mapping.empty() ||
      (a.k_cache.shape[0] > 0 && (a.k_cache.empty() || a.v_cache.empty()))) {
    return InvalidArgument(
        "kv_write: k, v, slot_mapping and the caches need data (got a null "
        "pointer)");
  }
  if (a.k_cache.shape[0] > 0) {
    if (overlaps(a.k_cache, a.v_cache)) {
      return InvalidArgument("kv_write: k_cache must not overlap v_cache");
    }
    for (const TensorView* src : {&a.k, &a.v}) {
      if (overlaps(*src, a.k_cache) || overlaps(*src, a.v_cache)) {
        return InvalidArgument("kv_write: k and v must not overlap the caches");
      }
    }
  }
  return OkStatus();
}

}  // namespace

Status kv_write_cuda(const KvWriteArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int tokens = static_cast<int>(a.k.shape[0]);
  const int row = static_cast<int>(a.k.shape[1] * a.k.shape[2]);
  const int64_t num_slots = a.k_cache.shape[0] * a.k_cache.shape[1];
  if (tokens == 0 || num_slots == 0) return OkStatus();  // nothing can be written
  switch (a.k.dtype) {
    case DType::kF32: return dispatch_cache<float>(a, tokens, row, num_slots, stream);
    case DType::kBF16: return dispatch_cache<__nv_bfloat16>(a, tokens, row, num_slots, stream);
    default: return InvalidArgument("kv_write: unsupported activation dtype");
  }
}

}  // namespace pagoda::cuda
