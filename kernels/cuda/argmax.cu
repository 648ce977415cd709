// argmax.cu: row argmax (ArgmaxArgs in kernels/ops.h), the greedy choice on the device so that
// greedy rows copy back one id instead of a row of vocab floats.
//
// Math: out[r] = the lowest i with logits[r, i] == max_j logits[r, j], comparing with == (so
// -0 and +0 are equal), NaN counting as -inf; 0 when every value is -inf or NaN. This is the
// engine sampler's greedy rule (engine/sampler.cc) and the CPU twin's, exactly: a max and a
// lowest index do not depend on the order of the reduction.
// Layout: logits [R, vocab] f32 row-major, out [R] i32, both on the device.
//
// Parallel plan: one block per row; each thread scans a strided slice keeping (best value,
// lowest index), then a warp-shuffle and shared-memory reduction combines pairs by (larger
// value, then lower index).
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
using Best = ValueId;  // id kNoId: no value above -inf seen

__device__ __forceinline__ Best warp_best(Best v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    Best other;
    other.value = __shfl_down_sync(0xffffffffu, v.value, offset);
    other.id = __shfl_down_sync(0xffffffffu, v.id, offset);
    if (precedes(other, v)) v = other;
  }
  return v;
}

// grid: [R], block: [kThreads].
__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* logits, int32_t* out, int vocab) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  Best mine{-INFINITY, kNoId};
  // Unsigned: i + kThreads cannot overflow for vocab up to 2^31 - 1.
  for (unsigned i = threadIdx.x; i < static_cast<unsigned>(vocab); i += kThreads) {
    const float x = row[i];
    // NaN and -inf never win; increasing i: lowest first.
    if (x > mine.value) mine = Best{x, static_cast<int32_t>(i)};
  }
  __shared__ float values[kWarps];
  __shared__ int32_t indices[kWarps];
  mine = warp_best(mine);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    values[warp] = mine.value;
    indices[warp] = mine.id;
  }
  __syncthreads();
  if (warp == 0) {
    Best v = lane < kWarps ? Best{values[lane], indices[lane]} : Best{-INFINITY, kNoId};
    v = warp_best(v);
    if (lane == 0) out[blockIdx.x] = v.id == kNoId ? 0 : v.id;
  }
}

// ---- launcher ----------------------------------------------------------------------------

Status check_args(const ArgmaxArgs& a) {
  if (a.logits.ndim != 2 || a.logits.dtype != DType::kF32) {
    return InvalidArgument("argmax: logits must be [R, vocab] f32, got " + a.logits.describe());
  }
  const int64_t rows = a.logits.shape[0], vocab = a.logits.shape[1];
  if (rows < 0 || rows > std::numeric_limits<int>::max() || vocab < 0 ||
      vocab >= std::numeric_limits<int32_t>::max()) {
    return InvalidArgument("argmax: logits dims out of range, got " + a.logits.describe());
  }
  if (rows > 0 && vocab == 0) return InvalidArgument("argmax: logits has rows of length 0");
  if (a.out.ndim != 1 || a.out.dtype != DType::kI32 || a.out.shape[0] != rows) {
    return InvalidArgument("argmax: out must be [" + std::to_string(rows) + "] i32, got " +
                           a.out.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_on_cuda("argmax", "logits", a.logits));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("argmax", "out", a.out));
  if (rows == 0) return OkStatus();
  if (a.logits.empty() || a.out.empty()) {
    return InvalidArgument("argmax: logits and out need data (got a null pointer)");
  }
  if (overlaps(a.out, a.logits)) return InvalidArgument("argmax: out must not overlap logits");
  return OkStatus();
}

}  // namespace

Status argmax_cuda(const ArgmaxArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int rows = static_cast<int>(a.logits.shape[0]);
  if (rows == 0) return OkStatus();
  argmax_kernel<<<rows, kThreads, 0, stream>>>(static_cast<const float*>(a.logits.data),
                                               static_cast<int32_t*>(a.out.data),
                                               static_cast<int>(a.logits.shape[1]));
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

}  // namespace pagoda::cuda
