// embedding.cu: embedding gather (EmbeddingArgs in kernels/ops.h).
//
// Math: out[t, i] = act(table[token_ids[t], i]) -- a copy, widened to f32 and rounded once to
// the activation dtype (exact for f32 out; round-to-nearest-even for bf16 out).
// Layout: table [vocab, dim] row-major in f32, f16 or bf16; token_ids [T] i32 on the device;
// out [T, dim] row-major in the activation dtype (f32 or bf16).
//
// Parallel plan: one block per token, threads stride over dim (coalesced row copy).
// The ids live in device memory, so the launcher cannot range-check them as the CPU twin does:
// a kernel that meets an id outside [0, vocab) reads nothing and writes a row of NaN instead,
// which poisons everything downstream visibly rather than reading out of bounds.
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
template <typename W, typename Act>
__global__ void __launch_bounds__(kMaxThreads)
    embedding_kernel(const W* table, const int32_t* token_ids, Act* out, int64_t vocab, int dim) {
  const int32_t id = token_ids[blockIdx.x];
  Act* out_row = out + static_cast<int64_t>(blockIdx.x) * dim;
  if (id < 0 || id >= vocab) {
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
      out_row[i] = from_f32<Act>(__int_as_float(0x7fffffff));
    return;
  }
  const W* row = table + static_cast<int64_t>(id) * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out_row[i] = from_f32<Act>(to_f32(row[i]));
}

// ---- launcher ----------------------------------------------------------------------------

template <typename W, typename Act>
Status launch(const EmbeddingArgs& a, int tokens, int dim, cudaStream_t stream) {
  const int threads = std::min(kMaxThreads, std::max(32, (dim + 31) / 32 * 32));
  embedding_kernel<W, Act><<<tokens, threads, 0, stream>>>(
      static_cast<const W*>(a.table.data), static_cast<const int32_t*>(a.token_ids.data),
      static_cast<Act*>(a.out.data), a.table.shape[0], dim);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

template <typename Act>
Status dispatch_table(const EmbeddingArgs& a, int tokens, int dim, cudaStream_t stream) {
  switch (a.table.dtype) {
    case DType::kF32: return launch<float, Act>(a, tokens, dim, stream);
    case DType::kF16: return launch<__half, Act>(a, tokens, dim, stream);
    case DType::kBF16: return launch<__nv_bfloat16, Act>(a, tokens, dim, stream);
    default: return InvalidArgument("embedding: unsupported table dtype");
  }
}

Status check_args(const EmbeddingArgs& a) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (a.table.ndim != 2) {
    return InvalidArgument("embedding: table must be [vocab, dim], got " + a.table.describe());
  }
  if (a.table.dtype != DType::kF32 && a.table.dtype != DType::kF16 &&
      a.table.dtype != DType::kBF16) {
    return InvalidArgument("embedding: table dtype must be f32, f16 or bf16, got " +
                           a.table.describe());
  }
  const int64_t vocab = a.table.shape[0], dim = a.table.shape[1];
  if (vocab <= 0 || dim <= 0 || dim > kIntMax) {
    return InvalidArgument(
        "embedding: table dims out of range (vocab >= 1, dim in [1, 2^31)), got " +
        a.table.describe());
  }
  if (a.token_ids.ndim != 1 || a.token_ids.dtype != DType::kI32) {
    return InvalidArgument("embedding: token_ids must be [T] i32, got " + a.token_ids.describe());
  }
  const int64_t tokens = a.token_ids.shape[0];
  if (tokens < 0 || tokens > kIntMax) {
    return InvalidArgument("embedding: token_ids length out of range, got " +
                           a.token_ids.describe());
  }
  if (a.out.ndim != 2 || a.out.shape[0] != tokens || a.out.shape[1] != dim) {
    return InvalidArgument("embedding: out must be [" + std::to_string(tokens) + ", " +
                           std::to_string(dim) + "], got " + a.out.describe());
  }
  if (a.out.dtype != DType::kF32 && a.out.dtype != DType::kBF16) {
    return InvalidArgument("embedding: out dtype must be f32 or bf16, got " + a.out.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_on_cuda("embedding", "table", a.table));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("embedding", "token_ids", a.token_ids));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("embedding", "out", a.out));
  if (tokens == 0) return OkStatus();
  if (a.table.empty() || a.token_ids.empty() || a.out.empty()) {
    return InvalidArgument("embedding: table, token_ids and out need data (got a null pointer)");
  }
  if (overlaps(a.out, a.table)) return InvalidArgument("embedding: out must not overlap table");
  if (overlaps(a.out, a.token_ids)) {
    return InvalidArgument("embedding: out must not overlap token_ids");
  }
  return OkStatus();
}

}  // namespace

Status embedding_cuda(const EmbeddingArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int tokens = static_cast<int>(a.token_ids.shape[0]);
  const int dim = static_cast<int>(a.table.shape[1]);
  if (tokens == 0) return OkStatus();
  switch (a.out.dtype) {
    case DType::kF32: return dispatch_table<float>(a, tokens, dim, stream);
    case DType::kBF16: return dispatch_table<__nv_bfloat16>(a, tokens, dim, stream);
    default: return InvalidArgument("embedding: unsupported out dtype");
  }
}

}  // namespace pagoda::cuda
