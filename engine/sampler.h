// Sampler: logits of one sequence -> next token id. Randomness comes from a counter-based
// generator keyed by (seed, position), so a seeded request draws the same numbers alone or in
// any batch, and after preemption and recompute.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/request.h"
#include "engine/sampling_params.h"
#include "kernels/cpu/sample.h"
#include "kernels/ops.h"

namespace pagoda {

// Philox-4x32-10 (Salmon et al., SC'11; Random123's philox4x32 with 10 rounds).
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// A uniform float in [0, 1) from (seed, counter): kernels/sample_math.h's counter_uniform
// (Philox-4x32-10 with key {seed low 32 bits, seed high 32 bits} and counter {counter low,
// counter high, 0, 0}; the top 24 bits of the first output word, times 2^-24).
float counter_uniform(uint64_t seed, uint64_t counter);

// The sample op's row parameters (kernels/ops.h) for a request: its params, RNG key and the
// position of the token being sampled (the counter).
SampleRowParams sample_row_params(const SamplingParams& params, uint64_t seed, int64_t position);

// Whether sampling with these params reads the prompt / output tokens (any penalty on).
bool has_penalties(const SamplingParams& params);

// Sampler::sample, in order (kernels/cpu/sample.cc has the details; the sample op of every
// backend follows the same rule, kernels/ops.h SampleArgs):
//   1. penalties: repetition (HF: a seen logit l becomes l / p if l > 0, else l * p; seen = in
//      prompt or output), then presence/frequency (OpenAI: l -= fma(frequency, count, presence)
//      for each token that occurs count > 0 times in the output);
//   2. temperature == 0 or top_k == 1: argmax, lowest id on ties;
//   3. otherwise top-k on the logits, softmax at the temperature, top-p (smallest set with
//      cumulative probability >= top_p, at least one token), min-p (drop p < min_p * p_max),
//      renormalize, then draw u = counter_uniform(seed, position) by inverse CDF over tokens in
//      descending probability, ties by ascending id.
// NaN logits count as -inf. Ids outside [0, vocab) in prompt_ids / output_ids are ignored.
// Orders top logprobs (id, logprob) given in descending logit order as TokenLogprobs lists
// them: by descending logprob, ties by ascending id.
void sort_top_logprobs(std::vector<std::pair<int, float>>& top);

class Sampler {
 public:
  // logits: [vocab] f32 (not modified). prompt_ids / output_ids feed the penalties.
  // position: the position of the token being sampled (the RNG counter).
  int sample(std::span<const float> logits, const SamplingParams& params,
             std::span<const int> prompt_ids, std::span<const int> output_ids, uint64_t seed,
             int64_t position);

  // Log-probabilities from the raw logits (no penalties, no temperature: vLLM's default "raw"
  // logprobs): log_softmax(logits) at `token` and at the first min(num_top, vocab) tokens in
  // descending logprob, ties by ascending id. num_top == 0: top is empty. O(V) with a partial
  // selection; max-subtracted, exponentials summed in double. NaN logits count as -inf, as in
  // sample(); -inf logits get -inf. Degenerate rows take the limit: with some +inf logits those
  // share the mass equally (-log(count) each, the rest -inf); with every logit -inf, uniform
  // (-log(vocab) each). token must be in [0, vocab); num_top >= 0.
  TokenLogprobs logprobs(std::span<const float> logits, int token, int num_top);

  // The sample op's penalty table for one row: each distinct id of prompt_ids and output_ids in
  // [0, vocab), in order of first appearance, appended to ids, and its count in output_ids
  // appended to counts. Appends nothing when has_penalties(params) is false.
  void penalty_table(const SamplingParams& params, std::span<const int> prompt_ids,
                     std::span<const int> output_ids, int vocab, std::vector<int32_t>* ids,
                     std::vector<int32_t>* counts);

 private:
  cpu::SampleScratch scratch_;
  std::vector<int32_t> table_ids_, table_counts_;  // one row's penalty table
  std::vector<int32_t> top_ids_;                   // one row's top logprobs
  std::vector<float> top_logprobs_;
  std::vector<int32_t> counts_;  // per-token, while building a table; all zero between calls
};

// One request's penalty table (Sampler::penalty_table's, the same ids and counts in the same
// order), kept up to date as its tokens come instead of rebuilt each step: rebuilding costs
// O(prompt + output) scattered accesses per row and step, on the critical path between device
// steps; this costs O(new tokens), and the step copies the table.
class PenaltyTable {
 public:
  // Brings the table up to these tokens. prompt_ids must be the same on every call and
  // output_ids may only have grown (a request's tokens are only ever appended, preemption
  // included). Ids outside [0, vocab) are ignored.
  void update(std::span<const int> prompt_ids, std::span<const int> output_ids, int vocab);
  std::span<const int32_t> ids() const { return ids_; }
  std::span<const int32_t> counts() const { return counts_; }

 private:
  void add(int id, int count);
  std::vector<int32_t> ids_, counts_;
  std::unordered_map<int32_t, int32_t> index_;  // id -> its entry
  bool prompt_done_ = false;
  size_t output_seen_ = 0;
};

}  // namespace pagoda
