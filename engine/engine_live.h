// Engine internals shared by engine.cc (submission, the loop, output) and engine_step.cc
// (the step pipeline): the per-request state and small rules.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace pagoda {

struct Engine::Live {
  RequestId id = 0;
  Request request;
  std::shared_ptr<OutputChannel> channel;
  uint64_t seed = 0;
  std::unique_ptr<IncrementalDetokenizer> detok;
  std::string text;     // detokenized output so far (cut at a stop string once matched)
  size_t emitted = 0;   // bytes of text already sent
  size_t holdback = 0;  // longest stop string - 1: bytes that may still start a match
  FinishReason stop_reason = FinishReason::kNone;    // set by our stop conditions
  FinishReason cancel_reason = FinishReason::kNone;  // set when we asked for an abort
  Usage usage;
  RequestTimings timings;
  int preemptions = 0;
  RequestTimeline timeline;
  bool admitted = false;
  std::vector<TokenLogprobs> logprobs;  // of sampled tokens not yet emitted (params.logprobs > 0)
  PenaltyTable penalties;               // with device sampling and a penalty on
};

// The sampler's greedy path without penalties: its choice is exactly the backend's argmax
// (kernels/ops.h ArgmaxArgs), and its logprobs, if any, come from the logprobs op.
inline bool greedy_on_backend(const SamplingParams& p) {
  return (!(p.temperature > 0.0f) || p.top_k == 1) && p.repetition_penalty == 1.0f &&
         p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f;
}

inline FinishReason from_end_reason(EndReason r, FinishReason stop_reason) {
  switch (r) {
    case EndReason::kStop:
      return stop_reason == FinishReason::kNone ? FinishReason::kStop : stop_reason;
    case EndReason::kMaxTokens:
    case EndReason::kMaxModelLen: return FinishReason::kLength;
    case EndReason::kAborted: return FinishReason::kCancelled;
    case EndReason::kError: return FinishReason::kError;
  }
  return FinishReason::kError;
}
// The finish reason of a request the scheduler ended: a stop string seen in its last token
// wins over whatever else that token did (max_tokens, EOS), as it would have ended it anyway.
inline FinishReason final_reason(FinishReason stop_reason, EndReason r) {
  return stop_reason == FinishReason::kStopSequence ? FinishReason::kStopSequence
                                                    : from_end_reason(r, stop_reason);
}

}  // namespace pagoda
