// BatchGenerator: runs a fixed set of requests to completion together over the paged KV cache.
// Every step, each unfinished sequence adds the tokens it has not computed yet (its prompt, in
// chunks under a per-step token budget, then one token per decode) to one flat ragged batch;
// sequences whose context is complete after the step sample their next token. It is the
// command line's driver and the model tests' harness; the continuous-batching Engine (with
// arrivals, preemption and prefix caching) replaces it for serving.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "engine/block_allocator.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/sampling_params.h"
#include "models/llama.h"

namespace pagoda {

struct GenerationRequest {
  std::vector<int> prompt_ids;  // non-empty
  SamplingParams params;
};

struct GenerationResult {
  std::vector<int> output_ids;  // includes the stop token when one ended the sequence
  FinishReason finish = FinishReason::kLength;  // kLength also for the context limit
};

struct GeneratorOptions {
  int block_size = 16;
  int num_blocks = 0;             // 0: enough for every request at its longest
  int max_batched_tokens = 8192;  // per-step token budget (chunked prefill beyond it)
  int max_context = 0;            // 0: the model's max_position_embeddings
};

struct GenerationStats {
  int64_t prompt_tokens = 0, generated_tokens = 0, steps = 0;
  double prefill_seconds = 0, decode_seconds = 0;  // steps that sampled no token count as prefill
  double first_token_seconds = 0;
};

class BatchGenerator {
 public:
  using TokenCallback = std::function<void(int request_index, int token_id)>;

  BatchGenerator(LlamaModel* model, GeneratorOptions options);

  // Runs all requests; on_token (may be empty) sees every sampled token as it comes.
  StatusOr<std::vector<GenerationResult>> run(const std::vector<GenerationRequest>& requests,
                                              const TokenCallback& on_token = {});
  const GenerationStats& stats() const { return stats_; }

 private:
  LlamaModel* model_;
  GeneratorOptions options_;
  GenerationStats stats_;
};

}  // namespace pagoda
