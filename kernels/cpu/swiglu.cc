// Elementwise ops of the MLP and the residual stream, over flat f32 arrays:
//   swiglu: out[i] = (gate[i] / (1 + exp(-gate[i]))) * up[i]   gate, up, out [T, H]
//           exp is exp8 (simd.h, ~2 ulp); out may alias gate or up.
//           Fused form: gate_up [T, 2H] (gate = columns [0, H) of a row, up = [H, 2H)), out
//           [T, H] not overlapping it; each row is its own run of 8-lane blocks.
//   add:    a[i] += b[i]                                       a, b [T, dim]
// Every element is computed by the same 8-lane code (the tail is zero-padded, not scalar), so an
// element's value does not depend on where it sits. Split over 8-element blocks.
#include <algorithm>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/simd.h"

namespace pagoda::cpu {
namespace {

constexpr int64_t kBlocksPerChunk = 2048;  // 16K elements

inline __m256 swiglu8(__m256 g, __m256 u) {
  const __m256 neg_g = _mm256_sub_ps(_mm256_setzero_ps(), g);
  const __m256 denom = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(neg_g));
  return _mm256_mul_ps(_mm256_div_ps(g, denom), u);
}

// Applies op8(a, b) -> out over n elements, 8 at a time.
template <typename Op8>
void elementwise(ThreadPool& pool, const float* a, const float* b, float* out, int64_t n, Op8 op8) {
  const int64_t blocks = (n + kLanes - 1) / kLanes;
  pool.parallel_for(blocks, kBlocksPerChunk, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t i = blk * kLanes;
      if (i + kLanes <= n) {
        store8(out + i, op8(load8(a + i), load8(b + i)));
      } else {
        const int r = static_cast<int>(n - i);
        store_partial8(out + i, op8(load_partial8(a + i, r), load_partial8(b + i, r)), r);
      }
    }
  });
}

// The fused form: out[t, j] = op8(gate_up[t, j], gate_up[t, H + j]), 8 columns at a time.
void swiglu_fused(ThreadPool& pool, const float* gate_up,  // [T, 2H]
                  float* out,                              // [T, H]
                  int64_t T, int64_t H) {
  const int64_t blocks_per_row = (H + kLanes - 1) / kLanes;
  pool.parallel_for(T * blocks_per_row, kBlocksPerChunk, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t t = blk / blocks_per_row, j = (blk % blocks_per_row) * kLanes;
      const float* g = gate_up + t * 2 * H + j;
      const float* u = g + H;
      float* o = out + t * H + j;
      if (j + kLanes <= H) {
        store8(o, swiglu8(load8(g), load8(u)));
      } else {
        const int r = static_cast<int>(H - j);
        store_partial8(o, swiglu8(load_partial8(g, r), load_partial8(u, r)), r);
      }
    }
  });
}

Status swiglu_fused_form(ThreadPool& pool, const SwigluArgs& a) {
  constexpr const char* kOp = "swiglu";
  if (!a.gate.empty() || !a.up.empty()) {
    return arg_error(kOp, "gate_up", "is the fused form: gate and up must be empty, got ",
                     a.gate.describe(), " and ", a.up.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "gate_up", a.gate_up, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 2, {DType::kF32}));
  const int64_t T = a.gate_up.shape[0], H = a.gate_up.shape[1] / 2;
  if (a.gate_up.shape[1] % 2 != 0) {
    return arg_error(kOp, "gate_up", "dim 1 must be even (2 * H), got ", a.gate_up.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 0, T, "T (gate_up dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 1, H, "H (gate_up dim 1 / 2)"));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "gate_up", a.gate_up));
  swiglu_fused(pool, a.gate_up.as<const float>(), a.out.as<float>(), T, H);
  return OkStatus();
}

}  // namespace

Status swiglu(ThreadPool& pool, const SwigluArgs& a) {
  constexpr const char* kOp = "swiglu";
  if (!a.gate_up.empty() || a.gate_up.ndim != 0) return swiglu_fused_form(pool, a);
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "gate", a.gate, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "up", a.up, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 2, {DType::kF32}));
  for (int i = 0; i < 2; ++i) {
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "up", a.up, i, a.gate.shape[i], "the gate dim"));
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, i, a.gate.shape[i], "the gate dim"));
  }
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint(kOp, "out", a.out, "gate", a.gate));
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint(kOp, "out", a.out, "up", a.up));
  elementwise(pool, a.gate.as<const float>(), a.up.as<const float>(), a.out.as<float>(),
              a.gate.numel(), swiglu8);
  return OkStatus();
}

Status add(ThreadPool& pool, const AddArgs& a) {
  constexpr const char* kOp = "add";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "a", a.a, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "b", a.b, 2, {DType::kF32}));
  for (int i = 0; i < 2; ++i) {
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "b", a.b, i, a.a.shape[i], "the a dim"));
  }
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint(kOp, "b", a.b, "a", a.a));
  elementwise(pool, a.a.as<const float>(), a.b.as<const float>(), a.a.as<float>(), a.a.numel(),
              [](__m256 x, __m256 y) { return _mm256_add_ps(x, y); });
  return OkStatus();
}

}  // namespace pagoda::cpu
