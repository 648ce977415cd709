// Helpers every kernel file shares: scalar conversions on the device (all arithmetic is f32)
// and the argument checks the launchers make on the host. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "core/status.h"
#include "core/tensor.h"

namespace pagoda::cuda {

__device__ __forceinline__ float to_f32(float v) {
  return v;
}
__device__ __forceinline__ float to_f32(__half v) {
  return __half2float(v);
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// Round-to-nearest-even narrowing, as on the CPU (core/dtype.h). __forceinline__ implies
// inline, so these may be defined in every file that includes this header.
template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// InvalidArgument "<op>: <name> must be on the cuda device, got ..." unless t is on the GPU.
inline Status check_on_cuda(const char* op, const char* name, const TensorView& t) {
  if (t.device != Device::kCuda) {
    return InvalidArgument(std::string(op) + ": " + name + " must be on the cuda device, got " +
                           t.describe() + " on the cpu");
  }
  return OkStatus();
}

// Whether the bytes of a and b overlap at all.
inline bool overlaps(const TensorView& a, const TensorView& b) {
  const auto* a0 = static_cast<const char*>(a.data);
  const auto* b0 = static_cast<const char*>(b.data);
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

inline bool is_float(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

// A (value, id) pair in the samplers' order (argmax, logprobs): larger value first, lower id
// among equal values; id kNoId marks "none seen" and comes after everything.
inline constexpr int32_t kNoId = 2147483647;
struct ValueId {
  float value;
  int32_t id;
};
__device__ __forceinline__ bool precedes(ValueId a, ValueId b) {
  if (a.id == kNoId) return false;
  if (b.id == kNoId) return true;
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

// RoPE's argument checks that rope.cu and rope_kv_write.cu share: `q` (named `name`) is
// [T, n_heads, head_dim], f32 or bf16, with an even head_dim > 0 ...
inline Status check_rope_heads(const char* op, const char* name, const TensorView& q) {
  const std::string prefix = std::string(op) + ": " + name;
  if (q.ndim != 3)
    return InvalidArgument(prefix + " must be [T, n_heads, head_dim], got " + q.describe());
  if (q.dtype != DType::kF32 && q.dtype != DType::kBF16)
    return InvalidArgument(prefix + " dtype must be f32 or bf16, got " + q.describe());
  if (q.shape[2] <= 0 || q.shape[2] % 2 != 0)
    return InvalidArgument(prefix + " head_dim must be even and > 0, got " + q.describe());
  return OkStatus();
}

// ... and positions [T] i32, inv_freq [head_dim / 2] f32.
inline Status check_rope_tables(const char* op, const TensorView& positions,
                                const TensorView& inv_freq, int64_t tokens, int64_t head_dim) {
  if (positions.ndim != 1 || positions.dtype != DType::kI32 || positions.shape[0] != tokens) {
    return InvalidArgument(std::string(op) + ": positions must be [" + std::to_string(tokens) +
                           "] i32, got " + positions.describe());
  }
  if (inv_freq.ndim != 1 || inv_freq.dtype != DType::kF32 || inv_freq.shape[0] != head_dim / 2) {
    return InvalidArgument(std::string(op) + ": inv_freq must be [" + std::to_string(head_dim / 2) +
                           "] f32 (head_dim / 2), got " + inv_freq.describe());
  }
  return OkStatus();
}

}  // namespace pagoda::cuda
