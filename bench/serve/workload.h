// Synthetic workloads: token-id prompts (no tokenizer needed) with fixed, uniform-random or
// long-tail (log-normal) lengths, optionally behind a shared system prompt. Every request is a
// pure function of (config, index), so a run is reproducible from its seed whatever the order
// in which threads ask for requests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace pagoda::bench {

enum class LengthMode { kFixed, kRandom, kLongTail };
const char* length_mode_name(LengthMode mode);

// Long-tail lengths, shaped like chat traffic (ShareGPT-like: most requests short, a heavy
// right tail): log-normal, length = round(exp(mu + sigma * N(0,1))), then clamped.
//   input:  mu = ln(128) (median 128 tokens), sigma = 1.0, clamped to [4, 2048]
//   output: mu = ln(96)  (median 96 tokens),  sigma = 0.8, clamped to [2, 1024]
// Then fitted into the model's context: input <= context/2, output <= context - prefix - input.
struct LongTailParams {
  double input_mu = 4.852030263919617;  // ln(128)
  double input_sigma = 1.0;
  int input_min = 4, input_max = 2048;
  double output_mu = 4.564348191467836;  // ln(96)
  double output_sigma = 0.8;
  int output_min = 2, output_max = 1024;
};

struct WorkloadConfig {
  LengthMode mode = LengthMode::kFixed;
  int input_len = 32, output_len = 32;  // kFixed
  int input_min = 16, input_max = 64;   // kRandom: uniform in [min, max], inclusive
  int output_min = 16, output_max = 64;
  LongTailParams long_tail;
  // Shared prefix: request i starts with system prompt (i % num_prefixes), shared_prefix tokens
  // long, then its own suffix whose length follows `mode`. 0: no shared prefix.
  int shared_prefix = 0;
  int num_prefixes = 1;
  int vocab_size = 512;    // token ids are drawn uniformly from [kFirstTokenId, vocab_size)
  int context_length = 0;  // 0: unknown (no fitting)
  uint64_t seed = 0;
};
// Ids 0..2 are <unk>, <s>, </s> in Llama vocabularies; prompts avoid them.
inline constexpr int kFirstTokenId = 3;

struct RequestSpec {
  std::vector<int> prompt;
  int output_len = 0;
  int prefix_id = -1;  // which shared prefix, -1 without one
};

// Checks the config (positive lengths, min <= max, fits the context where fixed).
Status validate_workload(const WorkloadConfig& config);
// Request `index` of the workload (deterministic in config.seed and index).
RequestSpec make_request(const WorkloadConfig& config, uint64_t index);
// Shared prefix `k` (deterministic in config.seed and k).
std::vector<int> make_prefix(const WorkloadConfig& config, int k);

}  // namespace pagoda::bench
