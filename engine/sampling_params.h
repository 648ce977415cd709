// SamplingParams: how one request picks its next token and when it stops.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/status.h"

namespace pagoda {

struct SamplingParams {
  float temperature = 1.0f;         // 0: greedy
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off; applied to tokens of prompt and output (HF rule)
  float presence_penalty = 0.0f;    // applied to output tokens (OpenAI rule)
  float frequency_penalty = 0.0f;   // applied to output tokens (OpenAI rule)
  std::optional<uint64_t> seed;     // none: the engine draws one
  int max_tokens = 256;
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;
  // 0: none. Otherwise each generated token comes with its log-probability and those of the
  // `logprobs` most likely tokens, from the raw logits (before penalties and temperature).
  int logprobs = 0;

  static constexpr int kMaxLogprobs = 20;

  // InvalidArgument naming the field for anything out of range.
  Status validate() const;
};

}  // namespace pagoda
