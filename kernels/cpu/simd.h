// AVX2 helpers shared by the CPU kernels: 8-lane loads that widen f16 (F16C) and bf16 (shift
// left 16) to f32, zero-padded partial loads for tails, a fixed-order horizontal sum, a
// fixed-order dot product and a vectorised exp.
//
// Determinism contract: every helper here performs the same sequence of f32 operations for a
// given element count, whatever the address or the caller. Kernels that reduce (matmul,
// rms_norm, attention) build on them, which is what makes their results batch invariant.
// Tails are handled by zero-padding to a full 8-lane vector, never by a separate scalar loop,
// so an element is computed the same way wherever it sits in a row.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace pagoda::cpu {

constexpr int kLanes = 8;

// Bytes per element of a storage dtype, at compile time.
template <DType D>
constexpr size_t storage_size_of() {
  return D == DType::kF32 || D == DType::kI32 ? 4 : 2;
}

// ---- loads: 8 elements of dtype D at p[i .. i+8) as f32 lanes ----------------------------

template <DType D>
inline __m256 load8(const void* p, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  } else if constexpr (D == DType::kF16) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    return _mm256_cvtph_ps(h);
  } else {
    static_assert(D == DType::kBF16, "load8: f32, f16 or bf16");
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// The first n (0 < n < 8) elements at p[i ..], the other lanes zero. Never reads past p[i+n).
template <DType D>
inline __m256 load_partial8(const void* p, int64_t i, int n) {
  if constexpr (D == DType::kF32) {
    alignas(32) float tmp[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(tmp, static_cast<const float*>(p) + i, sizeof(float) * n);
    return _mm256_load_ps(tmp);
  } else {
    alignas(16) uint16_t tmp[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(tmp, static_cast<const uint16_t*>(p) + i, sizeof(uint16_t) * n);
    return load8<D>(tmp, 0);
  }
}

inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
inline __m256 load_partial8(const float* p, int n) {
  return load_partial8<DType::kF32>(p, 0, n);
}

inline void store8(float* p, __m256 v) {
  _mm256_storeu_ps(p, v);
}
// Stores the first n (0 < n < 8) lanes of v to p[0 .. n).
inline void store_partial8(float* p, __m256 v, int n) {
  alignas(32) float tmp[kLanes];
  _mm256_store_ps(tmp, v);
  std::memcpy(p, tmp, sizeof(float) * n);
}

// ---- reductions ----------------------------------------------------------------------------

// ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)): always this tree.
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// sum_i a[i] * b[i] over n elements: one 8-lane FMA accumulator (lane l sums i = l, l+8, ...
// in increasing i), the tail zero-padded into one more FMA, then hsum8.
template <DType DB>
inline float dot(const float* a, const void* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) acc = _mm256_fmadd_ps(load8(a + i), load8<DB>(b, i), acc);
  if (i < n) {
    const int r = static_cast<int>(n - i);
    acc = _mm256_fmadd_ps(load_partial8(a + i, r), load_partial8<DB>(b, i, r), acc);
  }
  return hsum8(acc);
}

// sum_i a[i]^2 with the same order as dot().
inline float sum_squares(const float* a, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 v = load8(a + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  if (i < n) {
    const __m256 v = load_partial8(a + i, static_cast<int>(n - i));
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  return hsum8(acc);
}

// ---- exp -------------------------------------------------------------------------------------

// e^x per lane (Cephes expf scheme: x = n ln2 + r, degree-5 polynomial in r, scale by 2^n).
// Max relative error ~2 ulp on [-87, 88]; inputs are clamped to [-88.376, 88.376], so very
// negative x gives 0 (not a subnormal) and large x gives ~2.4e38 (not inf). NaN stays NaN.
inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 lo = _mm256_set1_ps(-88.3762626647949f);
  // max/min return the second operand when the first is NaN: keep x second to propagate NaN.
  x = _mm256_min_ps(hi, x);
  x = _mm256_max_ps(lo, x);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i n = _mm256_cvttps_epi32(fx);
  n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

}  // namespace pagoda::cpu
