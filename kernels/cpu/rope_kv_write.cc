// rope_kv_write: RoPE and the KV cache write fused, on the output of one [q; k; v] GEMM
// (RopeKvWriteArgs in kernels/ops.h). For each token t (d = head_dim, p = positions[t]):
//   q heads of qkv[t]  -> rotated -> q_out[t]                           (always)
//   k heads of qkv[t]  -> rotated -> rounded to act -> k_cache row slot (slot >= 0)
//   v heads of qkv[t]  ---------------------------> v_cache row slot    (slot >= 0)
// slot = slot_mapping[t]; row `slot` of a cache viewed as [num_blocks * block_size, KV, d].
// The rotation is kernels/cpu/rope.cc's, operation by operation (f32 angle p * inv_freq[i],
// std::cos/std::sin of it, one explicit FMA per output, -ffp-contract=off), and the stores round
// exactly as rope (to the activation dtype) then kv_write (to the cache dtype) do, so the result
// is bit for bit that of rope + kv_write on the same values.
// Shapes: qkv [T, (H + 2 KV) d] f32 or bf16 (bf16 only to serve as the CUDA twin's reference:
// the CPU backend's activations are f32), q_out [T, H, d] same dtype, positions [T] i32 >= 0,
// inv_freq [d/2] f32, slot_mapping [T] i32, k_cache / v_cache [num_blocks, block_size, KV, d]
// f32 / f16 / bf16. Tokens are split over T; cos/sin are computed once per token.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace pagoda::cpu {
namespace {

struct Problem {
  const void* qkv;  // [T, (H + 2 KV) * d], act dtype
  DType act;
  const int32_t* positions;  // [T]
  const float* inv_freq;     // [d / 2]
  const int32_t* slots;      // [T]
  void* q_out;               // [T, H, d], act dtype
  void* k_cache;             // [num_slots, KV * d], cache dtype
  void* v_cache;             // [num_slots, KV * d], cache dtype
  int64_t T, H, KV, d;
};

// Rotates `heads` heads of src (elements src_off.. of a row in the act dtype) by (cos_a, sin_a)
// and stores each result through store(index, value) for index = 0 .. heads * d - 1.
template <DType A, typename Store>
void rotate_heads(const void* src, size_t src_off, int64_t heads, int64_t d, const float* cos_a,
                  const float* sin_a, Store store) {
  const int64_t half = d / 2;
  for (int64_t h = 0; h < heads; ++h) {
    const size_t lo = src_off + static_cast<size_t>(h * d);
    for (int64_t i = 0; i < half; ++i) {
      const float x0 = load_as_f32(src, A, lo + i), x1 = load_as_f32(src, A, lo + half + i);
      store(h * d + i, std::fma(x0, cos_a[i], -(x1 * sin_a[i])));
      store(h * d + half + i, std::fma(x1, cos_a[i], x0 * sin_a[i]));
    }
  }
}

// The value rope leaves in an activation of dtype A (rounded once, to nearest even).
template <DType A>
float act_round(float v) {
  if constexpr (A == DType::kF32) {
    return v;
  } else {
    uint16_t bits = 0;
    store_from_f32(&bits, A, 0, v);
    return load_as_f32(&bits, A, 0);
  }
}

template <DType A, DType C>
void rope_kv_write_tokens(ThreadPool& pool, const Problem& p) {
  const int64_t half = p.d / 2, row = (p.H + 2 * p.KV) * p.d, kv_row = p.KV * p.d;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, row));
  pool.parallel_for(p.T, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> cos_a(half), sin_a(half);
    for (int64_t t = begin; t < end; ++t) {
      const float pos = static_cast<float>(p.positions[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = pos * p.inv_freq[i];
        cos_a[i] = std::cos(angle);
        sin_a[i] = std::sin(angle);
      }
      const size_t src = static_cast<size_t>(t * row);
      const size_t q_dst = static_cast<size_t>(t * p.H * p.d);
      rotate_heads<A>(p.qkv, src, p.H, p.d, cos_a.data(), sin_a.data(),
                      [&](int64_t i, float v) { store_from_f32(p.q_out, A, q_dst + i, v); });
      const int32_t slot = p.slots[t];
      if (slot < 0) continue;  // padding: q only
      const size_t dst = static_cast<size_t>(slot) * static_cast<size_t>(kv_row);
      rotate_heads<A>(
          p.qkv, src + p.H * p.d, p.KV, p.d, cos_a.data(), sin_a.data(),
          [&](int64_t i, float v) { store_from_f32(p.k_cache, C, dst + i, act_round<A>(v)); });
      const size_t v_src = src + static_cast<size_t>((p.H + p.KV) * p.d);
      if constexpr (A == C) {
        std::memcpy(static_cast<char*>(p.v_cache) + dst * dtype_size(C),
                    static_cast<const char*>(p.qkv) + v_src * dtype_size(A),
                    static_cast<size_t>(kv_row) * dtype_size(C));
      } else {
        for (int64_t i = 0; i < kv_row; ++i)
          store_from_f32(p.v_cache, C, dst + i, load_as_f32(p.qkv, A, v_src + i));
      }
    }
  });
}

}  // namespace

Status rope_kv_write(ThreadPool& pool, const RopeKvWriteArgs& a) {
  constexpr const char* kOp = "rope_kv_write";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "qkv", a.qkv, 2, {DType::kF32, DType::kBF16}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "q_out", a.q_out, 3, {DType::kF32, DType::kBF16}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "positions", a.positions, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "inv_freq", a.inv_freq, 1, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "slot_mapping", a.slot_mapping, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "k_cache", a.k_cache, 4, kFloatDTypes));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "v_cache", a.v_cache, 4, kFloatDTypes));
  const int64_t T = a.q_out.shape[0], H = a.q_out.shape[1], d = a.q_out.shape[2];
  if (d <= 0 || d % 2 != 0) {
    return arg_error(kOp, "q_out", "head_dim must be even and > 0, got ", a.q_out.describe());
  }
  if (a.qkv.dtype != a.q_out.dtype) {
    return arg_error(kOp, "qkv", "must have the dtype of q_out, got ", a.qkv.describe(), " vs ",
                     a.q_out.describe());
  }
  const int64_t KV = a.k_cache.shape[2];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "k_cache", a.k_cache, 3, d, "head_dim (q_out dim 2)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "qkv", a.qkv, 0, T, "T (q_out dim 0)"));
  PAGODA_RETURN_IF_ERROR(
      check_dim(kOp, "qkv", a.qkv, 1, (H + 2 * KV) * d, "(n_heads + 2 * n_kv_heads) * head_dim"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "positions", a.positions, 0, T, "T (q_out dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "inv_freq", a.inv_freq, 0, d / 2, "head_dim / 2"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "slot_mapping", a.slot_mapping, 0, T, "T (q_out dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_v_cache_like_k(kOp, a.k_cache, a.v_cache));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "q_out", a.q_out, "qkv", a.qkv));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "k_cache", a.k_cache, "v_cache", a.v_cache));
  for (const auto& [name, cache] : {std::pair{"k_cache", &a.k_cache}, {"v_cache", &a.v_cache}}) {
    PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, name, *cache, "qkv", a.qkv));
    PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, name, *cache, "q_out", a.q_out));
  }
  const int32_t* positions = a.positions.as<const int32_t>();
  const int32_t* slots = a.slot_mapping.as<const int32_t>();
  const int64_t num_slots = a.k_cache.shape[0] * a.k_cache.shape[1];
  for (int64_t t = 0; t < T; ++t) {
    if (positions[t] < 0) {
      return arg_error(kOp, "positions", "[", t, "] = ", positions[t], " is negative");
    }
    if (slots[t] >= num_slots) {
      return arg_error(kOp, "slot_mapping", "[", t, "] = ", slots[t],
                       " is beyond the cache (num_blocks * block_size = ", num_slots, ")");
    }
  }
  if (T == 0) return OkStatus();
  const Problem p{a.qkv.data,
                  a.qkv.dtype,
                  positions,
                  a.inv_freq.as<const float>(),
                  slots,
                  a.q_out.data,
                  a.k_cache.data,
                  a.v_cache.data,
                  T,
                  H,
                  KV,
                  d};
  dispatch_float(a.k_cache.dtype, [&](auto c) {
    if (a.qkv.dtype == DType::kF32) {
      rope_kv_write_tokens<DType::kF32, c()>(pool, p);
    } else {
      rope_kv_write_tokens<DType::kBF16, c()>(pool, p);
    }
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
