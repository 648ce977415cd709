// The host sampler: the arithmetic of SampleArgs' rule lives in kernels/cpu/sample.cc (shared
// with the CPU backend's sample op); this adds the penalty bookkeeping from a request's tokens
// and log-probabilities.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "kernels/sample_math.h"

namespace pagoda {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using cpu::Candidate;
using cpu::precedes;

}  // namespace

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter,
                                      std::array<uint32_t, 2> key) {
  const sample_math::Philox4 out = sample_math::philox4x32_10(
      {{counter[0], counter[1], counter[2], counter[3]}}, key[0], key[1]);
  return {out.v[0], out.v[1], out.v[2], out.v[3]};
}

float counter_uniform(uint64_t seed, uint64_t counter) {
  return sample_math::counter_uniform(seed, counter);
}

SampleRowParams sample_row_params(const SamplingParams& params, uint64_t seed, int64_t position) {
  SampleRowParams r;
  r.temperature = params.temperature;
  r.top_k = params.top_k;
  r.top_p = params.top_p;
  r.min_p = params.min_p;
  r.repetition_penalty = params.repetition_penalty;
  r.presence_penalty = params.presence_penalty;
  r.frequency_penalty = params.frequency_penalty;
  r.seed_lo = static_cast<uint32_t>(seed);
  r.seed_hi = static_cast<uint32_t>(seed >> 32);
  const auto counter = static_cast<uint64_t>(position);
  r.position_lo = static_cast<uint32_t>(counter);
  r.position_hi = static_cast<uint32_t>(counter >> 32);
  return r;
}

bool has_penalties(const SamplingParams& params) {
  return sample_math::usable_repetition(params.repetition_penalty) != 1.0f ||
         sample_math::usable_additive(params.presence_penalty) != 0.0f ||
         sample_math::usable_additive(params.frequency_penalty) != 0.0f;
}

void Sampler::penalty_table(const SamplingParams& params, std::span<const int> prompt_ids,
                            std::span<const int> output_ids, int vocab, std::vector<int32_t>* ids,
                            std::vector<int32_t>* counts) {
  if (!has_penalties(params)) return;
  if (counts_.size() < static_cast<size_t>(vocab)) counts_.resize(static_cast<size_t>(vocab), 0);
  const auto in_vocab = [vocab](int id) { return id >= 0 && id < vocab; };
  // counts_[id] = its output count while building, -1 once in the table.
  for (int id : output_ids) {
    if (in_vocab(id)) ++counts_[id];
  }
  const size_t first = ids->size();
  const auto visit = [&](int id) {
    if (!in_vocab(id) || counts_[id] < 0) return;  // < 0: already in the table
    ids->push_back(id);
    counts->push_back(counts_[id]);
    counts_[id] = -1;
  };
  for (int id : prompt_ids) visit(id);
  for (int id : output_ids) visit(id);
  for (size_t i = first; i < ids->size(); ++i) counts_[(*ids)[i]] = 0;
}

void PenaltyTable::add(int id, int count) {
  const auto [it, inserted] = index_.try_emplace(id, static_cast<int32_t>(ids_.size()));
  if (inserted) {
    ids_.push_back(id);
    counts_.push_back(count);
  } else {
    counts_[it->second] += count;
  }
}

void PenaltyTable::update(std::span<const int> prompt_ids, std::span<const int> output_ids,
                          int vocab) {
  PAGODA_CHECK_GE(output_ids.size(), output_seen_);  // a request's output only grows
  const auto in_vocab = [vocab](int id) { return id >= 0 && id < vocab; };
  if (!prompt_done_) {
    for (int id : prompt_ids)
      if (in_vocab(id)) add(id, 0);
    prompt_done_ = true;
  }
  for (size_t i = output_seen_; i < output_ids.size(); ++i)
    if (in_vocab(output_ids[i])) add(output_ids[i], 1);
  output_seen_ = output_ids.size();
}

int Sampler::sample(std::span<const float> logits, const SamplingParams& params,
                    std::span<const int> prompt_ids, std::span<const int> output_ids, uint64_t seed,
                    int64_t position) {
  const int vocab = static_cast<int>(logits.size());
  PAGODA_CHECK_GT(vocab, 0);
  table_ids_.clear();
  table_counts_.clear();
  penalty_table(params, prompt_ids, output_ids, vocab, &table_ids_, &table_counts_);
  return cpu::sample_row(logits, sample_row_params(params, seed, position), table_ids_,
                         table_counts_, scratch_);
}

TokenLogprobs Sampler::logprobs(std::span<const float> logits, int token, int num_top) {
  const int vocab = static_cast<int>(logits.size());
  PAGODA_CHECK_GT(vocab, 0);
  PAGODA_CHECK(token >= 0 && token < vocab);
  PAGODA_CHECK_GE(num_top, 0);
  std::vector<float>& scratch = scratch_.values;
  std::vector<Candidate>& candidates = scratch_.candidates;
  scratch.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    scratch[i] = std::isnan(logits[i]) ? kNegInf : logits[i];
  }
  // The top tokens by logit, in the order (before scratch_ becomes exponentials).
  const size_t n = static_cast<size_t>(std::min(num_top, vocab));
  if (n == logits.size()) {
    candidates.resize(n);
    for (int id = 0; id < vocab; ++id) candidates[id] = {scratch[id], id};
  } else if (n > 0) {
    cpu::select_top_k(scratch, n, candidates);
  } else {
    candidates.clear();
  }
  std::sort(candidates.begin(), candidates.end(), precedes);

  // log p(l) = (l - max) - log(sum_j exp(l_j - max)); the sum is at least 1 (the max's term).
  const float max_logit = scratch[cpu::first_argmax(scratch)];
  double log_sum = 0.0;
  int num_inf = 0;
  if (std::isfinite(max_logit)) {
    for (float& l : scratch) l = sample_math::exp_nonpositive(l - max_logit);  // vectorized
    log_sum = std::log(cpu::grouped_sum(scratch));
  } else if (max_logit > 0.0f) {
    for (float l : scratch) num_inf += l == max_logit;
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
  for (const Candidate& c : candidates) out.top.emplace_back(c.second, logprob(c.first));
  // Descending logit is non-increasing logprob; distinct logits that round to one logprob are
  // put back in id order.
  std::sort(out.top.begin(), out.top.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  return out;
}

}  // namespace pagoda
