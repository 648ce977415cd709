// Rows for the sample op's tests (CPU against a reference, CUDA against the CPU): logits of
// many kinds (random, tied, peaked, uniform, with NaN / +-inf, all -inf) under parameter sets
// that exercise every step of the rule (greedy, temperature, top-k through ties, top-p, min-p,
// penalties, extreme temperatures), with per-row seeds and 64-bit positions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace pagoda::testing_sample {

struct Batch {
  int64_t rows = 0, vocab = 0;
  std::vector<float> logits;              // [rows, vocab]
  std::vector<SampleRowParams> params;    // [rows]
  std::vector<int32_t> penalty_start{0};  // [rows + 1]
  std::vector<int32_t> penalty_ids, penalty_counts;
  std::vector<std::string> kinds;  // [rows], for messages
};

constexpr int kKinds = 15;

inline Batch make_batch(int64_t rows, int64_t vocab, uint32_t seed) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  Batch b;
  b.rows = rows;
  b.vocab = vocab;
  b.logits.resize(static_cast<size_t>(rows * vocab));
  for (int64_t r = 0; r < rows; ++r) {
    float* row = b.logits.data() + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) row[i] = normal(rng);
    SampleRowParams p;
    p.temperature = 1.0f;
    p.seed_lo = static_cast<uint32_t>(rng());
    p.seed_hi = static_cast<uint32_t>(rng());
    p.position_lo = static_cast<uint32_t>(rng());
    p.position_hi = static_cast<uint32_t>(rng() % 3);
    const int kind = static_cast<int>(r % kKinds);
    const auto k = [vocab](int64_t want) { return static_cast<int32_t>(std::min(want, vocab)); };
    std::string name;
    switch (kind) {
      case 0:
        name = "greedy";
        p.temperature = 0.0f;
        break;
      case 1: name = "temperature 1"; break;
      case 2:
        name = "top-k 40 at 0.7";
        p.temperature = 0.7f;
        p.top_k = k(40);
        break;
      case 3:
        name = "top-p 0.9";
        p.top_p = 0.9f;
        break;
      case 4:
        name = "min-p 0.05 at 1.3";
        p.temperature = 1.3f;
        p.min_p = 0.05f;
        break;
      case 5:
        name = "top-k 50, top-p 0.8, min-p 0.02";
        p.top_k = k(50);
        p.top_p = 0.8f;
        p.min_p = 0.02f;
        break;
      case 6:
        name = "penalties";
        p.temperature = 0.9f;
        p.repetition_penalty = 1.3f;
        p.presence_penalty = 0.5f;
        p.frequency_penalty = 0.3f;
        break;
      case 7:  // few distinct values: long runs of equal probabilities, cut by top-k and top-p
        name = "ties, top-k 37, top-p 0.6";
        for (int64_t i = 0; i < vocab; ++i) row[i] = std::round(row[i]) * 0.5f;
        p.top_k = k(37);
        p.top_p = 0.6f;
        break;
      case 8:
        name = "NaN and -inf";
        for (int64_t i = 0; i < vocab; ++i) {
          if (rng() % 5 == 0) row[i] = rng() % 2 ? -kInf : std::nanf("");
        }
        p.top_p = 0.95f;
        break;
      case 9:
        name = "all -inf";
        std::fill(row, row + vocab, -kInf);
        break;
      case 10:
        name = "top-k 1";
        p.top_k = 1;
        break;
      case 11:
        name = "peaked, +inf elsewhere in the batch";
        row[rng() % vocab] = 20.0f;
        if (r % 2 == 1) row[rng() % vocab] = kInf;  // greedy by degeneracy
        break;
      case 12:
        name = "uniform, top-p 0.5";
        std::fill(row, row + vocab, 1.5f);
        p.top_p = 0.5f;
        break;
      case 13:
        name = "tiny temperature";
        p.temperature = 1e-30f;
        break;
      default:
        name = "huge temperature, min-p 0.9";
        p.temperature = 1e30f;
        p.min_p = 0.9f;
        break;
    }
    // Penalty tables: distinct ids, output counts 0 (prompt only) to 3, on the penalty rows
    // and on some others (where the factors are off and the table must not matter).
    if (kind == 6 || kind == 1) {
      const int64_t n = std::min<int64_t>(vocab, 1 + static_cast<int64_t>(rng() % 40));
      std::vector<int32_t> ids(static_cast<size_t>(vocab));
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng);
      for (int64_t i = 0; i < n; ++i) {
        b.penalty_ids.push_back(ids[i]);
        b.penalty_counts.push_back(static_cast<int32_t>(rng() % 4));
      }
      // Make the penalties decide: the penalized tokens hold the top logits, every third one
      // negative (the repetition multiply, not the divide) in rows where all logits are low.
      if (kind == 6) {
        const bool low = r % 2 == 1;
        if (low) {
          for (int64_t i = 0; i < vocab; ++i) row[i] -= 12.0f;
        }
        for (int64_t i = 0; i < n; ++i) {
          row[ids[i]] = (low && i % 3 == 0 ? -2.0f : 6.0f) + normal(rng) * 0.1f;
        }
      }
    }
    b.penalty_start.push_back(static_cast<int32_t>(b.penalty_ids.size()));
    b.params.push_back(p);
    b.kinds.push_back(name);
  }
  return b;
}

}  // namespace pagoda::testing_sample
