// Sampler: logits of one sequence -> next token id. Randomness comes from a counter-based
// generator keyed by (seed, position), so a seeded request draws the same numbers alone or in
// any batch, and after preemption and recompute.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sampling_params.h"

namespace pagoda {

// A uniform float in [0, 1) from (seed, counter): Philox-4x32-10.
float counter_uniform(uint64_t seed, uint64_t counter);

class Sampler {
 public:
  // logits: [vocab] f32 (not modified). prompt_ids / output_ids feed the penalties.
  // position: the position of the token being sampled (the RNG counter).
  int sample(std::span<const float> logits, const SamplingParams& params,
             std::span<const int> prompt_ids, std::span<const int> output_ids, uint64_t seed,
             int64_t position);

 private:
  std::vector<float> scratch_;
  std::vector<int> order_;
};

}  // namespace pagoda
