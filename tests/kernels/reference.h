// Shared helpers for kernel tests: host tensors with random (never zero) contents, NaN
// poisoning, comparisons against double-precision references, and the reference
// implementations themselves — written the obvious way, in double, reading the same rounded
// values the kernels read.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace pagoda {
// Lets gtest print DType parameters by name.
inline void PrintTo(DType d, std::ostream* os) {
  *os << dtype_name(d);
}
}  // namespace pagoda

namespace pagoda::ref {

// An owning host tensor (64-byte aligned) with a view.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
    numel_ = 1;
    for (int64_t d : shape_) numel_ *= d;
    buf_ = HostBuffer(static_cast<size_t>(numel_) * dtype_size(dtype_) + 64);
  }

  TensorView view() const {
    TensorView v;
    v.data = buf_.data();
    v.dtype = dtype_;
    v.device = Device::kCpu;
    v.ndim = static_cast<int>(shape_.size());
    for (size_t i = 0; i < shape_.size(); ++i) v.shape[i] = shape_[i];
    return v;
  }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  void* data() const { return buf_.data(); }
  float* f32() const { return buf_.as<float>(); }
  int32_t* i32() const { return buf_.as<int32_t>(); }

  // Element i as the kernels see it (f16/bf16 widened exactly).
  double get(int64_t i) const { return load_as_f32(buf_.data(), dtype_, static_cast<size_t>(i)); }
  void set(int64_t i, float v) { store_from_f32(buf_.data(), dtype_, static_cast<size_t>(i), v); }

  // Uniform in [lo, hi) rounded to the dtype, never exactly zero.
  void fill_random(std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> dist(lo, hi);
    for (int64_t i = 0; i < numel_; ++i) {
      float v = 0.0f;
      while (v == 0.0f) {
        set(i, dist(rng));
        v = static_cast<float>(get(i));
      }
    }
  }
  // Every byte 0xff: a NaN in f32, f16 and bf16 (and -1 as i32).
  void poison() { std::memset(buf_.data(), 0xff, nbytes()); }

 private:
  DType dtype_ = DType::kF32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  HostBuffer buf_;
};

inline HostTensor random_tensor(std::mt19937& rng, DType dtype, std::vector<int64_t> shape,
                                float lo = -1.0f, float hi = 1.0f) {
  HostTensor t(dtype, std::move(shape));
  t.fill_random(rng, lo, hi);
  return t;
}

inline HostTensor i32_tensor(const std::vector<int32_t>& values) {
  HostTensor t(DType::kI32, {static_cast<int64_t>(values.size())});
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

inline HostTensor poisoned(DType dtype, std::vector<int64_t> shape) {
  HostTensor t(dtype, std::move(shape));
  t.poison();
  return t;
}

// Every element of `actual` (f32) within abs_tol[i] of `expected`; NaN never passes.
// Reports the number of mismatches and the first few.
inline ::testing::AssertionResult all_close(const float* actual,
                                            const std::vector<double>& expected,
                                            const std::vector<double>& tol) {
  int64_t bad = 0;
  std::ostringstream first;
  first.precision(9);
  for (size_t i = 0; i < expected.size(); ++i) {
    const double err = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    if (!(err <= tol[i]) && ++bad <= 5) {
      first << "\n  [" << i << "] got " << actual[i] << " want " << expected[i] << " (tol "
            << tol[i] << ")";
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << expected.size() << " differ:" << first.str();
}

// Same, with one tolerance: abs_tol + rel_tol * |expected|.
inline ::testing::AssertionResult all_close(const float* actual,
                                            const std::vector<double>& expected, double abs_tol,
                                            double rel_tol) {
  std::vector<double> tol(expected.size());
  for (size_t i = 0; i < expected.size(); ++i) tol[i] = abs_tol + rel_tol * std::fabs(expected[i]);
  return all_close(actual, expected, tol);
}

inline bool same_bits(const void* a, const void* b, size_t bytes) {
  return std::memcmp(a, b, bytes) == 0;
}

// ---- references (double) ---------------------------------------------------------------------

// out[t, n] = sum_k x[t, k] w[n, k] + bias[n]; also returns sum_k |x w| per output (the scale
// of the f32 rounding error) in `magnitude`.
inline std::vector<double> ref_matmul(const HostTensor& x, const HostTensor& w,
                                      const HostTensor* bias, int64_t T, int64_t K, int64_t N,
                                      std::vector<double>* magnitude) {
  std::vector<double> out(T * N);
  magnitude->assign(T * N, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double s = 0, m = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = x.get(t * K + k) * w.get(n * K + k);
        s += p;
        m += std::fabs(p);
      }
      if (bias != nullptr) {
        s += bias->get(n);
        m += std::fabs(bias->get(n));
      }
      out[t * N + n] = s;
      (*magnitude)[t * N + n] = m;
    }
  }
  return out;
}

// out[t, :] = x[t, :] / sqrt(mean(x[t]^2) + eps) * weight
inline std::vector<double> ref_rms_norm(const std::vector<double>& x, const HostTensor& weight,
                                        int64_t T, int64_t dim, double eps) {
  std::vector<double> out(T * dim);
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[t * dim + i] * x[t * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = x[t * dim + i] * inv * weight.get(i);
  }
  return out;
}

// Rotate-half RoPE of x [T, heads, d] in place (double), with the angle the kernels use: the
// f32 product f32(pos) * inv_freq[i].
inline void ref_rope(std::vector<double>& x, const std::vector<int32_t>& positions,
                     const std::vector<float>& inv_freq, int64_t heads, int64_t d) {
  const int64_t half = d / 2;
  for (size_t t = 0; t < positions.size(); ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = x.data() + (t * heads + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[t]) * inv_freq[i];
        const double c = std::cos(static_cast<double>(angle));
        const double s = std::sin(static_cast<double>(angle));
        const double x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
      }
    }
  }
}

// The ragged paged batch of AttentionArgs, described on the host.
struct PagedBatch {
  std::vector<int32_t> q_lens, seq_lens;
  std::vector<std::vector<int32_t>> tables;  // one row per sequence (padded with -1 when packed)
  int64_t max_blocks = 0;
  int64_t T() const {
    int64_t t = 0;
    for (int32_t q : q_lens) t += q;
    return t;
  }
  std::vector<int32_t> query_start() const {
    std::vector<int32_t> qs{0};
    for (int32_t q : q_lens) qs.push_back(qs.back() + q);
    return qs;
  }
  HostTensor table_tensor() const {
    HostTensor t(DType::kI32, {static_cast<int64_t>(tables.size()), max_blocks});
    for (size_t b = 0; b < tables.size(); ++b) {
      for (int64_t i = 0; i < max_blocks; ++i) {
        t.i32()[b * max_blocks + i] =
            i < static_cast<int64_t>(tables[b].size()) ? tables[b][i] : -1;
      }
    }
    return t;
  }
};

// A batch with sequence b computing q_lens[b] new tokens at the end of a context of
// seq_lens[b], its blocks drawn from a shuffled permutation of [0, num_blocks) (so tables are
// neither contiguous nor ordered), `spare_blocks` blocks left unused, and one padding entry
// (-1) at the end of every table row.
inline PagedBatch make_paged_batch(std::mt19937& rng, const std::vector<int32_t>& q_lens,
                                   const std::vector<int32_t>& seq_lens, int64_t block_size,
                                   int64_t spare_blocks, int64_t* num_blocks) {
  PagedBatch batch;
  batch.q_lens = q_lens;
  batch.seq_lens = seq_lens;
  int64_t needed = 0;
  for (int32_t len : seq_lens) needed += (len + block_size - 1) / block_size;
  *num_blocks = needed + spare_blocks;
  std::vector<int32_t> ids(*num_blocks);
  for (int64_t i = 0; i < *num_blocks; ++i) ids[i] = static_cast<int32_t>(i);
  std::shuffle(ids.begin(), ids.end(), rng);
  size_t next = 0;
  for (int32_t len : seq_lens) {
    const int64_t n = (len + block_size - 1) / block_size;
    batch.tables.emplace_back(ids.begin() + next, ids.begin() + next + n);
    next += n;
    batch.max_blocks = std::max(batch.max_blocks, n + 1);
  }
  return batch;
}

// out [T, H, D] of causal paged attention (see AttentionArgs), in double.
inline std::vector<double> ref_attention(const HostTensor& q, const HostTensor& k_cache,
                                         const HostTensor& v_cache, const PagedBatch& batch,
                                         int64_t H, int64_t KV, int64_t D, int64_t block_size,
                                         double scale) {
  std::vector<double> out(batch.T() * H * D, 0.0);
  const std::vector<int32_t> qs = batch.query_start();
  auto cache_index = [&](int64_t b, int64_t p, int64_t g) {
    const int64_t blk = batch.tables[b][p / block_size];
    return ((blk * block_size + p % block_size) * KV + g) * D;
  };
  for (size_t b = 0; b < batch.q_lens.size(); ++b) {
    for (int64_t j = 0; j < batch.q_lens[b]; ++j) {
      const int64_t t = qs[b] + j;
      const int64_t pos = batch.seq_lens[b] - batch.q_lens[b] + j;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / (H / KV);
        std::vector<double> s(pos + 1);
        double m = -INFINITY;
        for (int64_t p = 0; p <= pos; ++p) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += q.get((t * H + h) * D + d) * k_cache.get(cache_index(b, p, g) + d);
          s[p] = dot * scale;
          m = std::max(m, s[p]);
        }
        double sum = 0;
        for (int64_t p = 0; p <= pos; ++p) sum += (s[p] = std::exp(s[p] - m));
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t p = 0; p <= pos; ++p) acc += s[p] * v_cache.get(cache_index(b, p, g) + d);
          out[(t * H + h) * D + d] = acc / sum;
        }
      }
    }
  }
  return out;
}

}  // namespace pagoda::ref
