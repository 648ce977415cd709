// The host sampler's arithmetic, shared by the CPU twin of the sample op (kernels/cpu/sample.cc)
// and the engine's Sampler (engine/sampler.cc, which adds the penalty bookkeeping and
// logprobs): one implementation of SampleArgs' rule (kernels/ops.h) on the host.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kernels/ops.h"

namespace pagoda::cpu {

using Candidate = std::pair<float, int>;  // (logit or probability, id)

// The order of everything in sampling: larger value first, smaller id first among equal values.
inline bool precedes(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Buffers reused across rows: after the first row of a vocabulary size, no allocation.
struct SampleScratch {
  std::vector<float> values;          // penalized logits, then exponentials
  std::vector<Candidate> candidates;  // (logit, then probability; id)
  std::vector<Candidate> bucket;      // candidates of one radix bucket
};

// SampleArgs' rule for one row. logits: [vocab] f32 (not modified). penalty_ids /
// penalty_counts: the row's distinct penalized tokens and their output counts (ids outside
// [0, vocab) are ignored).
int sample_row(std::span<const float> logits, const SampleRowParams& params,
               std::span<const int32_t> penalty_ids, std::span<const int32_t> penalty_counts,
               SampleScratch& scratch);

// LogprobsArgs' rule for one row (kernels/ops.h): logits [vocab] f32 (not modified), token in
// [0, vocab), 0 <= num_top <= vocab. Writes *token_logprob and num_top entries of top_ids and
// top_logprobs, in the order (logit desc, id asc).
void row_logprobs(std::span<const float> logits, int token, int num_top, SampleScratch& scratch,
                  float* token_logprob, int32_t* top_ids, float* top_logprobs);

// Lowest id among the largest values (no NaN among them); 0 for an empty or all -inf vector.
int first_argmax(const std::vector<float>& values);
// A double sum in a fixed grouping (eight running sums), so that it pipelines.
double grouped_sum(const std::vector<float>& values);
// The first k (0 < k < values.size()) of `values` in the order, into `out` (unordered).
void select_top_k(const std::vector<float>& values, size_t k, std::vector<Candidate>& out);

}  // namespace pagoda::cpu
