// Matmul: out[t, n] = sum_k x[t, k] * w[n, k] (+ bias[n])
//   x    [T, K]  f32
//   w    [N, K]  f32 / f16 / bf16 (row-major, as stored by Hugging Face; unaligned is fine)
//   bias [N]     f32 / f16 / bf16, optional
//   out  [T, N]  f32
//
// Accumulation order (the batch-invariance contract): for every (t, n), one 8-lane f32
// accumulator; lane l accumulates x[t, k] * w[n, k] for k = l, l + 8, l + 16, ... in increasing
// k with FMA, the K % 8 tail zero-padded into one more FMA; then hsum8 (a fixed tree) and, last,
// + bias[n]. Every tile shape below performs exactly this sequence for each of its outputs, so
// out[t, n] is bit-identical whatever T is, however rows are tiled and however N is split
// across threads.
//
// Work split: threads take contiguous chunks of N (ThreadPool::parallel_for). Inside a chunk,
// a tile is RT rows of x (up to 4) by CN rows of w (up to 4): the CN weight rows are loaded and
// widened once per 8 k and reused by RT activation rows (prefill), and decode (T = 1) streams
// 4 weight rows at once. For large T, rows of x are visited in chunks sized to stay in L2 while
// the CN weight rows of a tile stay in L1.
#include <algorithm>
#include <array>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/simd.h"

namespace pagoda::cpu {
namespace {

constexpr int kMaxRows = 4;      // RT: rows of x per tile
constexpr int kMaxCols = 4;      // CN: rows of w per tile
constexpr int kPrefillCols = 3;  // CN when T > 1: 4 x 3 accumulators + 3 weights fit 16 ymm
constexpr int kDecodeCols = 4;   // CN when T == 1
constexpr int64_t kL2RowBytes = 512 * 1024;  // bytes of x rows visited per pass over a chunk
constexpr int64_t kMinMacsPerChunk = 1 << 16;

struct MatmulProblem {
  const float* x;    // [T, K]
  const char* w;     // [N, K]
  const void* bias;  // [N] or null
  DType bias_dtype;
  float* out;  // [T, N]
  int64_t T, K, N;
};

// out[t0 + r, n0 + c] for r < RT, c < CN, in the order documented at the top.
template <DType WD, int RT, int CN>
void matmul_tile(const MatmulProblem& p, int64_t t0, int64_t n0) {
  const int64_t K = p.K;
  const size_t row_bytes = static_cast<size_t>(K) * storage_size_of<WD>();
  const float* x = p.x + t0 * K;                              // [RT, K]
  const char* w = p.w + static_cast<size_t>(n0) * row_bytes;  // [CN, K]
  __m256 acc[RT][CN];
  for (int r = 0; r < RT; ++r) {
    for (int c = 0; c < CN; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    __m256 wv[CN];
    for (int c = 0; c < CN; ++c) wv[c] = load8<WD>(w + c * row_bytes, k);
    for (int r = 0; r < RT; ++r) {
      const __m256 xv = load8(x + r * K + k);
      for (int c = 0; c < CN; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const int rem = static_cast<int>(K - k);
    __m256 wv[CN];
    for (int c = 0; c < CN; ++c) wv[c] = load_partial8<WD>(w + c * row_bytes, k, rem);
    for (int r = 0; r < RT; ++r) {
      const __m256 xv = load_partial8(x + r * K + k, rem);
      for (int c = 0; c < CN; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < RT; ++r) {
    float* out = p.out + (t0 + r) * p.N + n0;
    for (int c = 0; c < CN; ++c) {
      float s = hsum8(acc[r][c]);
      if (p.bias != nullptr) s += load_as_f32(p.bias, p.bias_dtype, n0 + c);
      out[c] = s;
    }
  }
}

using TileFn = void (*)(const MatmulProblem&, int64_t, int64_t);

template <DType WD, int RT>
constexpr std::array<TileFn, kMaxCols> tile_row() {
  return {&matmul_tile<WD, RT, 1>, &matmul_tile<WD, RT, 2>, &matmul_tile<WD, RT, 3>,
          &matmul_tile<WD, RT, 4>};
}

template <DType WD>
constexpr std::array<std::array<TileFn, kMaxCols>, kMaxRows> kTiles = {
    tile_row<WD, 1>(), tile_row<WD, 2>(), tile_row<WD, 3>(), tile_row<WD, 4>()};

// Rows n in [n_begin, n_end) of the output, all T rows.
template <DType WD>
void matmul_chunk(const MatmulProblem& p, int64_t n_begin, int64_t n_end) {
  const int cols = p.T == 1 ? kDecodeCols : kPrefillCols;
  const int64_t rows_per_pass = std::max<int64_t>(
      kMaxRows, kL2RowBytes / std::max<int64_t>(1, p.K * 4) / kMaxRows * kMaxRows);
  for (int64_t t_pass = 0; t_pass < p.T; t_pass += rows_per_pass) {
    const int64_t t_pass_end = std::min(p.T, t_pass + rows_per_pass);
    for (int64_t n = n_begin; n < n_end; n += cols) {
      const int cn = static_cast<int>(std::min<int64_t>(cols, n_end - n));
      for (int64_t t = t_pass; t < t_pass_end; t += kMaxRows) {
        const int rt = static_cast<int>(std::min<int64_t>(kMaxRows, t_pass_end - t));
        kTiles<WD>[rt - 1][cn - 1](p, t, n);
      }
    }
  }
}

}  // namespace

Status matmul(ThreadPool& pool, const MatmulArgs& a) {
  constexpr const char* kOp = "matmul";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "x", a.x, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "w", a.w, 2, kFloatDTypes));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 2, {DType::kF32}));
  const int64_t T = a.x.shape[0], K = a.x.shape[1], N = a.w.shape[0];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "w", a.w, 1, K, "K (x dim 1)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 0, T, "T (x dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 1, N, "N (w dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "x", a.x));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "w", a.w));
  if (!a.bias.empty()) {
    PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "bias", a.bias, 1, kFloatDTypes));
    PAGODA_RETURN_IF_ERROR(check_dim(kOp, "bias", a.bias, 0, N, "N (w dim 0)"));
    PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "bias", a.bias));
  }
  if (T == 0 || N == 0) return OkStatus();
  const MatmulProblem p{a.x.as<const float>(),
                        static_cast<const char*>(a.w.data),
                        a.bias.empty() ? nullptr : a.bias.data,
                        a.bias.dtype,
                        a.out.as<float>(),
                        T,
                        K,
                        N};
  const int64_t grain = std::max<int64_t>(kMaxCols, kMinMacsPerChunk / std::max<int64_t>(1, T * K));
  dispatch_float(a.w.dtype, [&](auto d) {
    pool.parallel_for(
        N, grain, [&](int64_t n_begin, int64_t n_end) { matmul_chunk<d()>(p, n_begin, n_end); });
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
