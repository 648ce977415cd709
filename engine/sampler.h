// Sampler: logits of one sequence -> next token id. Randomness comes from a counter-based
// generator keyed by (seed, position), so a seeded request draws the same numbers alone or in
// any batch, and after preemption and recompute.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "engine/request.h"
#include "engine/sampling_params.h"

namespace pagoda {

// Philox-4x32-10 (Salmon et al., SC'11; Random123's philox4x32 with 10 rounds).
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// A uniform float in [0, 1) from (seed, counter): Philox-4x32-10 with key {seed low 32 bits,
// seed high 32 bits} and counter {counter low, counter high, 0, 0}; the top 24 bits of the
// first output word, times 2^-24.
float counter_uniform(uint64_t seed, uint64_t counter);

// Sampler::sample, in order (engine/sampler.cc has the details):
//   1. penalties: repetition (HF: a seen logit l becomes l / p if l > 0, else l * p; seen = in
//      prompt or output), then presence/frequency (OpenAI: l -= frequency * count + presence
//      for each token that occurs count > 0 times in the output);
//   2. temperature == 0 or top_k == 1: argmax, lowest id on ties;
//   3. otherwise top-k on the logits, softmax at the temperature, top-p (smallest set with
//      cumulative probability >= top_p, at least one token), min-p (drop p < min_p * p_max),
//      renormalize, then draw u = counter_uniform(seed, position) by inverse CDF over tokens in
//      descending probability, ties by ascending id.
// NaN logits count as -inf. Ids outside [0, vocab) in prompt_ids / output_ids are ignored.
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

 private:
  std::vector<float> scratch_;                     // penalized logits; logprobs: exponentials
  std::vector<std::pair<float, int>> candidates_;  // (logit, then probability; id)
  std::vector<std::pair<float, int>> bucket_;      // candidates of one radix bucket
  std::vector<int> counts_;  // per-token counts for the penalties; all zero between calls
};

}  // namespace pagoda
