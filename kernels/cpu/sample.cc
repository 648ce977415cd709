// sample: one token per row of logits by SampleArgs' rule (kernels/ops.h), the host reference
// of the op and the engine sampler's arithmetic (kernels/cpu/sample.h).
//   logits         [R, vocab] f32 (overwritten: the CUDA twin uses it as scratch, so callers
//                  may not rely on it; this one leaves it as it was)
//   params         [R, kSampleRowWords] i32, SampleRowParams bit for bit
//   penalty_start  [R + 1] i32; penalty_ids, penalty_counts [P] i32
//   out            [R] i32
// O(vocab) per row with no full sort: top-k keeps a small buffer (select_top_k); top-p and the
// draw, which both look for the point where the mass summed in descending probability reaches
// a target, use a radix select on mass (find_by_mass). Probabilities are kept unnormalized (the
// top token has 1); the draw scales u by their sum.
#include "kernels/cpu/sample.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "core/check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/sample_math.h"

namespace pagoda::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

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

int first_argmax(const std::vector<float>& values) {
  // The maximum first, in eight lanes so that it vectorizes, then its first position.
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

double grouped_sum(const std::vector<float>& values) {
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

// One pass with a buffer of at most k + max(k, 64): when it fills, keep its first k
// (nth_element) and raise the bar to the k-th value. Ids come in ascending order, so a value
// equal to the bar ranks after everything kept and is skipped.
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

int sample_row(std::span<const float> logits, const SampleRowParams& params,
               std::span<const int32_t> penalty_ids, std::span<const int32_t> penalty_counts,
               SampleScratch& s) {
  const int vocab = static_cast<int>(logits.size());
  PAGODA_CHECK_GT(vocab, 0);
  PAGODA_CHECK_EQ(penalty_ids.size(), penalty_counts.size());
  std::vector<float>& values = s.values;
  std::vector<Candidate>& candidates = s.candidates;
  values.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    values[i] = std::isnan(logits[i]) ? kNegInf : logits[i];
  }

  // 1. Penalties.
  const float repetition = sample_math::usable_repetition(params.repetition_penalty);
  const float presence = sample_math::usable_additive(params.presence_penalty);
  const float frequency = sample_math::usable_additive(params.frequency_penalty);
  if (repetition != 1.0f || presence != 0.0f || frequency != 0.0f) {
    for (size_t i = 0; i < penalty_ids.size(); ++i) {
      const int id = penalty_ids[i];
      if (id < 0 || id >= vocab) continue;
      values[id] =
          sample_math::penalize(values[id], penalty_counts[i], repetition, presence, frequency);
    }
  }

  // 2. Greedy. Also the way out when the distribution is degenerate: every logit -inf (take
  // id 0), or some +inf (take the lowest such id).
  const float temperature = params.temperature;
  const int best = first_argmax(values);
  const float max_logit = values[best];
  if (!(temperature > 0.0f) || params.top_k == 1 || !std::isfinite(max_logit)) return best;

  // 3a. Top-k on the logits, then 3b. softmax at the temperature, unnormalized: the top token
  // gets exactly 1.
  double total = 0.0;
  if (params.top_k > 0 && params.top_k < vocab) {
    select_top_k(values, static_cast<size_t>(params.top_k), candidates);
    for (Candidate& c : candidates) {
      c.first = sample_math::exp_nonpositive((c.first - max_logit) / temperature);
      total += c.first;
    }
  } else {
    for (float& l : values) l = sample_math::exp_nonpositive((l - max_logit) / temperature);
    total = grouped_sum(values);
    candidates.resize(logits.size());
    for (int id = 0; id < vocab; ++id) candidates[id] = {values[id], id};
  }
  size_t n = candidates.size();
  const auto sum_of_first = [&candidates](size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; ++i) sum += candidates[i].first;
    return sum;
  };

  // 3c. Top-p: the shortest prefix of the order whose mass reaches top_p (at least one token).
  if (params.top_p < 1.0f) {
    double target = static_cast<double>(params.top_p) * total;
    if (!(target > 0.0)) target = 1.0;  // the top token's mass: keep just that one
    const auto last = find_by_mass({candidates.data(), n}, target, true, s.bucket);
    if (last) {         // else the whole mass fell short of top_p * total by rounding: keep all
      size_t kept = 0;  // branch-free compaction: the order is random
      for (size_t i = 0; i < n; ++i) {
        const Candidate c = candidates[i];
        candidates[kept] = c;
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
      const Candidate c = candidates[i];
      candidates[kept] = c;
      kept += c.first >= threshold;
    }
    n = kept;
    total = sum_of_first(n);
  }
  PAGODA_CHECK_GT(n, 0u);  // the top token (probability 1) always survives

  // 3e. Draw by inverse CDF over the renormalized survivors.
  const uint64_t seed = (uint64_t{params.seed_hi} << 32) | params.seed_lo;
  const uint64_t position = (uint64_t{params.position_hi} << 32) | params.position_lo;
  const double u = sample_math::counter_uniform(seed, position);
  const auto drawn = find_by_mass({candidates.data(), n}, u * total, false, s.bucket);
  if (drawn) return drawn->second;
  // u * total rounded past the summed mass: the last token in the order with a probability.
  const Candidate* last = nullptr;
  for (size_t i = 0; i < n; ++i) {
    const Candidate& c = candidates[i];
    if (c.first > 0.0f && (last == nullptr || precedes(*last, c))) last = &c;
  }
  return last != nullptr ? last->second : best;
}

Status sample(ThreadPool& pool, const SampleArgs& a) {
  constexpr const char* kOp = "sample";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "logits", a.logits, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "params", a.params, 2, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "penalty_start", a.penalty_start, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "penalty_ids", a.penalty_ids, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "penalty_counts", a.penalty_counts, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 1, {DType::kI32}));
  const int64_t rows = a.logits.shape[0], vocab = a.logits.shape[1];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "params", a.params, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "params", a.params, 1, kSampleRowWords, "kSampleRowWords"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "penalty_start", a.penalty_start, 0, rows + 1, "R + 1"));
  const int64_t P = a.penalty_ids.shape[0];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "penalty_counts", a.penalty_counts, 0, P, "P"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 0, rows, "R (logits dim 0)"));
  if (rows > 0 && vocab == 0) return arg_error(kOp, "logits", "has rows of length 0");
  if (vocab > std::numeric_limits<int32_t>::max())
    return arg_error(kOp, "logits", "rows longer than 2^31 - 1: ", a.logits.describe());
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "logits", a.logits));
  // The penalty table: a prefix sum over [0, P], ids in the vocabulary and distinct per row,
  // counts non-negative.
  const int32_t* start = a.penalty_start.as<const int32_t>();
  const int32_t* ids = a.penalty_ids.as<const int32_t>();
  const int32_t* counts = a.penalty_counts.as<const int32_t>();
  if (start[0] != 0 || start[rows] != P)
    return arg_error(kOp, "penalty_start", "must run from 0 to P = ", P, ", got ", start[0], " .. ",
                     start[rows]);
  std::vector<uint8_t> seen(static_cast<size_t>(P > 0 ? vocab : 0), 0);
  for (int64_t r = 0; r < rows; ++r) {
    if (start[r + 1] < start[r])
      return arg_error(kOp, "penalty_start", "must not decrease, got [", r, "] = ", start[r],
                       " > [", r + 1, "] = ", start[r + 1]);
    for (int32_t i = start[r]; i < start[r + 1]; ++i) {
      if (ids[i] < 0 || ids[i] >= vocab)
        return arg_error(kOp, "penalty_ids", "[", i, "] = ", ids[i], " is outside [0, ", vocab,
                         ")");
      if (counts[i] < 0)
        return arg_error(kOp, "penalty_counts", "[", i, "] = ", counts[i], " is negative");
      if (seen[ids[i]]++)
        return arg_error(kOp, "penalty_ids", "repeat ", ids[i], " within row ", r);
    }
    for (int32_t i = start[r]; i < start[r + 1]; ++i) seen[ids[i]] = 0;
  }

  const float* logits = a.logits.as<const float>();
  const auto* params = static_cast<const SampleRowParams*>(a.params.data);
  int32_t* out = a.out.as<int32_t>();
  pool.parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
    thread_local SampleScratch scratch;  // no allocation once a thread has seen the vocabulary
    for (int64_t r = begin; r < end; ++r) {
      out[r] =
          sample_row({logits + r * vocab, static_cast<size_t>(vocab)}, params[r],
                     {ids + start[r], static_cast<size_t>(start[r + 1] - start[r])},
                     {counts + start[r], static_cast<size_t>(start[r + 1] - start[r])}, scratch);
    }
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
