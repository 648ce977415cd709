// RMSNorm with an optional fused residual add, per row t (all f32 arithmetic):
//   with residual:    residual[t] += input[t];  x = residual[t]
//   without residual: x = input[t]
//   ss   = sum_i x[i]^2           (8-lane FMA accumulator in increasing i, then hsum8: fixed order)
//   inv  = 1 / sqrtf(ss / dim + eps)
//   out[t, i] = (x[i] * inv) * weight[i]
// Shapes: input, residual, out [T, dim] f32; weight [dim] f32 / f16 / bf16.
// out may alias input (each row reads all of x before writing out); residual may alias neither.
// Rows are independent and split over T.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/simd.h"

namespace pagoda::cpu {
namespace {

// residual_row[i] += input_row[i], i in [0, dim)
void add_row(float* residual_row, const float* input_row, int64_t dim) {
  int64_t i = 0;
  for (; i + kLanes <= dim; i += kLanes) {
    store8(residual_row + i, _mm256_add_ps(load8(residual_row + i), load8(input_row + i)));
  }
  if (i < dim) {
    const int r = static_cast<int>(dim - i);
    store_partial8(
        residual_row + i,
        _mm256_add_ps(load_partial8(residual_row + i, r), load_partial8(input_row + i, r)), r);
  }
}

// out_row = (x_row * inv) * weight; out_row may alias x_row.
template <DType WD>
void scale_row(const float* x_row, float inv, const void* weight, int64_t dim, float* out_row) {
  const __m256 vinv = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + kLanes <= dim; i += kLanes) {
    store8(out_row + i, _mm256_mul_ps(_mm256_mul_ps(load8(x_row + i), vinv), load8<WD>(weight, i)));
  }
  if (i < dim) {
    const int r = static_cast<int>(dim - i);
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(load_partial8(x_row + i, r), vinv),
                                   load_partial8<WD>(weight, i, r));
    store_partial8(out_row + i, v, r);
  }
}

template <DType WD>
void rms_norm_rows(ThreadPool& pool, const float* input,  // [T, dim]
                   float* residual,                       // [T, dim] or null
                   const void* weight,                    // [dim]
                   float* out,                            // [T, dim]
                   int64_t num_tokens, int64_t dim, float eps) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim));
  pool.parallel_for(num_tokens, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* x = input + t * dim;
      if (residual != nullptr) {
        add_row(residual + t * dim, x, dim);
        x = residual + t * dim;
      }
      const float ss = sum_squares(x, dim);
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
      scale_row<WD>(x, inv, weight, dim, out + t * dim);
    }
  });
}

}  // namespace

Status rms_norm(ThreadPool& pool, const RmsNormArgs& a) {
  constexpr const char* kOp = "rms_norm";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "input", a.input, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "weight", a.weight, 1, kFloatDTypes));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 2, {DType::kF32}));
  const int64_t num_tokens = a.input.shape[0], dim = a.input.shape[1];
  if (dim == 0) return arg_error(kOp, "input", "must have dim > 0, got ", a.input.describe());
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "weight", a.weight, 0, dim, "dim"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 0, num_tokens, "T"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 1, dim, "dim"));
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint(kOp, "out", a.out, "input", a.input));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "weight", a.weight));
  float* residual = nullptr;
  if (!a.residual.empty()) {
    PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "residual", a.residual, 2, {DType::kF32}));
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "residual", a.residual, 0, num_tokens, "T"));
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "residual", a.residual, 1, dim, "dim"));
    PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "residual", a.residual, "input", a.input));
    PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "residual", a.residual, "out", a.out));
    residual = a.residual.as<float>();
  }
  if (!(a.eps >= 0.0f) || !std::isfinite(a.eps)) {
    return arg_error(kOp, "eps", "must be finite and >= 0, got ", (a.eps));
  }
  dispatch_float(a.weight.dtype, [&](auto d) {
    rms_norm_rows<d()>(pool, a.input.as<const float>(), residual, a.weight.data, a.out.as<float>(),
                       num_tokens, dim, a.eps);
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
