// The host sampler. One call turns one row of logits into one token id; see engine/sampler.h
// for the order of the steps. Cost: O(V) for the copy, the penalties and the softmax, plus
// sorting only as much of the distribution as the step needs:
//   - top-k selects with nth_element (O(V)) and sorts the k survivors;
//   - top-p and the final draw walk the candidates in descending probability and sort them
//     lazily, in chunks that double (nth_element on the rest, then sort the chunk), so a peaked
//     distribution costs O(V) and only a flat one approaches a full sort.
// Probabilities are kept unnormalized (the top token has 1); the draw scales u by their sum.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/check.h"

namespace pagoda {
namespace {

constexpr uint32_t kPhiloxM0 = 0xD2511F53;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85;  // sqrt(3) - 1

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Lowest id among the largest values.
int argmax(const std::vector<float>& values) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(values.size()); ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter,
                                      std::array<uint32_t, 2> key) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kPhiloxW0;
      key[1] += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * counter[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * counter[2];
    counter = {static_cast<uint32_t>(p1 >> 32) ^ counter[1] ^ key[0], static_cast<uint32_t>(p1),
               static_cast<uint32_t>(p0 >> 32) ^ counter[3] ^ key[1], static_cast<uint32_t>(p0)};
  }
  return counter;
}

float counter_uniform(uint64_t seed, uint64_t counter) {
  const auto out = philox4x32_10(
      {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u},
      {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  return static_cast<float>(out[0] >> 8) * 0x1p-24f;
}

int Sampler::sample(std::span<const float> logits, const SamplingParams& params,
                    std::span<const int> prompt_ids, std::span<const int> output_ids,
                    uint64_t seed, int64_t position) {
  const int vocab = static_cast<int>(logits.size());
  PAGODA_CHECK_GT(vocab, 0);
  scratch_.assign(logits.begin(), logits.end());
  for (float& l : scratch_) {
    if (std::isnan(l)) l = kNegInf;
  }
  auto in_vocab = [vocab](int id) { return id >= 0 && id < vocab; };

  // 1. Penalties. counts_ is all zero between calls; each pass puts back the zeros it used.
  if (counts_.size() < logits.size()) counts_.resize(logits.size(), 0);
  const float repetition = params.repetition_penalty;
  if (repetition != 1.0f && repetition > 0.0f && std::isfinite(repetition)) {
    auto penalize_once = [&](int id) {
      if (!in_vocab(id) || counts_[id] != 0) return;
      counts_[id] = 1;
      float& l = scratch_[id];
      l = l > 0.0f ? l / repetition : l * repetition;
    };
    for (int id : prompt_ids) penalize_once(id);
    for (int id : output_ids) penalize_once(id);
    for (int id : prompt_ids) {
      if (in_vocab(id)) counts_[id] = 0;
    }
    for (int id : output_ids) {
      if (in_vocab(id)) counts_[id] = 0;
    }
  }
  const float presence = std::isfinite(params.presence_penalty) ? params.presence_penalty : 0.0f;
  const float frequency =
      std::isfinite(params.frequency_penalty) ? params.frequency_penalty : 0.0f;
  if (presence != 0.0f || frequency != 0.0f) {
    for (int id : output_ids) {
      if (in_vocab(id)) ++counts_[id];
    }
    for (int id : output_ids) {
      if (!in_vocab(id) || counts_[id] == 0) continue;
      scratch_[id] -= frequency * static_cast<float>(counts_[id]) + presence;
      counts_[id] = 0;
    }
  }

  // 2. Greedy. Also the way out when the distribution is degenerate: every logit -inf (take
  // id 0), or some +inf (take the lowest such id).
  const float temperature = params.temperature;
  const int best = argmax(scratch_);
  const float max_logit = scratch_[best];
  if (!(temperature > 0.0f) || params.top_k == 1 || !std::isfinite(max_logit)) return best;

  // 3a. Top-k on the logits: the k largest, ties by ascending id.
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  size_t n = order_.size();
  if (params.top_k > 0 && params.top_k < vocab) {
    n = static_cast<size_t>(params.top_k);
    std::nth_element(order_.begin(), order_.begin() + n, order_.end(), [this](int a, int b) {
      return scratch_[a] > scratch_[b] || (scratch_[a] == scratch_[b] && a < b);
    });
    order_.resize(n);
  }

  // 3b. Softmax at the temperature, unnormalized: the top token gets exactly 1. Candidates'
  // logits are replaced by their probabilities from here on.
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    float& v = scratch_[order_[i]];
    v = std::exp((v - max_logit) / temperature);
    total += v;
  }

  // Candidates in descending probability, ties by ascending id: order_[0, sorted) is sorted
  // and no later candidate precedes any of it.
  auto by_probability = [this](int a, int b) {
    return scratch_[a] > scratch_[b] || (scratch_[a] == scratch_[b] && a < b);
  };
  size_t sorted = 0;
  auto sort_more = [&]() {
    const size_t end = std::min(n, sorted + std::max<size_t>(64, sorted));
    if (end < n) {
      std::nth_element(order_.begin() + sorted, order_.begin() + end, order_.begin() + n,
                       by_probability);
    }
    std::sort(order_.begin() + sorted, order_.begin() + end, by_probability);
    sorted = end;
  };

  // 3c. Top-p: the shortest prefix whose mass reaches top_p (at least one token).
  if (params.top_p < 1.0f) {
    const double target = static_cast<double>(params.top_p) * total;
    double mass = 0.0;
    size_t kept = 0;
    while (kept < n) {
      if (kept == sorted) sort_more();
      mass += scratch_[order_[kept++]];
      if (mass >= target) break;
    }
    n = kept;
    sorted = std::min(sorted, n);
    total = mass;
  }

  // 3d. Min-p: drop tokens below min_p times the top probability (which is 1). The survivors
  // are again a prefix of the order, so filtering in place keeps the sorted prefix sorted.
  if (params.min_p > 0.0f) {
    const float threshold = std::min(params.min_p, 1.0f);
    size_t kept = 0;
    size_t kept_sorted = 0;
    total = 0.0;
    for (size_t i = 0; i < n; ++i) {
      const int id = order_[i];
      if (scratch_[id] < threshold) continue;
      if (i < sorted) ++kept_sorted;
      order_[kept++] = id;
      total += scratch_[id];
    }
    n = kept;
    sorted = kept_sorted;
  }
  PAGODA_CHECK_GT(n, 0u);  // the top token (probability 1) always survives

  // 3e. Draw by inverse CDF over the renormalized survivors.
  const double target = static_cast<double>(counter_uniform(seed, static_cast<uint64_t>(position))) *
                        total;
  double mass = 0.0;
  int last_positive = order_[0];
  for (size_t i = 0; i < n; ++i) {
    if (i == sorted) sort_more();
    const int id = order_[i];
    const float p = scratch_[id];
    if (p <= 0.0f) break;  // sorted: the rest is zero as well
    mass += p;
    last_positive = id;
    if (mass > target) return id;
  }
  return last_positive;  // u * total rounded up past the summed mass
}

}  // namespace pagoda
