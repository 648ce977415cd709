// Elementwise ops of the MLP and the residual stream, over flat f32 arrays:
//   swiglu: out[i] = (gate[i] / (1 + exp(-gate[i]))) * up[i]   gate, up, out [T, H]
//           exp is exp8 (simd.h, ~2 ulp); out may alias gate or up.
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

}  // namespace

Status swiglu(ThreadPool& pool, const SwigluArgs& a) {
  constexpr const char* kOp = "swiglu";
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
