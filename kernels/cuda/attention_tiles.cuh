// attention_tiles.cuh: the key walk of attention.cu's kernel (read that file's top comment
// first). A lane group of lpk lanes shares a key row: lane c of the group holds head dims
// [8c, 8c + 8) of the row, loaded in 16-byte pieces (one for f16/bf16, two for f32) or, where
// rows are not 16-byte aligned, element by element; the dot products with the CTA's GH query
// heads are finished by xor shuffles inside the group. Each group runs its own online softmax
// over its keys, in registers, with no barrier. Included by attention.cu only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda::attention_tiles {

inline constexpr int kWarpSize = 32;
inline constexpr int kThreads = 128;  // threads per CTA
inline constexpr int kWarps = kThreads / kWarpSize;
inline constexpr int kChunk = 8;  // head dims per lane of a key row
inline constexpr int kMaxHeadDim = kAttentionMaxHeadDim;
inline constexpr int kMaxGroupHeads = 8;  // query heads per CTA (GH <= 8)
static_assert(kMaxHeadDim <= kChunk * kWarpSize, "a key row must fit the chunks of one warp");

// Keys per lane group and iteration, KB: loads in flight against registers (q and acc take
// 16 GH, a key's K and V chunks 8 registers in f16/bf16 and 16 in f32, its scores GH).
template <typename Cache, int GH>
inline constexpr int kKeysPerGroup = sizeof(Cache) == 4 ? (GH == 2 ? 4 : 2)
                                                        : (GH >= 8 ? 2 : (GH >= 4 ? 4 : 8));

// 8 cache elements of a key row as loaded: 16 bytes for f16/bf16, 32 for f32.
template <typename Cache>
struct Chunk {
  uint4 bits;  // __half or __nv_bfloat16: element 2i in the low half of word i
};
template <>
struct Chunk<float> {
  float4 lo, hi;
};

// Elements [d0, d0 + 8) of the row at `row`; elements at or past `limit` read as 0 and are not
// touched (limit = 0 for a key outside the range). kVec: 16-byte loads, which needs the row
// 16-byte aligned and limit a multiple of the elements per 16 bytes (attention.cu decides).
template <bool kVec>
__device__ __forceinline__ void load_chunk(const float* row, int d0, int limit, Chunk<float>& c) {
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if constexpr (kVec) {
    c.lo = d0 < limit ? __ldg(reinterpret_cast<const float4*>(row + d0)) : zero;
    c.hi = d0 + 4 < limit ? __ldg(reinterpret_cast<const float4*>(row + d0 + 4)) : zero;
  } else {
    float v[kChunk];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) v[i] = d0 + i < limit ? __ldg(row + d0 + i) : 0.0f;
    c.lo = make_float4(v[0], v[1], v[2], v[3]);
    c.hi = make_float4(v[4], v[5], v[6], v[7]);
  }
}

template <bool kVec, typename Half>
__device__ __forceinline__ void load_chunk(const Half* row, int d0, int limit, Chunk<Half>& c) {
  static_assert(sizeof(Half) == 2);
  if constexpr (kVec) {
    c.bits = d0 < limit ? __ldg(reinterpret_cast<const uint4*>(row + d0)) : make_uint4(0, 0, 0, 0);
  } else {
    const unsigned short* r = reinterpret_cast<const unsigned short*>(row) + d0;
    uint32_t w[kChunk / 2];
#pragma unroll
    for (int i = 0; i < kChunk / 2; ++i) {
      const uint32_t lo = d0 + 2 * i < limit ? __ldg(r + 2 * i) : 0u;
      const uint32_t hi = d0 + 2 * i + 1 < limit ? __ldg(r + 2 * i + 1) : 0u;
      w[i] = lo | hi << 16;
    }
    c.bits = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// The chunk as 8 floats (exact conversions).
__device__ __forceinline__ void to_floats(const Chunk<float>& c, float (&f)[kChunk]) {
  f[0] = c.lo.x, f[1] = c.lo.y, f[2] = c.lo.z, f[3] = c.lo.w;
  f[4] = c.hi.x, f[5] = c.hi.y, f[6] = c.hi.z, f[7] = c.hi.w;
}
__device__ __forceinline__ void to_floats(const Chunk<__nv_bfloat16>& c, float (&f)[kChunk]) {
  const uint32_t w[kChunk / 2] = {c.bits.x, c.bits.y, c.bits.z, c.bits.w};
#pragma unroll
  for (int i = 0; i < kChunk / 2; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void to_floats(const Chunk<__half>& c, float (&f)[kChunk]) {
  const uint32_t w[kChunk / 2] = {c.bits.x, c.bits.y, c.bits.z, c.bits.w};
#pragma unroll
  for (int i = 0; i < kChunk / 2; ++i) {
    f[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
    f[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
  }
}

// Where the keys of one kv head live (attention.cu's AttentionParams, narrowed).
template <typename Cache>
struct KeyRows {
  const Cache* k_cache;  // [num_blocks, block_size, KV, D]
  const Cache* v_cache;  // [num_blocks, block_size, KV, D]
  const int32_t* table;  // [max_blocks]: the sequence's block ids (all checked in range)
  int block_size;
  int64_t block_stride;  // block_size * KV * D: elements per block
  int64_t slot_stride;   // KV * D: elements per slot
  int64_t head_offset;   // g * D: the kv head's row within a slot
  int D;
  int lpk;  // lanes per key row: a power of two >= ceil(D / 8), at most 32
};

// One lane group's online-softmax state for GH heads, in base-2 units (scores carry log2(e)):
// m = max score, l = sum 2^(s - m), acc = sum 2^(s - m) V over the lane's 8 dims. Every lane of
// a group holds the same m and l.
template <int GH>
struct GroupState {
  float m[GH];
  float l[GH];
  float acc[GH][kChunk];
};

// Walks keys [k0, k1) (k0 < k1): iteration i gives group `grp` (threadIdx.x / lpk, warp-major)
// keys k0 + i * tile + grp * KB + k, k < KB, tile = (kThreads / lpk) * KB. q holds the lane's
// dims of the GH query rows (zero past D), scaled by scale * log2(e). Per iteration: all K and
// V chunks of the group's keys are loaded first; s[j][k] = sum over the group's lanes of the
// lane dot products (xor butterfly: every lane gets the same bits); keys past k1 score -inf;
// m' = max(m, s[j][.]); l = l 2^(m - m') + sum_k 2^(s - m') in increasing k; acc likewise.
// No shared memory, no barrier; all 32 lanes of every warp run the same iterations.
template <typename Cache, int GH, bool kVec>
__device__ __forceinline__ void attend_range(const KeyRows<Cache>& kr, int k0, int k1,
                                             const float (&q)[GH][kChunk], GroupState<GH>& st) {
  constexpr int KB = kKeysPerGroup<Cache, GH>;
  const int lane = threadIdx.x % kWarpSize;
  const int first = static_cast<int>(threadIdx.x) / kr.lpk * KB;  // the group's first key offset
  const int d0 = (lane & (kr.lpk - 1)) * kChunk;
  const int tile = kThreads / kr.lpk * KB;
#pragma unroll
  for (int j = 0; j < GH; ++j) {
    st.m[j] = -INFINITY;
    st.l[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < kChunk; ++i) st.acc[j][i] = 0.0f;
  }

  for (int base = k0;; base += tile) {
    const int rem = k1 - base;  // keys base + [0, rem) remain; key `first + k` valid if < rem
    // The rows of the group's keys: consecutive keys, so one division per iteration.
    int64_t row[KB];
#pragma unroll
    for (int k = 0; k < KB; ++k) row[k] = 0;
    if (first < rem) {
      const int key0 = base + first;
      int blk = key0 / kr.block_size;
      int off = key0 - blk * kr.block_size;
      int64_t block_row = __ldg(kr.table + blk) * kr.block_stride + kr.head_offset;
#pragma unroll
      for (int k = 0; k < KB; ++k) {
        if (k > 0 && ++off == kr.block_size) {
          off = 0;
          ++blk;
          if (first + k < rem) block_row = __ldg(kr.table + blk) * kr.block_stride + kr.head_offset;
        }
        row[k] = block_row + off * kr.slot_stride;
      }
    }
    Chunk<Cache> kc[KB], vc[KB];
#pragma unroll
    for (int k = 0; k < KB; ++k) {
      load_chunk<kVec>(kr.k_cache + row[k], d0, first + k < rem ? kr.D : 0, kc[k]);
    }
#pragma unroll
    for (int k = 0; k < KB; ++k) {
      load_chunk<kVec>(kr.v_cache + row[k], d0, first + k < rem ? kr.D : 0, vc[k]);
    }

    // Scores.
    float s[GH][KB];
#pragma unroll
    for (int k = 0; k < KB; ++k) {
      float kf[kChunk];
      to_floats(kc[k], kf);
#pragma unroll
      for (int j = 0; j < GH; ++j) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kChunk; ++i) dot = fmaf(q[j][i], kf[i], dot);
        s[j][k] = dot;
      }
    }
    for (int offset = kr.lpk / 2; offset > 0; offset /= 2) {
#pragma unroll
      for (int j = 0; j < GH; ++j) {
#pragma unroll
        for (int k = 0; k < KB; ++k) s[j][k] += __shfl_xor_sync(0xffffffffu, s[j][k], offset);
      }
    }

    // Online softmax, then the values.
    float alpha[GH];
#pragma unroll
    for (int j = 0; j < GH; ++j) {
      float m_new = st.m[j];
#pragma unroll
      for (int k = 0; k < KB; ++k) {
        if (first + k < rem) {
          m_new = fmaxf(m_new, s[j][k]);
        } else {
          s[j][k] = -INFINITY;
        }
      }
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no key yet: keep it finite
      alpha[j] = exp2f(st.m[j] - m_use);                      // 0 while m is -inf
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < KB; ++k) {
        s[j][k] = exp2f(s[j][k] - m_use);  // now the weight; 0 past k1
        sum += s[j][k];
      }
      st.l[j] = fmaf(st.l[j], alpha[j], sum);
      st.m[j] = m_new;
#pragma unroll
      for (int i = 0; i < kChunk; ++i) st.acc[j][i] *= alpha[j];
    }
#pragma unroll
    for (int k = 0; k < KB; ++k) {
      float vf[kChunk];
      to_floats(vc[k], vf);
#pragma unroll
      for (int j = 0; j < GH; ++j) {
#pragma unroll
        for (int i = 0; i < kChunk; ++i) st.acc[j][i] = fmaf(s[j][k], vf[i], st.acc[j][i]);
      }
    }
    if (rem <= tile) break;  // (written so that base + tile never passes k1: no overflow)
  }
}

// Merges the states of the kWarpSize / lpk groups of a warp (xor butterfly over the group
// index, from the nearest group out); afterwards lanes [0, lpk) (group 0) hold the warp's state
// of every key the warp walked. (M = max(m, m_o), c = 2^(m - M), c_o = 2^(m_o - M):
// l = l c + l_o c_o, acc = acc c + acc_o c_o.)
template <int GH>
__device__ __forceinline__ void merge_warp_groups(GroupState<GH>& st, int lpk) {
  for (int offset = lpk; offset < kWarpSize; offset *= 2) {
#pragma unroll
    for (int j = 0; j < GH; ++j) {
      const float m_o = __shfl_xor_sync(0xffffffffu, st.m[j], offset);
      const float l_o = __shfl_xor_sync(0xffffffffu, st.l[j], offset);
      const float m_new = fmaxf(st.m[j], m_o);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // both empty: c = c_o = 0
      const float c = exp2f(st.m[j] - m_use);
      const float c_o = exp2f(m_o - m_use);
      st.l[j] = fmaf(l_o, c_o, st.l[j] * c);
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        const float acc_o = __shfl_xor_sync(0xffffffffu, st.acc[j][i], offset);
        st.acc[j][i] = fmaf(acc_o, c_o, st.acc[j][i] * c);
      }
      st.m[j] = m_new;
    }
  }
}

}  // namespace pagoda::cuda::attention_tiles
