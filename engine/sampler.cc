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

void sort_top_logprobs(std::vector<std::pair<int, float>>& top) {
  // Descending logit is non-increasing logprob; distinct logits that round to one logprob are
  // put back in id order.
  std::sort(top.begin(), top.end(), [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
}

TokenLogprobs Sampler::logprobs(std::span<const float> logits, int token, int num_top) {
  const int vocab = static_cast<int>(logits.size());
  PAGODA_CHECK_GT(vocab, 0);
  PAGODA_CHECK(token >= 0 && token < vocab);
  PAGODA_CHECK_GE(num_top, 0);
  const int n = std::min(num_top, vocab);
  top_ids_.resize(static_cast<size_t>(n));
  top_logprobs_.resize(static_cast<size_t>(n));
  TokenLogprobs out;
  out.token_id = token;
  cpu::row_logprobs(logits, token, n, scratch_, &out.logprob, top_ids_.data(),
                    top_logprobs_.data());
  out.top.reserve(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) out.top.emplace_back(top_ids_[k], top_logprobs_[k]);
  sort_top_logprobs(out.top);
  return out;
}

}  // namespace pagoda
