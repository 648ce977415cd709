// The host sampler. One call turns one row of logits into one token id; see engine/sampler.h
// for the order of the steps. O(V) per call, with no full sort: top-k keeps a small buffer
// (select_top_k); top-p and the draw, which both look for the point where the mass summed in
// descending probability reaches a target, use a radix select on mass (find_by_mass).
// Probabilities are kept unnormalized (the top token has 1); the draw scales u by their sum.
#include "engine/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>

#include "core/check.h"

namespace pagoda {
namespace {

constexpr uint32_t kPhiloxM0 = 0xD2511F53;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85;  // sqrt(3) - 1

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using Candidate = std::pair<float, int>;  // (logit or probability, id)

// The order of everything below: larger value first, smaller id first among equal values.
bool precedes(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Lowest id among the largest values (no NaN among them). The maximum first, in eight lanes
// so that it vectorizes, then its first position.
int argmax(const std::vector<float>& values) {
  std::array<float, 8> lanes;
  lanes.fill(kNegInf);
  size_t i = 0;
  for (; i + 8 <= values.size(); i += 8) {
    for (size_t j = 0; j < 8; ++j) lanes[j] = std::max(lanes[j], values[i + j]);
  }
  for (; i < values.size(); ++i) lanes[0] = std::max(lanes[0], values[i]);
  const float max = *std::max_element(lanes.begin(), lanes.end());
  const auto it = std::find(values.begin(), values.end(), max);
  return it == values.end() ? 0 : static_cast<int>(it - values.begin());
}

// exp(x) for x <= 0 (or -inf), within a few ulp; 0 below -87 (the result would be about
// 1.6e-38 there, far below what a 24-bit uniform can pick). Cephes' expf polynomial, written
// with explicit fma and no branches so that the compiler vectorizes loops over it, and vector
// and scalar code give the same bits.
inline float exp_nonpositive(float x) {
  const float clamped = std::max(x, -87.0f);
  // n = round(x / ln 2), by the 1.5 * 2^23 trick (floor would not vectorize).
  constexpr float kRound = 12582912.0f;
  const float n = std::fma(clamped, 1.44269504088896341f, kRound) - kRound;
  float r = std::fma(n, -0.693359375f, clamped);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r + 1.0f);
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  // Zero below -87 by masking the bits: a conditional would keep the loop scalar.
  const uint32_t keep = 0u - static_cast<uint32_t>(x >= -87.0f);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(p * scale) & keep);
}

// A double sum in a fixed grouping (eight running sums), so that it pipelines.
double sum(const std::vector<float>& values) {
  std::array<double, 8> partial{};
  size_t i = 0;
  for (; i + 8 <= values.size(); i += 8) {
    for (size_t j = 0; j < 8; ++j) partial[j] += values[i + j];
  }
  for (; i < values.size(); ++i) partial[0] += values[i];
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

// The first k (0 < k < values.size()) of `values` in the order, into `out` (unordered). One
// pass with a buffer of at most k + max(k, 64): when it fills, keep its first k (nth_element)
// and raise the bar to the k-th value. Ids come in ascending order, so a value equal to the bar
// ranks after everything kept and is skipped.
void select_top_k(const std::vector<float>& values, size_t k, std::vector<Candidate>& out) {
  out.clear();
  const size_t capacity = k + std::max<size_t>(k, 64);
  out.reserve(capacity);
  const auto keep_first_k = [&]() {
    std::nth_element(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k - 1), out.end(),
                     precedes);
    out.resize(k);
  };
  bool pruned = false;
  float bar = kNegInf;
  // In blocks of 16: once pruned, a block whose maximum (vectorized) does not pass the bar
  // holds nothing to keep, and most blocks are skipped whole. No NaN in values.
  constexpr int kBlock = 16;
  const int size = static_cast<int>(values.size());
  for (int start = 0; start < size; start += kBlock) {
    const int end = std::min(start + kBlock, size);
    if (pruned && end - start == kBlock) {
      float block_max = values[start];
      for (int j = 1; j < kBlock; ++j) block_max = std::max(block_max, values[start + j]);
      if (!(block_max > bar)) continue;
    }
    for (int id = start; id < end; ++id) {
      const float v = values[id];
      if (pruned && !(v > bar)) continue;
      out.emplace_back(v, id);
      if (out.size() == capacity) {
        keep_first_k();
        bar = out[k - 1].first;
        pruned = true;
      }
    }
  }
  if (out.size() > k) keep_first_k();
}

// Candidates hold unnormalized probabilities in [0, 1]. Returns the first candidate in the
// order at which the running mass exceeds `target` (reaches it, if `inclusive`), or nothing if
// the whole mass falls short.
// A radix select on the bits of the probabilities, which order like the values (non-negative
// floats): a histogram of mass over bits 29..20 (31 and 30 are 0 in [0, 1]) finds the bucket
// where the mass crosses target; its candidates are gathered into `bucket`, one over bits 19..10
// narrows them down, and only the few left are sorted. Two passes over the candidates, no full
// sort. Sums are double, grouped by bucket: a sequential sum in the order could differ only
// when target lies within rounding of a boundary.
std::optional<Candidate> find_by_mass(std::span<const Candidate> cands, double target,
                                      bool inclusive, std::vector<Candidate>& bucket) {
  const auto reached = [&](double mass) { return inclusive ? mass >= target : mass > target; };
  struct Level {
    int shift;
    uint32_t mask;
  };
  static constexpr Level kLevels[] = {{20, 0x3FF}, {10, 0x3FF}};  // 1.0f is 0x3F800000
  constexpr int kWays = 4;  // interleaved histograms: consecutive adds to one bucket pipeline
  std::array<std::array<double, 1024>, kWays> hist;
  double mass = 0.0;  // of the candidates before the current range, which has not reached target
  std::span<const Candidate> range = cands;
  for (const Level& level : kLevels) {
    if (range.size() <= 64) break;
    const auto key = [&](const Candidate& c) {
      return (std::bit_cast<uint32_t>(c.first) >> level.shift) & level.mask;
    };
    for (auto& h : hist) std::fill(h.begin(), h.end(), 0.0);
    size_t i = 0;
    for (; i + kWays <= range.size(); i += kWays) {
      for (int w = 0; w < kWays; ++w) hist[w][key(range[i + w])] += range[i + w].first;
    }
    for (; i < range.size(); ++i) hist[0][key(range[i])] += range[i].first;
    int64_t found = -1;
    for (int64_t b = level.mask; b >= 0; --b) {
      const double in_bucket = (hist[0][b] + hist[1][b]) + (hist[2][b] + hist[3][b]);
      if (reached(mass + in_bucket)) {
        found = b;
        break;
      }
      mass += in_bucket;
    }
    if (found < 0) return std::nullopt;
    // Gather the bucket (in place when narrowing it), writing every candidate and advancing
    // only past the kept ones: no branch to mispredict.
    const auto b = static_cast<uint32_t>(found);
    if (range.data() != bucket.data()) bucket.resize(range.size());
    size_t kept = 0;
    for (size_t k = 0; k < range.size(); ++k) {
      const Candidate c = range[k];
      bucket[kept] = c;
      kept += key(c) == b;
    }
    bucket.resize(kept);
    range = bucket;
  }
  std::vector<Candidate> last(range.begin(), range.end());
  std::sort(last.begin(), last.end(), precedes);
  for (const Candidate& c : last) {
    mass += c.first;
    if (reached(mass)) return c;
  }
  // The bucket's mass reached target and its walk did not, by rounding: its last candidate.
  if (!last.empty()) return last.back();
  return std::nullopt;
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
  const auto out =
      philox4x32_10({static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u},
                    {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  return static_cast<float>(out[0] >> 8) * 0x1p-24f;
}

int Sampler::sample(std::span<const float> logits, const SamplingParams& params,
                    std::span<const int> prompt_ids, std::span<const int> output_ids, uint64_t seed,
                    int64_t position) {
  const int vocab = static_cast<int>(logits.size());
  PAGODA_CHECK_GT(vocab, 0);
  scratch_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    scratch_[i] = std::isnan(logits[i]) ? kNegInf : logits[i];
  }
  const auto in_vocab = [vocab](int id) { return id >= 0 && id < vocab; };

  // 1. Penalties. counts_ is all zero between calls; each pass puts back the zeros it used.
  if (counts_.size() < logits.size()) counts_.resize(logits.size(), 0);
  const float repetition = params.repetition_penalty;
  if (repetition != 1.0f && repetition > 0.0f && std::isfinite(repetition)) {
    const auto penalize_once = [&](int id) {
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
  const float frequency = std::isfinite(params.frequency_penalty) ? params.frequency_penalty : 0.0f;
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

  // 3a. Top-k on the logits, then 3b. softmax at the temperature, unnormalized: the top token
  // gets exactly 1.
  double total = 0.0;
  if (params.top_k > 0 && params.top_k < vocab) {
    select_top_k(scratch_, static_cast<size_t>(params.top_k), candidates_);
    for (Candidate& c : candidates_) {
      c.first = exp_nonpositive((c.first - max_logit) / temperature);
      total += c.first;
    }
  } else {
    for (float& l : scratch_) l = exp_nonpositive((l - max_logit) / temperature);  // vectorized
    total = sum(scratch_);
    candidates_.resize(logits.size());
    for (int id = 0; id < vocab; ++id) candidates_[id] = {scratch_[id], id};
  }
  size_t n = candidates_.size();
  const auto sum_of_first = [this](size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; ++i) sum += candidates_[i].first;
    return sum;
  };

  // 3c. Top-p: the shortest prefix of the order whose mass reaches top_p (at least one token).
  if (params.top_p < 1.0f) {
    double target = static_cast<double>(params.top_p) * total;
    if (!(target > 0.0)) target = 1.0;  // the top token's mass: keep just that one
    const auto last = find_by_mass({candidates_.data(), n}, target, true, bucket_);
    if (last) {         // else the whole mass fell short of top_p * total by rounding: keep all
      size_t kept = 0;  // branch-free compaction: the order is random
      for (size_t i = 0; i < n; ++i) {
        const Candidate c = candidates_[i];
        candidates_[kept] = c;
        kept += (c.first > last->first) | ((c.first == last->first) & (c.second <= last->second));
      }
      n = kept;
      total = sum_of_first(n);
    }
  }

  // 3d. Min-p: drop tokens below min_p times the top probability (which is 1).
  if (params.min_p > 0.0f) {
    const float threshold = std::min(params.min_p, 1.0f);
    size_t kept = 0;
    for (size_t i = 0; i < n; ++i) {
      const Candidate c = candidates_[i];
      candidates_[kept] = c;
      kept += c.first >= threshold;
    }
    n = kept;
    total = sum_of_first(n);
  }
  PAGODA_CHECK_GT(n, 0u);  // the top token (probability 1) always survives

  // 3e. Draw by inverse CDF over the renormalized survivors.
  const double u = counter_uniform(seed, static_cast<uint64_t>(position));
  const auto drawn = find_by_mass({candidates_.data(), n}, u * total, false, bucket_);
  if (drawn) return drawn->second;
  // u * total rounded past the summed mass: the last token in the order with a probability.
  const Candidate* last = nullptr;
  for (size_t i = 0; i < n; ++i) {
    const Candidate& c = candidates_[i];
    if (c.first > 0.0f && (last == nullptr || precedes(*last, c))) last = &c;
  }
  return last != nullptr ? last->second : best;
}

TokenLogprobs Sampler::logprobs(std::span<const float> logits, int token, int num_top) {
  const int vocab = static_cast<int>(logits.size());
  PAGODA_CHECK_GT(vocab, 0);
  PAGODA_CHECK(token >= 0 && token < vocab);
  PAGODA_CHECK_GE(num_top, 0);
  scratch_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    scratch_[i] = std::isnan(logits[i]) ? kNegInf : logits[i];
  }
  // The top tokens by logit, in the order (before scratch_ becomes exponentials).
  const size_t n = static_cast<size_t>(std::min(num_top, vocab));
  if (n == logits.size()) {
    candidates_.resize(n);
    for (int id = 0; id < vocab; ++id) candidates_[id] = {scratch_[id], id};
  } else if (n > 0) {
    select_top_k(scratch_, n, candidates_);
  } else {
    candidates_.clear();
  }
  std::sort(candidates_.begin(), candidates_.end(), precedes);

  // log p(l) = (l - max) - log(sum_j exp(l_j - max)); the sum is at least 1 (the max's term).
  const float max_logit = scratch_[argmax(scratch_)];
  double log_sum = 0.0;
  int num_inf = 0;
  if (std::isfinite(max_logit)) {
    for (float& l : scratch_) l = exp_nonpositive(l - max_logit);  // vectorized
    log_sum = std::log(sum(scratch_));
  } else if (max_logit > 0.0f) {
    for (float l : scratch_) num_inf += l == max_logit;
  }
  const auto logprob = [&](float l) -> float {
    if (std::isfinite(max_logit)) {
      return static_cast<float>((static_cast<double>(l) - max_logit) - log_sum);
    }
    if (max_logit > 0.0f) return l == max_logit ? -static_cast<float>(std::log(num_inf)) : kNegInf;
    return -static_cast<float>(std::log(static_cast<double>(vocab)));
  };

  TokenLogprobs out;
  out.token_id = token;
  out.logprob = logprob(std::isnan(logits[token]) ? kNegInf : logits[token]);
  out.top.reserve(n);
  for (const Candidate& c : candidates_) out.top.emplace_back(c.second, logprob(c.first));
  // Descending logit is non-increasing logprob; distinct logits that round to one logprob are
  // put back in id order.
  std::sort(out.top.begin(), out.top.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  return out;
}

}  // namespace pagoda
