// Host emulation of the CUDA device API that the pagoda element-wise kernels use.
//
// The .cu files are compiled as ordinary C++ against this header (via the fake cuda_*.h next
// to it). Thread and block indices are globals that the emulator (emu_rt.cc) sets before it
// switches to a thread's fiber; __syncthreads and the warp shuffles yield to its scheduler.
// __shared__ arrays become function statics: one copy, which is right because the emulator
// runs one CTA at a time, and which puts them in .data/.bss, where emu_rt.cc recognises them
// as shared memory.
#pragma once
#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>

#include "core/dtype.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
typedef struct CUstream_st* cudaStream_t;
typedef enum {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorNoDevice = 100,
  cudaErrorInsufficientDriver = 35,
  cudaErrorInvalidDevice = 101,
  cudaErrorDevicesUnavailable = 46,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorUnsupportedPtxVersion = 222,
  cudaErrorSystemDriverMismatch = 803,
  cudaErrorCompatNotSupportedOnDevice = 804,
  cudaErrorNotSupported = 801,
  cudaErrorLaunchFailure = 719
} cudaError_t;
cudaError_t cudaGetLastError();
inline const char* cudaGetErrorName(cudaError_t) {
  return "emu";
}
inline const char* cudaGetErrorString(cudaError_t) {
  return "emu";
}

namespace emu {
void syncthreads();
// Warp collective: each lane in `mask` deposits 8 bytes and gets the 32 lanes' deposits (valid
// until the warp's next collective). Reports a lane calling with a mask that excludes it,
// lanes that disagree on the mask, and masks naming lanes past blockDim.
const uint64_t* warp_collective(unsigned mask, uint64_t bits);
unsigned lane_id();
void launch_grid(dim3 g, dim3 b, size_t smem, const std::function<void()>& body);
// Records a finding (kind: RACE, OOB, ALIGN, SHFL, ...); the tests fail on any.
void report(const char* kind, const char* msg);
}  // namespace emu
inline void __syncthreads() {
  emu::syncthreads();
}

template <typename T>
inline uint64_t emu_bits(T v) {
  static_assert(sizeof(T) <= 8);
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
inline T emu_from(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
// PTX shfl semantics, including `width` segments: a source lane outside the segment returns
// the caller's own value; a source lane outside `mask` is undefined on hardware, so reported.
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const uint64_t* all = emu::warp_collective(mask, emu_bits(v));
  int lane = emu::lane_id();
  int max_lane = (lane & ~(width - 1)) + width - 1;
  int j = lane ^ lane_mask;
  if (j > max_lane) j = lane;
  if (!((mask >> j) & 1u)) emu::report("SHFL", "xor reads a lane outside mask");
  return emu_from<T>(all[j]);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const uint64_t* all = emu::warp_collective(mask, emu_bits(v));
  int lane = emu::lane_id();
  int max_lane = (lane & ~(width - 1)) + width - 1;
  int j = lane + (int)delta;
  if (j > max_lane) j = lane;
  if (!((mask >> j) & 1u)) emu::report("SHFL", "down reads a lane outside mask");
  return emu_from<T>(all[j]);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const uint64_t* all = emu::warp_collective(mask, emu_bits(v));
  int lane = emu::lane_id();
  int min_lane = lane & ~(width - 1);
  int j = lane - (int)delta;
  if (j < min_lane) j = lane;
  if (!((mask >> j) & 1u)) emu::report("SHFL", "up reads a lane outside mask");
  return emu_from<T>(all[j]);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const uint64_t* all = emu::warp_collective(mask, emu_bits(v));
  int lane = emu::lane_id();
  int j = (lane & ~(width - 1)) + (src & (width - 1));
  if (!((mask >> j) & 1u)) emu::report("SHFL", "idx reads a lane outside mask");
  return emu_from<T>(all[j]);
}

// Ballot over the lanes of `mask` (a warp collective like the shuffles).
inline unsigned __ballot_sync(unsigned mask, int pred) {
  const uint64_t* all = emu::warp_collective(mask, pred ? 1u : 0u);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && all[l]) r |= 1u << l;
  return r;
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
// CUDA's integer min/max device overloads (host C++ has only std::min/std::max).
inline int min(int a, int b) {
  return a < b ? a : b;
}
inline int max(int a, int b) {
  return a > b ? a : b;
}
// Atomics. With one fiber running at a time a read-modify-write is atomic as it is; these are
// defined in emu_rt.cc, outside the instrumented files, so that threads adding to one address
// in one barrier phase are not reported as a RACE. They still check bounds and alignment, and
// mark the bytes as atomically written: a plain access to them by any thread in the same phase
// (even the same thread, a conservative simplification) is reported.
int atomicAdd(int* p, int v);
double atomicAdd(double* p, double v);

// 16-bit float types with CUDA's conversions: round to nearest even, canonical NaN 0x7fff.
struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};
// The conversions are core/dtype.h's (exact, round to nearest even), with CUDA's canonical NaN.
inline float __half2float(__half h) {
  return pagoda::f16_to_f32(h.x);
}
inline __half __float2half_rn(float f) {
  return __half{std::isnan(f) ? uint16_t{0x7fff} : pagoda::f32_to_f16(f)};
}
inline float __bfloat162float(__nv_bfloat16 b) {
  return pagoda::bf16_to_f32(b.x);
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __nv_bfloat16{std::isnan(f) ? uint16_t{0x7fff} : pagoda::f32_to_bf16(f)};
}

// The _rn intrinsics exist in the kernels to keep nvcc from contracting into an FMA; the
// volatile store does the same to GCC, which builds these files with -ffp-contract=fast (as
// nvcc contracts by default).
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fsub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}
inline float __fdiv_rn(float a, float b) {
  volatile float r = a / b;
  return r;
}
inline double __dsub_rn(double a, double b) {
  volatile double r = a - b;
  return r;
}
inline float __double2float_rn(double d) {
  return (float)d;
}
inline float __int2float_rn(int i) {
  return (float)i;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
// APPROXIMATION: CUDA's rsqrtf has up to 2 ulp of error and expf/sincosf differ from the host
// libm by an ulp or two, so results that go through them are compared with a tolerance.
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}

namespace emu {
// `k<<<g, b, smem, stream>>>(args...)` after xform.py: runs the grid now (the emulator has one
// implicit stream, so "queued" and "done" coincide).
template <typename... P>
auto klaunch(void (*k)(P...), dim3 g, dim3 b, size_t smem = 0, cudaStream_t = nullptr) {
  return [=](auto... args) {
    std::function<void()> body = [&] { k(args...); };
    launch_grid(g, b, smem, body);
  };
}
}  // namespace emu
