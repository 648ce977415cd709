// The scalar arithmetic of sampling that must give the same bits on the host and on a GPU:
// the counter-based generator (Philox-4x32-10) that turns (seed, position) into a uniform, and
// the exp of the softmax. Included by kernels/cpu/sample.cc (and through it the engine's
// sampler) and by kernels/cuda/sample.cu, so both compute these from one source.
// Plain C++ on the host; __host__ __device__ under nvcc. No CUDA header is needed.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define PAGODA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PAGODA_HOST_DEVICE inline
#endif

namespace pagoda::sample_math {

PAGODA_HOST_DEVICE uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

PAGODA_HOST_DEVICE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

struct Philox4 {
  uint32_t v[4];
};

// Philox-4x32-10 (Salmon et al., SC'11; Random123's philox4x32 with 10 rounds).
PAGODA_HOST_DEVICE Philox4 philox4x32_10(Philox4 counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53, kM1 = 0xCD9E8D57;
  constexpr uint32_t kW0 = 0x9E3779B9;  // golden ratio
  constexpr uint32_t kW1 = 0xBB67AE85;  // sqrt(3) - 1
  uint32_t* c = counter.v;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kW0;
      key1 += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c[2];
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ key0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ key1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c[0] = n0;
    c[1] = n1;
    c[2] = n2;
    c[3] = n3;
  }
  return counter;
}

// A uniform float in [0, 1) from (seed, counter): Philox-4x32-10 with key {seed low 32 bits,
// seed high 32 bits} and counter {counter low, counter high, 0, 0}; the top 24 bits of the
// first output word, times 2^-24.
PAGODA_HOST_DEVICE float counter_uniform(uint64_t seed, uint64_t counter) {
  const Philox4 out = philox4x32_10(
      {{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return static_cast<float>(out.v[0] >> 8) * 0x1p-24f;
}

// exp(x) for x <= 0 (or -inf), within a few ulp; 0 below -87 (the result would be about
// 1.6e-38 there, far below what a 24-bit uniform can pick). Cephes' expf polynomial with
// explicit fma and no branches: vector and scalar code, host and device, give the same bits.
// (The clamp keeps a NaN x as NaN on the host and not on the device; either way the mask below
// makes the result 0.)
PAGODA_HOST_DEVICE float exp_nonpositive(float x) {
  const float clamped = x < -87.0f ? -87.0f : x;
  // n = round(x / ln 2), by the 1.5 * 2^23 trick (floor would not vectorize).
  constexpr float kRound = 12582912.0f;
  const float n = fmaf(clamped, 1.44269504088896341f, kRound) - kRound;
  float r = fmaf(n, -0.693359375f, clamped);
  r = fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  p = fmaf(p, r * r, r + 1.0f);
  const float scale = bits_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  // Zero below -87 by masking the bits: a conditional would keep a host loop scalar.
  const uint32_t keep = 0u - static_cast<uint32_t>(x >= -87.0f);
  return bits_float(float_bits(p * scale) & keep);
}

// Penalty factors as the sampler uses them: a repetition factor that is not positive and
// finite is off (1); a presence or frequency penalty that is not finite is off (0).
PAGODA_HOST_DEVICE float usable_repetition(float r) {
  return r > 0.0f && r < INFINITY ? r : 1.0f;
}
PAGODA_HOST_DEVICE float usable_additive(float x) {
  return x > -INFINITY && x < INFINITY ? x : 0.0f;
}

// The penalties of one token (SampleArgs' rule): repetition (HF) on every penalized token, then
// presence/frequency (OpenAI) on tokens of the output. Factors are already sanitized: rep == 1
// or presence == frequency == 0 turn a part off.
PAGODA_HOST_DEVICE float penalize(float logit, int32_t output_count, float repetition,
                                  float presence, float frequency) {
  float l = logit;
#if defined(__CUDA_ARCH__)
  // Explicitly rounded operations: no contraction by nvcc, the host's bits (-ffp-contract=off).
  if (repetition != 1.0f) l = l > 0.0f ? __fdiv_rn(l, repetition) : __fmul_rn(l, repetition);
  if (output_count > 0 && (presence != 0.0f || frequency != 0.0f)) {
    l = __fsub_rn(l, fmaf(frequency, static_cast<float>(output_count), presence));
  }
#else
  if (repetition != 1.0f) l = l > 0.0f ? l / repetition : l * repetition;
  if (output_count > 0 && (presence != 0.0f || frequency != 0.0f)) {
    l -= fmaf(frequency, static_cast<float>(output_count), presence);
  }
#endif
  return l;
}

}  // namespace pagoda::sample_math
