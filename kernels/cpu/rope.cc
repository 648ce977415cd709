// Rotary position embedding, rotate-half layout, applied in place to q and k:
//   for each token t, head h, i in [0, d/2):      (d = head_dim, p = positions[t])
//     a  = f32(p) * inv_freq[i]          -- the angle is an f32 product (as in Hugging Face and
//                                           llama2.c), then cosf / sinf of that f32 angle
//     x0 = x[i], x1 = x[i + d/2]
//     x[i]       = fma(x0, cos(a), -(x1 sin(a)))     -- one explicit FMA each, so the result
//     x[i + d/2] = fma(x1, cos(a),   x0 sin(a))       does not depend on compiler contraction
// Shapes: q [T, n_heads, d] f32, k [T, n_kv_heads, d] f32, positions [T] i32 (>= 0),
// inv_freq [d/2] f32. d must be even. A CUDA twin matches this by using the same f32 product and
// accurate sincosf (not the fast intrinsics).
// Tokens are independent and split over T; cos/sin are computed once per token.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace pagoda::cpu {
namespace {

// Rotates n_heads heads of one token in place.
void rotate_heads(float* x,  // [n_heads, head_dim]
                  int64_t n_heads, int64_t head_dim, const float* cos_a, const float* sin_a) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* lo = x + h * head_dim;
    float* hi = lo + half;
    for (int64_t i = 0; i < half; ++i) {
      const float x0 = lo[i], x1 = hi[i];
      lo[i] = std::fma(x0, cos_a[i], -(x1 * sin_a[i]));
      hi[i] = std::fma(x1, cos_a[i], x0 * sin_a[i]);
    }
  }
}

void rope_tokens(ThreadPool& pool, float* q,  // [T, n_heads, head_dim]
                 float* k,                    // [T, n_kv_heads, head_dim]
                 const int32_t* positions,    // [T]
                 const float* inv_freq,       // [head_dim / 2]
                 int64_t num_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const int64_t per_token = (n_heads + n_kv_heads) * head_dim;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, per_token));
  pool.parallel_for(num_tokens, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> cos_a(half), sin_a(half);
    for (int64_t t = begin; t < end; ++t) {
      const float p = static_cast<float>(positions[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = p * inv_freq[i];
        cos_a[i] = std::cos(angle);
        sin_a[i] = std::sin(angle);
      }
      rotate_heads(q + t * n_heads * head_dim, n_heads, head_dim, cos_a.data(), sin_a.data());
      rotate_heads(k + t * n_kv_heads * head_dim, n_kv_heads, head_dim, cos_a.data(), sin_a.data());
    }
  });
}

}  // namespace

Status rope(ThreadPool& pool, const RopeArgs& a) {
  constexpr const char* kOp = "rope";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "q", a.q, 3, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "k", a.k, 3, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "positions", a.positions, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "inv_freq", a.inv_freq, 1, {DType::kF32}));
  const int64_t num_tokens = a.q.shape[0], n_heads = a.q.shape[1], head_dim = a.q.shape[2];
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return arg_error(kOp, "q", "head_dim must be even and > 0, got ", a.q.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "k", a.k, 0, num_tokens, "T (q dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "k", a.k, 2, head_dim, "head_dim (q dim 2)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "positions", a.positions, 0, num_tokens, "T (q dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "inv_freq", a.inv_freq, 0, head_dim / 2, "head_dim / 2"));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "q", a.q, "k", a.k));
  const int32_t* positions = a.positions.as<const int32_t>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (positions[t] < 0) {
      return arg_error(kOp, "positions", "[", t, "] = ", positions[t], " is negative");
    }
  }
  rope_tokens(pool, a.q.as<float>(), a.k.as<float>(), positions, a.inv_freq.as<const float>(),
              num_tokens, n_heads, a.k.shape[1], head_dim);
  return OkStatus();
}

}  // namespace pagoda::cpu
