// KV cache write: for each new token t with slot = slot_mapping[t] >= 0,
//   k_cache[slot / block_size, slot % block_size, :, :] = k[t, :, :]   (same for v)
// i.e. the flat row `slot` of a cache viewed as [num_blocks * block_size, n_kv_heads, head_dim].
// Shapes: k, v [T, n_kv_heads, head_dim] f32; slot_mapping [T] i32 (negative = padding, skip);
// k_cache, v_cache [num_blocks, block_size, n_kv_heads, head_dim] f32 / f16 / bf16 (narrowing
// rounds to nearest even). Slots of one call must be distinct (else which token wins is not
// defined). Tokens are split over T.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace pagoda::cpu {
namespace {

template <DType CD>
void write_row(const float* src, int64_t n, void* dst) {
  if constexpr (CD == DType::kF32) {
    std::memcpy(dst, src, sizeof(float) * n);
  } else {
    for (int64_t i = 0; i < n; ++i) store_from_f32(dst, CD, i, src[i]);
  }
}

template <DType CD>
void kv_write_tokens(ThreadPool& pool, const float* k, const float* v,  // [T, row]
                     const int32_t* slots,                              // [T]
                     void* k_cache, void* v_cache,  // [num_blocks * block_size, row]
                     int64_t num_tokens, int64_t row) {
  const size_t row_bytes = static_cast<size_t>(row) * dtype_size(CD);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row));
  pool.parallel_for(num_tokens, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (slots[t] < 0) continue;
      const size_t offset = static_cast<size_t>(slots[t]) * row_bytes;
      write_row<CD>(k + t * row, row, static_cast<char*>(k_cache) + offset);
      write_row<CD>(v + t * row, row, static_cast<char*>(v_cache) + offset);
    }
  });
}

}  // namespace

Status kv_write(ThreadPool& pool, const KvWriteArgs& a) {
  constexpr const char* kOp = "kv_write";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "k", a.k, 3, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "v", a.v, 3, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "slot_mapping", a.slot_mapping, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "k_cache", a.k_cache, 4, kFloatDTypes));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "v_cache", a.v_cache, 4, kFloatDTypes));
  const int64_t num_tokens = a.k.shape[0], n_kv_heads = a.k.shape[1], head_dim = a.k.shape[2];
  for (int i = 0; i < 3; ++i) {
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "v", a.v, i, a.k.shape[i], "the k dim"));
  }
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "slot_mapping", a.slot_mapping, 0, num_tokens, "T"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "k_cache", a.k_cache, 2, n_kv_heads, "n_kv_heads"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "k_cache", a.k_cache, 3, head_dim, "head_dim"));
  PAGODA_RETURN_IF_ERROR(check_v_cache_like_k(kOp, a.k_cache, a.v_cache));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "k_cache", a.k_cache, "v_cache", a.v_cache));
  const int64_t num_slots = a.k_cache.shape[0] * a.k_cache.shape[1];
  const int32_t* slots = a.slot_mapping.as<const int32_t>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (slots[t] >= num_slots) {
      return arg_error(kOp, "slot_mapping", "[", t, "] = ", slots[t],
                       " is beyond the cache (num_blocks * block_size = ", num_slots, ")");
    }
  }
  dispatch_float(a.k_cache.dtype, [&](auto d) {
    kv_write_tokens<d()>(pool, a.k.as<const float>(), a.v.as<const float>(), slots, a.k_cache.data,
                         a.v_cache.data, num_tokens, n_kv_heads * head_dim);
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
