// gather_rows.cu: row gather (GatherRowsArgs in kernels/ops.h), e.g. each sequence's last row
// before the LM head.
//
// Math: out[r, i] = src[rows[r], i] -- a plain copy, bit for bit.
// Layout: src [T, dim] and out [R, dim] row-major in the activation dtype (f32 or bf16, the
// same); rows [R] i32 on the device. out must not overlap src.
//
// Parallel plan: one block per output row, threads stride over dim; the element type is only
// its size (4 or 2 bytes), since nothing is converted. rows live on the device, so the launcher
// cannot range-check them as the CPU twin does: a row index outside [0, T) makes the kernel
// write a row of NaN instead of reading out of bounds.
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

// NaN bit patterns of the two element widths (f32 and bf16).
template <typename Bits>
__device__ __forceinline__ Bits nan_bits();
template <>
__device__ __forceinline__ uint32_t nan_bits<uint32_t>() {
  return 0x7fc00000u;
}
template <>
__device__ __forceinline__ uint16_t nan_bits<uint16_t>() {
  return 0x7fc0u;
}

// grid: [R], block: [threads].
template <typename Bits>
__global__ void __launch_bounds__(kMaxThreads)
    gather_rows_kernel(const Bits* src, const int32_t* rows, Bits* out, int64_t num_src, int dim) {
  const int32_t r = rows[blockIdx.x];
  Bits* out_row = out + static_cast<int64_t>(blockIdx.x) * dim;
  if (r < 0 || r >= num_src) {
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out_row[i] = nan_bits<Bits>();
    return;
  }
  const Bits* src_row = src + static_cast<int64_t>(r) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out_row[i] = src_row[i];
}

// ---- launcher ----------------------------------------------------------------------------

template <typename Bits>
Status launch(const GatherRowsArgs& a, int num_rows, int dim, cudaStream_t stream) {
  const int threads = std::min(kMaxThreads, std::max(32, (dim + 31) / 32 * 32));
  gather_rows_kernel<Bits><<<num_rows, threads, 0, stream>>>(
      static_cast<const Bits*>(a.src.data), static_cast<const int32_t*>(a.rows.data),
      static_cast<Bits*>(a.out.data), a.src.shape[0], dim);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

Status check_args(const GatherRowsArgs& a) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (a.src.ndim != 2) {
    return InvalidArgument("gather_rows: src must be [T, dim], got " + a.src.describe());
  }
  if (a.src.dtype != DType::kF32 && a.src.dtype != DType::kBF16) {
    return InvalidArgument("gather_rows: src dtype must be f32 or bf16, got " + a.src.describe());
  }
  const int64_t num_src = a.src.shape[0], dim = a.src.shape[1];
  if (num_src < 0 || dim <= 0 || dim > kIntMax) {
    return InvalidArgument("gather_rows: src dims out of range (dim in [1, 2^31)), got " +
                           a.src.describe());
  }
  if (a.rows.ndim != 1 || a.rows.dtype != DType::kI32) {
    return InvalidArgument("gather_rows: rows must be [R] i32, got " + a.rows.describe());
  }
  const int64_t num_rows = a.rows.shape[0];
  if (num_rows < 0 || num_rows > kIntMax) {
    return InvalidArgument("gather_rows: rows length out of range, got " + a.rows.describe());
  }
  if (a.out.ndim != 2 || a.out.shape[0] != num_rows || a.out.shape[1] != dim ||
      a.out.dtype != a.src.dtype) {
    return InvalidArgument("gather_rows: out must be [" + std::to_string(num_rows) + ", " +
                           std::to_string(dim) + "] " + dtype_name(a.src.dtype) + ", got " +
                           a.out.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_on_cuda("gather_rows", "src", a.src));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("gather_rows", "rows", a.rows));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("gather_rows", "out", a.out));
  if (num_rows == 0) return OkStatus();
  if (num_src == 0) {
    return InvalidArgument("gather_rows: rows is not empty but src has no rows (T = 0)");
  }
  if (a.src.empty() || a.rows.empty() || a.out.empty()) {
    return InvalidArgument("gather_rows: src, rows and out need data (got a null pointer)");
  }
  if (overlaps(a.out, a.src)) return InvalidArgument("gather_rows: out must not overlap src");
  if (overlaps(a.out, a.rows)) return InvalidArgument("gather_rows: out must not overlap rows");
  return OkStatus();
}

}  // namespace

Status gather_rows_cuda(const GatherRowsArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int num_rows = static_cast<int>(a.rows.shape[0]);
  const int dim = static_cast<int>(a.src.shape[1]);
  if (num_rows == 0) return OkStatus();
  switch (a.src.dtype) {
    case DType::kF32: return launch<uint32_t>(a, num_rows, dim, stream);
    case DType::kBF16: return launch<uint16_t>(a, num_rows, dim, stream);
    default: return InvalidArgument("gather_rows: unsupported activation dtype");
  }
}

}  // namespace pagoda::cuda
