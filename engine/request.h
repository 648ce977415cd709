// Request and RequestOutput: what goes into the Engine and what comes out, per request.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "engine/sampling_params.h"
#include "engine/step_plan.h"

namespace pagoda {

using EngineClock = std::chrono::steady_clock;

struct Request {
  std::vector<int> prompt_ids;  // BOS included when the model wants one
  SamplingParams params;
  std::vector<std::string> stop_strings;  // matched on the detokenized output; not emitted
  int priority = 0;                       // lower is more important (policy priority)
  std::string cache_salt;                 // prefix-cache sharing only within equal salts
  std::optional<EngineClock::time_point> deadline;  // TIME_LIMIT when passed
  // When the request arrived (e.g. when the server received it); orders fcfs and picks
  // preemption victims. Unset: the time of submit().
  std::optional<EngineClock::time_point> arrival;
};

// The wire's finish reasons (DESIGN.md §6).
enum class FinishReason {
  kNone,
  kLength,
  kStop,
  kStopSequence,
  kCancelled,
  kTimeLimit,
  kContentFilter,  // set above the engine, by the server's policy stage
  kError
};
const char* finish_reason_name(FinishReason r);

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;  // prompt tokens served from the prefix cache at first admission
};

struct RequestTimings {
  EngineClock::time_point queued{}, scheduled{}, first_token{}, finished{};
};

// One engine step that computed prompt tokens of a request (a prefill chunk), or recomputed its
// prompt and output after a preemption.
struct PrefillChunk {
  EngineClock::time_point start{}, end{};  // the step's forward pass
  int32_t start_position = 0;              // positions [start_position, + num_tokens)
  int32_t num_tokens = 0;
  bool recompute = false;  // after a preemption
};

// What the engine did for one request, step by step, for per-request tracing: small (a few
// entries per request), recorded always, handed over once with the final message.
struct RequestTimeline {
  std::vector<PrefillChunk> prefill_chunks;           // in order
  std::vector<EngineClock::time_point> preempted_at;  // when each preemption happened
  std::chrono::nanoseconds detokenize_busy{0};        // time inside the incremental detokenizer
  int64_t detokenized_tokens = 0;
};

// The log-probability of one generated token, from the log-softmax of the raw logits (before
// penalties and temperature, like vLLM's default), and the params.logprobs most likely tokens:
// top is (token id, logprob), by descending logprob, ties by ascending id.
struct TokenLogprobs {
  int token_id = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int, float>> top;
};

// One message on a request's output channel. Every message carries usage so far; exactly one
// message per request has finished == true, and it is the last.
struct RequestOutput {
  RequestId id = 0;
  std::vector<int> new_token_ids;  // tokens since the previous message
  // When params.logprobs > 0: one per entry of new_token_ids, in the same order. Else empty.
  std::vector<TokenLogprobs> logprobs;
  std::string text;  // text delta (whole UTF-8 characters; stop strings held back)
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Usage usage;
  RequestTimings timings;  // filled as they become known
  int num_preemptions = 0;
  std::shared_ptr<const RequestTimeline> timeline;  // final message only
  Status error;                                     // set when finish_reason == kError
  std::string trace_id;  // filled above the engine (the server's tracing), final message only
};

// A single-producer (engine loop), single-consumer queue of outputs for one request.
class OutputChannel {
 public:
  void push(RequestOutput out);
  // Blocks until a message is available (or timeout passes: then nullopt).
  std::optional<RequestOutput> next(
      std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  // Every message queued now, merged into one (text and ids concatenated, latest usage and
  // timings, finished if the last one is): lets a slow consumer catch up in one write.
  // Blocks like next() while the queue is empty.
  std::optional<RequestOutput> next_merged(
      std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  bool closed() const;  // the finished message has been pushed

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  bool closed_ = false;
  int waiting_ = 0;  // consumers blocked in next(): push() wakes them, and only them
};

}  // namespace pagoda
