// The host sampler. One call turns one row of logits into one token id; see engine/sampler.h
// for the order of the steps. Expected O(V) per call, with no full sort: top-k selects with
// nth_element; top-p and the draw, which both look for the point where the mass summed in
// descending probability reaches a target, use a quickselect on mass (select_by_mass).
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

// Candidates in `order` with unnormalized probabilities prob[id], taken in descending
// probability, ascending id on ties ("the order"). Finds the first candidate at which the running
// mass exceeds `target` (reaches it, if `inclusive`) and rearranges `order` so that order[0, pos]
// holds the candidates up to it, itself last. Returns pos, or -1 if the whole mass falls short.
// A quickselect on mass (expected O(n)); only the last few candidates are sorted. Sums are
// double, grouped by partition: a sequential sum in the order could differ only when target
// lies within rounding of a boundary.
int64_t select_by_mass(std::span<int> order, const float* prob, double target, bool inclusive) {
  auto before = [prob](int a, int b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); };
  auto reached = [&](double mass) { return inclusive ? mass >= target : mass > target; };
  size_t lo = 0;
  size_t hi = order.size();
  double mass = 0.0;  // of order[0, lo), which has not reached target
  while (hi - lo > 32) {
    int a = order[lo];
    int b = order[lo + (hi - lo) / 2];
    int c = order[hi - 1];
    if (before(b, a)) std::swap(a, b);
    if (before(c, b)) std::swap(b, c);
    if (before(b, a)) std::swap(a, b);
    const int pivot = b;  // the median of the three
    const auto first = order.begin() + static_cast<std::ptrdiff_t>(lo);
    const auto last = order.begin() + static_cast<std::ptrdiff_t>(hi);
    const auto middle = std::partition(first, last, [&](int x) { return before(x, pivot); });
    std::iter_swap(middle, std::find(middle, last, pivot));
    const size_t m = static_cast<size_t>(middle - order.begin());
    double ahead = 0.0;  // of order[lo, m): the candidates before the pivot
    for (size_t i = lo; i < m; ++i) ahead += prob[order[i]];
    if (reached(mass + ahead)) {
      hi = m;
      continue;
    }
    mass += ahead + prob[pivot];
    if (reached(mass)) return static_cast<int64_t>(m);
    lo = m + 1;
  }
  std::sort(order.begin() + static_cast<std::ptrdiff_t>(lo),
            order.begin() + static_cast<std::ptrdiff_t>(hi), before);
  for (size_t i = lo; i < hi; ++i) {
    mass += prob[order[i]];
    if (reached(mass)) return static_cast<int64_t>(i);
  }
  return -1;
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
  auto sum_of_first = [this](size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; ++i) sum += scratch_[order_[i]];
    return sum;
  };

  // 3c. Top-p: the shortest prefix (in the order) whose mass reaches top_p, at least one token.
  if (params.top_p < 1.0f) {
    double target = static_cast<double>(params.top_p) * total;
    if (!(target > 0.0)) target = 1.0;  // the top token's mass: keep just that one
    const int64_t last =
        select_by_mass({order_.data(), n}, scratch_.data(), target, /*inclusive=*/true);
    if (last >= 0) {  // else the whole mass fell short of top_p * total by rounding: keep all
      n = static_cast<size_t>(last) + 1;
      total = sum_of_first(n);
    }
  }

  // 3d. Min-p: drop tokens below min_p times the top probability (which is 1).
  if (params.min_p > 0.0f) {
    const float threshold = std::min(params.min_p, 1.0f);
    size_t kept = 0;
    for (size_t i = 0; i < n; ++i) {
      if (scratch_[order_[i]] >= threshold) order_[kept++] = order_[i];
    }
    n = kept;
    total = sum_of_first(n);
  }
  PAGODA_CHECK_GT(n, 0u);  // the top token (probability 1) always survives

  // 3e. Draw by inverse CDF over the renormalized survivors.
  const double u = counter_uniform(seed, static_cast<uint64_t>(position));
  const int64_t drawn =
      select_by_mass({order_.data(), n}, scratch_.data(), u * total, /*inclusive=*/false);
  if (drawn >= 0) return order_[drawn];
  // u * total rounded past the summed mass: the last token in the order with a probability.
  int last = -1;
  for (size_t i = 0; i < n; ++i) {
    const int id = order_[i];
    if (scratch_[id] > 0.0f && (last < 0 || scratch_[id] < scratch_[last] ||
                                (scratch_[id] == scratch_[last] && id > last))) {
      last = id;
    }
  }
  return last >= 0 ? last : best;
}

}  // namespace pagoda
