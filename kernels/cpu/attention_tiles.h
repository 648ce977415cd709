// Register tiles of the CPU paged attention (attention.cc): the score and value kernels of a
// few query vectors at a time, and the batched horizontal sums they end with.
//
// Each output value gets exactly the operations of simd.h's scalar-at-a-time helpers (dot():
// one 8-lane FMA chain over d in increasing order, then hsum8's tree; values: one FMA per key
// in increasing key order), so tiling changes no bits; it only runs 8 or 12 independent chains
// side by side, which is what keeps both FMA ports busy.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/simd.h"

namespace pagoda::cpu {

// Lane j of the result is hsum8(v[j]), bit for bit: the same additions of the same operands
// ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), eight sums sharing the shuffles.
inline __m256 hsum8x8(const __m256 v[8]) {
  auto lo_plus_hi = [&](int j) {  // [lo(v_j) + hi(v_j) | lo(v_j+4) + hi(v_j+4)]
    return _mm256_add_ps(_mm256_permute2f128_ps(v[j], v[j + 4], 0x20),
                         _mm256_permute2f128_ps(v[j], v[j + 4], 0x31));
  };
  const __m256 u04 = lo_plus_hi(0), u15 = lo_plus_hi(1), u26 = lo_plus_hi(2), u37 = lo_plus_hi(3);
  // [u_j[0] + u_j[2], u_j[1] + u_j[3], same for j + 1] per 128-bit half.
  const __m256 t01 = _mm256_add_ps(_mm256_shuffle_ps(u04, u15, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(u04, u15, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 t23 = _mm256_add_ps(_mm256_shuffle_ps(u26, u37, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(u26, u37, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm256_add_ps(_mm256_shuffle_ps(t01, t23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(t01, t23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// v, pinned to a register: GCC otherwise folds the load of a vector used by several FMAs into
// each of them, loading it once per use, and the load ports, not the FMA ports, set the pace.
inline __m256 in_register(__m256 v) {
  asm("" : "+x"(v));
  return v;
}

// Lanes 0..3 of the result are hsum8(v[0..3]), bit for bit (hsum8x8's steps on four vectors).
inline __m128 hsum8x4(const __m256 v[4]) {
  const __m256 u01 = _mm256_add_ps(_mm256_permute2f128_ps(v[0], v[1], 0x20),
                                   _mm256_permute2f128_ps(v[0], v[1], 0x31));
  const __m256 u23 = _mm256_add_ps(_mm256_permute2f128_ps(v[2], v[3], 0x20),
                                   _mm256_permute2f128_ps(v[2], v[3], 0x31));
  // [t0, t2 | t1, t3], t_j = (u_j[0] + u_j[2], u_j[1] + u_j[3]).
  const __m256 t = _mm256_add_ps(_mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm256_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 r = _mm256_add_ps(t, _mm256_movehdup_ps(t));  // r_j in lanes 0, 4, 2, 6
  return _mm256_castps256_ps128(
      _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 2, 6, 0, 4, 2, 6)));
}

// s[i][0 .. NK) = dot(q[i], k[j]) * scale for NQ (1, 2 or 3) query vectors x NK (8, 4, 4)
// keys. Every dot is one 8-lane FMA chain over d in increasing order (dot()'s sequence); the
// 8 or 12 chains are independent, which keeps both FMA ports busy (measured on the 2-core VM,
// in L1: 3 x 4 tiles ~1.5 FMA/cycle, 2 x 4 ~1.2, 1 x 8 ~0.7).
template <int NQ>
inline void score_tile(const float* const* q, const float* const* k, int64_t Dp, __m256 scale,
                       float* const* s) {
  constexpr int NK = NQ == 1 ? 8 : 4;
  __m256 acc[NQ * NK];
#pragma GCC unroll 16
  for (int j = 0; j < NQ * NK; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t d = 0; d < Dp; d += kLanes) {
    __m256 qv[NQ];
#pragma GCC unroll 4
    for (int i = 0; i < NQ; ++i) qv[i] = in_register(load8(q[i] + d));
#pragma GCC unroll 8
    for (int j = 0; j < NK; ++j) {
      const __m256 kv = in_register(load8(k[j] + d));
#pragma GCC unroll 4
      for (int i = 0; i < NQ; ++i) acc[i * NK + j] = _mm256_fmadd_ps(qv[i], kv, acc[i * NK + j]);
    }
  }
  if constexpr (NQ == 1) {
    store8(s[0], _mm256_mul_ps(hsum8x8(acc), scale));
  } else {
    const __m256 r = _mm256_mul_ps(hsum8x8(acc), scale);
    _mm_storeu_ps(s[0], _mm256_castps256_ps128(r));
    _mm_storeu_ps(s[1], _mm256_extractf128_ps(r, 1));
    if constexpr (NQ == 3)
      _mm_storeu_ps(s[2], _mm_mul_ps(hsum8x4(acc + 8), _mm256_castps256_ps128(scale)));
  }
}

// acc[i][d0 .. d0 + 8 NV) += e[i][k] * v[k][d0 ..] for k in [k0, k1) in increasing k (FMA), for
// NQ query vectors; the NQ x NV accumulators stay in registers over the keys. (The unroll
// pragmas matter: without them GCC kept the accumulator array on the stack, a store and a load
// per FMA.)
template <int NQ, int NV>
inline void value_tile(float* const* acc, const float* const* e, const float* const* v, int64_t k0,
                       int64_t k1, int64_t d0) {
  __m256 a[NQ * NV];
#pragma GCC unroll 16
  for (int x = 0; x < NQ * NV; ++x) a[x] = load8(acc[x / NV] + d0 + x % NV * kLanes);
  for (int64_t k = k0; k < k1; ++k) {
    const float* row = v[k] + d0;
    __m256 w[NQ];
#pragma GCC unroll 16
    for (int i = 0; i < NQ; ++i) w[i] = _mm256_broadcast_ss(e[i] + k);
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) {
      const __m256 vv = in_register(load8(row + j * kLanes));
#pragma GCC unroll 16
      for (int i = 0; i < NQ; ++i) a[i * NV + j] = _mm256_fmadd_ps(w[i], vv, a[i * NV + j]);
    }
  }
#pragma GCC unroll 16
  for (int x = 0; x < NQ * NV; ++x) store8(acc[x / NV] + d0 + x % NV * kLanes, a[x]);
}

}  // namespace pagoda::cpu
