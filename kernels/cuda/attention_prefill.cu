// attention_prefill.cu: the opt-in tensor-core path of paged attention for prefill chunks
// (AttentionArgs in kernels/ops.h; the CUDA-core kernel that does everything else is
// attention.cu, the CPU twin kernels/cpu/attention.cc). FlashAttention-2 style: mma.sync
// m16n8k16 (bf16 in, f32 accumulate) for S = Q K^T and O += P V, online softmax in registers.
//
// Which rows. Off unless enabled (PAGODA_CUDA_TC_PREFILL=1, read once, or the test hook
// attention_cuda_tc_for_test with its own threshold); then, for eligible arguments (q, out and
// both caches bf16; head_dim 64 or 128; G = n_heads / n_kv_heads <= 64; q, out and cache bases
// 16-byte aligned: attention_tc_eligible, on the host), this kernel owns every row of every
// sequence with q_len >= min_q_len (kAttentionTcMinQLen = 16 by default), and attention.cu's
// kernel the rest (decode rows, short chunks). Ownership is tc_row_owner
// (attention_prefill.cuh), the same function in both kernels, from query_start alone. Both
// launches go on the caller's stream; nothing is allocated and nothing waits (graph-safe).
//
// Math, for an owned row t of sequence b at position pos = seq_lens[b] - q_len + (t -
// query_start[b]) and query head h of kv head g = h / G (base 2: c = scale * log2(e)):
//   s_p = c * dot(q[t, h], K_p)   (bf16 products, f32 sums in the tensor cores; p in [0, pos])
//   m   = running max of s_p;  P_p = 2^(s_p - m), rounded to bf16 for the PV product
//   l   = sum_p 2^(s_p - m) in f32 (the unrounded weights)
//   out[t, h] = bf16( (sum_p bf16(P_p) V_p) * (1 / l) )
// with the usual online rescaling by 2^(m_old - m_new) of l and the accumulator per key tile.
// Accuracy: the scores are exact bf16 products summed in f32 (as the CUDA-core kernel, in
// another order); the only extra rounding is P to bf16 (relative error <= 2^-8 per weight, the
// bf16 unit roundoff), so P contributes |out - exact| <= 2^-8 max|V| in the worst case (errors
// of independent signs: typically a small fraction of that), plus the final bf16 rounding of
// out (<= 2^-8 |out|), which the CUDA-core kernel has too: within the tests' bf16 tolerance
// against the CPU twin (1e-2 absolute + 1e-2 relative, |V| <= 2; an emulation of this kernel's
// arithmetic measured <= 0.0055). The bits differ from attention.cu's (summation order, P).
//
// Tiling. A CTA (4 warps, 128 threads) takes one kv head g and a window of R = 64 / G
// consecutive rows of the batch (grid [ceil(T / R), KV], windows in reverse order so that the
// last rows of a prompt, which have the most keys, start first). The GQA group is packed into
// the M dimension: tile row m = i * G + j is query row (window row i) x query head g * G + j,
// so every K/V tile loaded serves all G heads, and M = R * G <= 64 rows, 16 per warp. The
// window's rows are cut into runs of consecutive owned rows of one sequence (a window meets at
// most (R - 2) / min_q_len + 2 owned sequences); the CTA computes its runs one after the other.
// Per run: rows r0 .. r0 + n - 1 at positions pos0 .. pos0 + n - 1 read keys [0, kend),
// kend = pos0 + n, in tiles of 64 keys:
//   - shared memory: K tile [64][D] and V tile [64][D] bf16 (Q goes through the V tile at the
//     start of a run), rows in 16-byte chunks with chunk c of row r stored at c ^ (r & 7), so
//     the 8 row addresses of every ldmatrix phase hit 8 different bank groups; plus the tiles'
//     cache row offsets (2 x 64 int64) and the window's row owners: 17664 bytes (D = 64),
//     34048 bytes (D = 128): static, under 48 KiB.
//   - loads: cp.async 16 bytes per thread and chunk (a key row is D * 2 contiguous bytes of the
//     paged cache: k_cache[block_tables[b][p / bs], p % bs, g, :]); 64 threads compute a
//     tile's 64 row offsets (one block-table read and division each) one tile ahead; keys at
//     or past kend and Q rows past M are zero-filled, never read. Schedule (FA2): V_j is loaded
//     while S_j = Q K_j^T and the softmax run, K_{j+1} while O += P_j V_j runs; two barriers
//     per tile.
//   - registers per thread (D = 128): Q fragments 32 (loaded once per run with ldmatrix), O
//     accumulators 64 (16 rows x 128 dims per warp), S 32, P 16 (bf16 pairs), m and l of its
//     two rows. K B-fragments by ldmatrix, V B-fragments by ldmatrix.trans. ptxas (CUDA 13):
//     232 registers at D = 128 (2 CTAs, 8 warps per SM), 156 (sm_80) / 158 (sm_90a) at D = 64,
//     no spills; capping at 168 for 3 CTAs per SM spills, so it is not capped.
//   - causal mask: key p is kept for tile row m iff p <= limit(m) = pos0 + m / G (rows past M:
//     kend - 1). A warp skips a key tile wholly above its rows' limits (the same bits as
//     computing it: the weights are 0 and the rescale factor 1) and masks only tiles that
//     cross its smallest limit. Key 0 is in every row's context, so m is finite after tile 0.
// A row's bits depend only on its own q row, its sequence's keys and its position (not on the
// window, the run or the rest of the batch): the tensor-core path is batch-invariant within
// itself. It is not bit-identical to attention.cu, so a row computed here (in a chunk of q_len
// >= min_q_len) differs in its last bits from the same row in a decode step or a short chunk:
// that breaks kernels/cuda/README.md's batch-invariance contract, which is why it is opt-in.
// out may alias q: a CTA writes exactly the (row, head) pairs whose q it read itself, after
// reading them; other CTAs read other pairs, and attention.cu's kernel never touches these rows.
// Bad metadata of an owned sequence (seq_len < q_len, more blocks than max_blocks, a block id
// outside [0, num_blocks) among blocks [0, ceil(kend / bs))) is never dereferenced: the run's
// rows (all G heads) are set to NaN, like attention.cu's kernel does for its rows; for
// seq_len < q_len that is every run of the sequence.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/attention_prefill.cuh"
#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kBlockM = 16 * kWarps;  // tile rows: (query row, head) pairs
constexpr int kBlockN = 64;           // keys per tile
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kBlockM == kBlockN, "Q and K/V tiles share the load loop");
static_assert(kAttentionTcMaxGroup == kBlockM);

using bf16 = __nv_bfloat16;

struct PrefillParams {
  const bf16* q;                // [T, H, D]
  const bf16* k_cache;          // [num_blocks, block_size, KV, D]
  const bf16* v_cache;          // [num_blocks, block_size, KV, D]
  const int32_t* block_tables;  // [B, max_blocks]
  const int32_t* seq_lens;      // [B]
  const int32_t* query_start;   // [B + 1]
  bf16* out;                    // [T, H, D]
  int T, B, H, KV, G;
  int R;  // rows per window: kBlockM / G
  int block_size, max_blocks, num_blocks;
  int min_q_len;     // the sequences with q_len >= min_q_len are this kernel's (>= 1)
  float scale_log2;  // scale * log2(e)
};

// ---- PTX wrappers ------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; valid == false writes 16 zero bytes and reads
// nothing (src must still be a mapped, aligned address).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8 and receives,
// in r[i], elements (row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1) of matrix i (.trans: of
// its transpose).
__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// d += a b: a 16x16 (row), b 16x8 (col), d 16x8 f32. Fragments (gid = lane / 4, tig = lane % 4):
// a[0]: (gid, 2 tig + {0,1}), a[1]: (gid + 8, same k), a[2]: (gid, 8 + 2 tig + {0,1}),
// a[3]: (gid + 8, 8 + ...); b0: (k = 2 tig + {0,1}, n = gid), b1: (k + 8, n);
// d[0..1]: (gid, 2 tig + {0,1}), d[2..3]: (gid + 8, 2 tig + {0,1}). Low half = lower index.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// (lo, hi) rounded to nearest even bf16, lo in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof(u));
  return u;
}

// Element offset of 16-byte chunk c of row r in a [64][D] bf16 tile (chunk swizzle c ^ (r & 7)).
template <int D>
__device__ __forceinline__ int swizzled(int r, int c) {
  return r * D + ((c ^ (r & 7)) << 3);
}

// ---- the kernel --------------------------------------------------------------------------------

template <int D>
struct PrefillShared {
  alignas(128) bf16 k[kBlockN * D];
  alignas(128) bf16 v[kBlockN * D];  // and Q at the start of a run
  int64_t slot[2][kBlockN];          // cache element offset of a tile's key rows; -1: zero-fill
  int owner[kBlockM];                // window row i: tc_row_owner(ws + i) (R <= kBlockM rows)
};

// Writes NaN to tile rows [0, m_rows) of the run at row r0 (all G heads of kv head g).
__device__ __forceinline__ void nan_rows(const PrefillParams& p, int D, int g, int r0, int m_rows) {
  const bf16 nan = __float2bfloat16_rn(__int_as_float(0x7fc00000));
  for (int e = threadIdx.x; e < m_rows * D; e += kThreads) {
    const int m = e / D, i = m / p.G;
    p.out[(static_cast<int64_t>(r0 + i) * p.H + static_cast<int64_t>(g) * p.G + (m - i * p.G)) * D +
          (e - m * D)] = nan;
  }
}

// Run: rows [r0, r0 + n_rows) of sequence b (all owned by this kernel), kv head g. Starts and
// ends with every thread past its last shared-memory access of the previous run (the caller's
// barrier).
template <int D>
__device__ __forceinline__ void attend_run(const PrefillParams& p, PrefillShared<D>& sh, int g,
                                           int b, int r0, int n_rows) {
  constexpr int kChunks = D / 8;                    // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kChunks;  // rows one load pass covers
  constexpr int kPasses = kBlockN / kRowsPerPass;   // passes per 64-row tile
  constexpr int kKSteps = D / 16;                   // k-steps of Q K^T
  constexpr int kSTiles = kBlockN / 8;              // n-tiles of S
  constexpr int kPSteps = kBlockN / 16;             // k-steps of P V
  constexpr int kOTiles = D / 8;                    // n-tiles of O
  static_assert(kThreads % kChunks == 0 && kBlockN % kRowsPerPass == 0);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int m_rows = n_rows * p.G;  // valid tile rows

  // Metadata of the run, checked before anything is read through it (64-bit: no overflow).
  const int64_t qs0 = p.query_start[b];
  const int64_t q_len = static_cast<int64_t>(p.query_start[b + 1]) - qs0;
  const int64_t pos0_64 = static_cast<int64_t>(p.seq_lens[b]) - q_len + (r0 - qs0);
  const int64_t kend_64 = pos0_64 + n_rows;  // <= seq_lens[b] when pos0 >= 0
  // seq_len < q_len is bad for every run of the sequence, also a later one whose own first
  // position comes out >= 0 (found by a host emulation of this kernel).
  const bool ok = static_cast<int64_t>(p.seq_lens[b]) >= q_len && pos0_64 >= 0 &&
                  (kend_64 - 1) / p.block_size < p.max_blocks;
  const int32_t* table = p.block_tables + static_cast<int64_t>(b) * p.max_blocks;
  const int pos0 = ok ? static_cast<int>(pos0_64) : 0;
  const int kend = ok ? static_cast<int>(kend_64) : 1;
  bool bad = !ok;
  if (ok) {
    const int n_blocks = (kend - 1) / p.block_size + 1;
    for (int i = tid; i < n_blocks; i += kThreads) {
      const int32_t id = table[i];
      bad |= id < 0 || id >= p.num_blocks;
    }
  }
  // Cache offsets of the rows of the tile at key n0 (threads < kBlockN, one row each); -1 past
  // kend. Only called when every block id below kend was checked.
  const int64_t slot_stride = static_cast<int64_t>(p.KV) * D;
  const int64_t head_offset = static_cast<int64_t>(g) * D;
  auto fill_slots = [&](int buf, int n0) {
    if (tid < kBlockN) {
      int64_t off = -1;
      if (tid < kend - n0) {
        const int key = n0 + tid;
        const int blk = key / p.block_size;
        const int64_t row =
            static_cast<int64_t>(table[blk]) * p.block_size + (key - blk * p.block_size);
        off = row * slot_stride + head_offset;
      }
      sh.slot[buf][tid] = off;
    }
  };
  if (ok) fill_slots(0, 0);  // (a bad id only makes offsets that are never used)
  if (__syncthreads_or(bad)) {
    nan_rows(p, D, g, r0, m_rows);
    return;
  }

  const int c = tid % kChunks;  // this thread's chunk in every row it loads
  auto load_tile = [&](bf16* dst, const bf16* cache, int buf) {
#pragma unroll
    for (int ps = 0; ps < kPasses; ++ps) {
      const int r = tid / kChunks + ps * kRowsPerPass;
      const int64_t off = sh.slot[buf][r];
      cp_async16(smem_addr(dst + swizzled<D>(r, c)), off >= 0 ? cache + off + c * 8 : cache,
                 off >= 0);
    }
  };
  // Q: tile row m = i * G + j is q[r0 + i, g * G + j, :]; rows past m_rows are zero.
#pragma unroll
  for (int ps = 0; ps < kPasses; ++ps) {
    const int m = tid / kChunks + ps * kRowsPerPass;
    const bf16* src = p.q;
    if (m < m_rows) {
      const int i = m / p.G;
      src +=
          (static_cast<int64_t>(r0 + i) * p.H + static_cast<int64_t>(g) * p.G + (m - i * p.G)) * D +
          c * 8;
    }
    cp_async16(smem_addr(sh.v + swizzled<D>(m, c)), src, m < m_rows);
  }
  load_tile(sh.k, p.k_cache, 0);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  uint32_t qf[kKSteps][4];  // A fragments of the warp's 16 tile rows
#pragma unroll
  for (int ks = 0; ks < kKSteps; ++ks) {
    ldmatrix_x4(smem_addr(sh.v + swizzled<D>(warp * 16 + (lane & 15), 2 * ks + (lane >> 4))),
                qf[ks]);
  }

  // The causal limits: tile row m keeps keys <= limit(m) (monotone in m).
  auto limit_of = [&](int m) {
    const int i = m / p.G;
    return i < n_rows ? pos0 + i : kend - 1;
  };
  const int row_a = warp * 16 + lane / 4;  // this thread's rows: row_a and row_a + 8
  const int lim_a = limit_of(row_a), lim_b = limit_of(row_a + 8);
  const bool warp_active = warp * 16 < m_rows;
  const int warp_lo = limit_of(warp * 16);
  const int warp_hi = limit_of(min(warp * 16 + 15, m_rows - 1));
  const int tig2 = 2 * (lane % 4);

  float o[kOTiles][4];
#pragma unroll
  for (int nt = 0; nt < kOTiles; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

  const int n_tiles = (kend - 1) / kBlockN + 1;
  for (int j = 0; j < n_tiles; ++j) {
    const int n0 = j * kBlockN;
    cp_async_wait_all();  // K_j
    __syncthreads();      // K_j and slot[j & 1] visible; every warp is done with sh.v
    load_tile(sh.v, p.v_cache, j & 1);
    cp_async_commit();
    if (j + 1 < n_tiles) fill_slots((j + 1) & 1, n0 + kBlockN);
    const bool compute = warp_active && n0 <= warp_hi;  // uniform over the warp
    uint32_t pf[kPSteps][4];                            // P as A fragments
    if (compute) {
      float s[kSTiles][4];
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
        for (int np = 0; np < kSTiles / 2; ++np) {
          // matrices: keys 16 np + {0-7, 0-7, 8-15, 8-15} x dims 16 ks + {0-7, 8-15, 0-7, 8-15}
          uint32_t kb[4];
          ldmatrix_x4(smem_addr(sh.k + swizzled<D>(16 * np + 8 * (lane >> 4) + (lane & 7),
                                                   2 * ks + ((lane >> 3) & 1))),
                      kb);
          mma_bf16(s[2 * np], qf[ks], kb[0], kb[1]);
          mma_bf16(s[2 * np + 1], qf[ks], kb[2], kb[3]);
        }
      }
      // Online softmax of the thread's two rows (each spread over the 4 lanes of a quad).
      const bool masked = kBlockN - 1 > warp_lo - n0;  // the tile crosses some row's limit
      float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[nt][e] * p.scale_log2;
          if (masked && 8 * nt + tig2 + (e & 1) > (e < 2 ? lim_a : lim_b) - n0) x = -INFINITY;
          s[nt][e] = x;
          if (e < 2) {
            mx_a = fmaxf(mx_a, x);
          } else {
            mx_b = fmaxf(mx_b, x);
          }
        }
      }
#pragma unroll
      for (int off = 1; off < 4; off *= 2) {
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
      }
      const float new_a = fmaxf(m_a, mx_a), new_b = fmaxf(m_b, mx_b);
      const float use_a = new_a == -INFINITY ? 0.0f : new_a;  // (never after tile 0: key 0)
      const float use_b = new_b == -INFINITY ? 0.0f : new_b;
      const float alpha_a = exp2f(m_a - use_a), alpha_b = exp2f(m_b - use_b);
      m_a = new_a;
      m_b = new_b;
      float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) {
        s[nt][0] = exp2f(s[nt][0] - use_a);
        s[nt][1] = exp2f(s[nt][1] - use_a);
        s[nt][2] = exp2f(s[nt][2] - use_b);
        s[nt][3] = exp2f(s[nt][3] - use_b);
        sum_a += s[nt][0] + s[nt][1];
        sum_b += s[nt][2] + s[nt][3];
      }
      l_a = fmaf(l_a, alpha_a, sum_a);
      l_b = fmaf(l_b, alpha_b, sum_b);
#pragma unroll
      for (int nt = 0; nt < kOTiles; ++nt) {
        o[nt][0] *= alpha_a;
        o[nt][1] *= alpha_a;
        o[nt][2] *= alpha_b;
        o[nt][3] *= alpha_b;
      }
#pragma unroll
      for (int kk = 0; kk < kPSteps; ++kk) {
        pf[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        pf[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        pf[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pf[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      }
    }
    cp_async_wait_all();  // V_j
    __syncthreads();      // V_j and slot[(j + 1) & 1] visible; every warp is done with sh.k
    if (j + 1 < n_tiles) {
      load_tile(sh.k, p.k_cache, (j + 1) & 1);
      cp_async_commit();
    }
    if (compute) {
#pragma unroll
      for (int kk = 0; kk < kPSteps; ++kk) {
#pragma unroll
        for (int dp = 0; dp < kOTiles / 2; ++dp) {
          // matrices: keys 16 kk + {0-7, 8-15, 0-7, 8-15} x dims 16 dp + {0-7, 0-7, 8-15, 8-15}
          uint32_t vb[4];
          ldmatrix_x4_trans(
              smem_addr(sh.v + swizzled<D>(16 * kk + 8 * ((lane >> 3) & 1) + (lane & 7),
                                           2 * dp + (lane >> 4))),
              vb);
          mma_bf16(o[2 * dp], pf[kk], vb[0], vb[1]);
          mma_bf16(o[2 * dp + 1], pf[kk], vb[2], vb[3]);
        }
      }
    }
  }

  // out = O / l, l summed over the quad (xor order: the same bits in all four lanes).
#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
  }
  if (!warp_active) return;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int m = row_a + 8 * half;
    if (m >= m_rows) continue;
    const float inv = 1.0f / (half == 0 ? l_a : l_b);
    const int i = m / p.G;
    bf16* dst =
        p.out +
        (static_cast<int64_t>(r0 + i) * p.H + static_cast<int64_t>(g) * p.G + (m - i * p.G)) * D +
        tig2;
#pragma unroll
    for (int nt = 0; nt < kOTiles; ++nt) {
      *reinterpret_cast<uint32_t*>(dst + 8 * nt) =
          pack_bf16(o[nt][2 * half] * inv, o[nt][2 * half + 1] * inv);
    }
  }
}

// grid [ceil(T / R), KV], block [kThreads]. Window w (counted from the end) holds rows
// [ws, ws + R) of the batch.
template <int D>
__global__ void __launch_bounds__(kThreads) attention_prefill_kernel(const PrefillParams p) {
  __shared__ PrefillShared<D> sh;
  const int tid = threadIdx.x;
  const int g = blockIdx.y;
  const int ws = static_cast<int>(gridDim.x - 1 - blockIdx.x) * p.R;
  const int n_win = min(p.R, p.T - ws);
  if (tid < n_win) sh.owner[tid] = tc_row_owner(p.query_start, p.B, ws + tid, p.min_q_len);
  __syncthreads();
  // The runs: maximal stretches of window rows with the same owner >= 0, in order. Every thread
  // reads the same owners, so the loop is uniform over the CTA.
  for (int i0 = 0;;) {
    while (i0 < n_win && sh.owner[i0] < 0) ++i0;
    if (i0 >= n_win) break;
    const int b = sh.owner[i0];
    int i1 = i0 + 1;
    while (i1 < n_win && sh.owner[i1] == b) ++i1;
    attend_run<D>(p, sh, g, b, ws + i0, i1 - i0);
    __syncthreads();  // the run's shared memory is free
    i0 = i1;
  }
}

}  // namespace

bool attention_tc_eligible(const AttentionArgs& a) {
  if (a.q.ndim != 3 || a.out.ndim != 3 || a.k_cache.ndim != 4 || a.v_cache.ndim != 4) return false;
  if (a.q.dtype != DType::kBF16 || a.out.dtype != DType::kBF16 || a.k_cache.dtype != DType::kBF16 ||
      a.v_cache.dtype != DType::kBF16) {
    return false;
  }
  const int64_t H = a.q.shape[1], D = a.q.shape[2], KV = a.k_cache.shape[2];
  if ((D != 64 && D != 128) || a.k_cache.shape[3] != D) return false;
  if (KV <= 0 || H < KV || H % KV != 0 || H / KV > kAttentionTcMaxGroup) return false;
  for (const void* ptr : {a.q.data, a.out.data, a.k_cache.data, a.v_cache.data}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;
  }
  return true;
}

int attention_tc_min_q_len() {
  static const int min_q_len = [] {
    const char* env = std::getenv("PAGODA_CUDA_TC_PREFILL");
    return env != nullptr && std::strcmp(env, "1") == 0 ? kAttentionTcMinQLen : 0;
  }();
  return min_q_len;
}

Status attention_prefill_cuda(const AttentionArgs& a, cudaStream_t stream, int min_q_len) {
  if (min_q_len < 1) {
    return InvalidArgument("attention: tensor-core min_q_len must be >= 1, got " +
                           std::to_string(min_q_len));
  }
  if (!attention_tc_eligible(a)) {
    return InvalidArgument(
        "attention: the tensor-core prefill path needs bf16 q/out/caches, "
        "head_dim 64 or 128, n_heads / n_kv_heads <= 64 and 16-byte aligned "
        "bases, got q " +
        a.q.describe() + ", k_cache " + a.k_cache.describe());
  }
  const int64_t T = a.q.shape[0], H = a.q.shape[1], D = a.q.shape[2];
  const int64_t KV = a.k_cache.shape[2], G = H / KV;
  if (T == 0 || H == 0) return OkStatus();
  const int R = static_cast<int>(kBlockM / G);
  const PrefillParams p{static_cast<const bf16*>(a.q.data),
                        static_cast<const bf16*>(a.k_cache.data),
                        static_cast<const bf16*>(a.v_cache.data),
                        a.block_tables.as<const int32_t>(),
                        a.seq_lens.as<const int32_t>(),
                        a.query_start.as<const int32_t>(),
                        static_cast<bf16*>(a.out.data),
                        static_cast<int>(T),
                        static_cast<int>(a.seq_lens.shape[0]),
                        static_cast<int>(H),
                        static_cast<int>(KV),
                        static_cast<int>(G),
                        R,
                        static_cast<int>(a.k_cache.shape[1]),
                        static_cast<int>(a.block_tables.shape[1]),
                        static_cast<int>(a.k_cache.shape[0]),
                        min_q_len,
                        a.scale * kLog2e};
  // T < 2^31 (check_attention_args): the window count fits grid x; KV <= H <= 65535 fits y.
  const dim3 grid(static_cast<unsigned>((T + R - 1) / R), static_cast<unsigned>(KV));
  if (D == 64) {
    attention_prefill_kernel<64><<<grid, kThreads, 0, stream>>>(p);
  } else {
    attention_prefill_kernel<128><<<grid, kThreads, 0, stream>>>(p);
  }
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

}  // namespace pagoda::cuda
