// attention_args.cu: the argument checks of the CUDA attention launcher (attention.cu), on the
// host before anything touches the device: every shape, dtype, device and aliasing rule of
// AttentionArgs (kernels/ops.h), InvalidArgument("attention: <arg> ...") otherwise. Device-side
// metadata (query_start, seq_lens, block ids) cannot be read here; the kernels guard it.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

constexpr int kMaxHeadDim = kAttentionMaxHeadDim;
constexpr int64_t kMaxGridY = 65535;  // grid y: n_heads (merge), n_kv_heads x slices <= n_heads

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

}  // namespace

Status check_attention_args(const AttentionArgs& a) {
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

}  // namespace pagoda::cuda
