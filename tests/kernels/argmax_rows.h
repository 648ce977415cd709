// Rows of logits for the argmax tests (CPU twin and CUDA): random values with, by row index,
// planted hazards -- the maximum twice, NaN everywhere but one value, all -inf, all NaN, +inf
// twice, -0 and +0 as the maximum, the maximum in the last column.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace pagoda::testing_rows {

inline const char* kind_name(int64_t row) {
  static const char* const kNames[] = {"random",  "tied maximum", "mostly NaN",   "all -inf",
                                       "all NaN", "+inf twice",   "signed zeros", "max at the end"};
  return kNames[row % 8];
}

// [rows, vocab] row-major.
inline std::vector<float> argmax_rows(std::mt19937& rng, int64_t rows, int64_t vocab) {
  std::uniform_real_distribution<float> dist(-8.0f, 8.0f);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> v(static_cast<size_t>(rows * vocab));
  for (float& x : v) x = dist(rng);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = v.data() + r * vocab;
    switch (r % 8) {
      case 1: {  // the maximum at two places: the lower index wins
        const int64_t a = pick(rng), b = pick(rng);
        row[a] = row[b] = 9.0f;
        break;
      }
      case 2:  // NaN everywhere but one finite value (and NaN at index 0)
        for (int64_t i = 0; i < vocab; ++i) row[i] = nan;
        row[pick(rng)] = -3.0f;
        break;
      case 3:
        for (int64_t i = 0; i < vocab; ++i) row[i] = -inf;
        break;
      case 4:
        for (int64_t i = 0; i < vocab; ++i) row[i] = nan;
        break;
      case 5: {
        const int64_t a = pick(rng), b = pick(rng);
        row[a] = row[b] = inf;
        break;
      }
      case 6:  // everything negative but a -0 and a +0: equal, so the lower index wins
        for (int64_t i = 0; i < vocab; ++i) row[i] = -std::fabs(row[i]) - 1.0f;
        row[pick(rng)] = -0.0f;
        row[pick(rng)] = 0.0f;
        break;
      case 7: row[vocab - 1] = 100.0f; break;
      default: break;
    }
  }
  return v;
}

}  // namespace pagoda::testing_rows
