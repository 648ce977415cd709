// Pure statistics for the serving benchmark: percentiles, per-request latency metrics with the
// definitions of vLLM's benchmark_serving, goodput under SLOs, and the sweep stopping rule.
// Times are seconds (doubles) relative to the start of a run; nothing here reads a clock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace pagoda::bench {

// The p-th percentile (p in [0, 100]) with linear interpolation between the closest ranks, as
// numpy.percentile's default ("linear"): rank = p/100 * (n - 1), interpolated between
// sorted[floor(rank)] and sorted[ceil(rank)]. 0 for an empty input.
double percentile(std::vector<double> values, double p);

struct Summary {
  size_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, min = 0, max = 0;
};
Summary summarize(const std::vector<double>& values);

// What the runner records for one request.
struct RequestRecord {
  size_t index = 0;    // position in the workload
  double start_s = 0;  // when the request was sent
  double end_s = 0;    // when the last message (or the error) arrived
  // Arrival time and token count of every message that carried at least one output token.
  std::vector<double> chunk_times_s;
  std::vector<int> chunk_tokens;
  int input_tokens = 0;     // prompt length sent
  int expected_tokens = 0;  // max_tokens asked for
  int output_tokens = 0;    // completion tokens received
  int cached_tokens = 0;    // prompt tokens served from the prefix cache (server's usage)
  bool ok = false;
  bool cancelled_by_client = false;  // cut off by Ctrl-C / the duration grace: left out of stats
  std::string status_code = "OK";    // gRPC code name for failures
  std::string error;
};

// Per-request metrics (vLLM's definitions). ttft: first token-carrying message − start;
// e2e: end − start; tpot: (e2e − ttft) / (output_tokens − 1), only with > 1 token; itl: the gap
// between successive token-carrying messages, split evenly over the tokens the later one
// carries (k tokens in a message give k values of gap/k).
struct RequestMetrics {
  std::optional<double> ttft;
  double e2e = 0;
  std::optional<double> tpot;
  std::vector<double> itl;
};
RequestMetrics request_metrics(const RequestRecord& r);

// Service-level objectives, in seconds; unset ones are not checked.
struct Slo {
  std::optional<double> ttft, tpot, itl, e2e;
  bool empty() const { return !ttft && !tpot && !itl && !e2e; }
};
// Parses "ttft=500ms,tpot=50ms,itl=40ms,e2e=10s" (units: us, ms, s; a unit is required).
StatusOr<Slo> parse_slo(const std::string& text);
std::string format_slo(const Slo& slo);

// A request is good when it succeeded and meets every set SLO: its ttft <= ttft, its tpot <= tpot
// (requests with one token have no tpot and pass that check), its largest itl value <= itl,
// its e2e <= e2e.
bool meets_slo(const RequestRecord& r, const Slo& slo);

struct RunStats {
  size_t completed = 0;  // succeeded
  size_t failed = 0;     // ended with an error status
  size_t cancelled = 0;  // cut off by the client (not counted anywhere else)
  std::map<std::string, size_t> errors_by_code;
  double duration_s = 0;          // first send to last completion, over the measured requests
  double request_throughput = 0;  // completed / duration
  double input_token_throughput = 0, output_token_throughput = 0, total_token_throughput = 0;
  int64_t total_input_tokens = 0, total_output_tokens = 0, cached_tokens = 0;
  double cached_token_share = 0;  // cached_tokens / total_input_tokens (successful requests)
  Summary ttft, tpot, itl, e2e;   // seconds
  size_t good_requests = 0;
  double goodput = 0;  // good_requests / duration (requests/s)
};
RunStats compute_stats(const std::vector<RequestRecord>& records, const Slo& slo);

// The sweep stopping rule. A step is sustainable when all of:
//   1. goodput / request rate >= 0.9, both over the step's duration, i.e.
//      good_requests / requests sent >= 0.9 (failed, cancelled and SLO-missing requests count
//      against it);
//   2. for every set SLO, the step's p99 of that metric is <= the SLO;
//   3. at least one request completed.
// The sweep multiplies the rate by the factor after each sustainable step and stops at the
// first step that is not (or after max steps); the capacity is the highest sustainable rate.
// It needs SLOs: without them a saturated server only shows as longer latencies.
inline constexpr double kGoodputRatioThreshold = 0.9;
struct StepVerdict {
  bool sustainable = false;
  std::string reason;  // why not (empty when sustainable)
};
StepVerdict judge_step(const RunStats& stats, size_t sent, const Slo& slo);

struct SweepDecision {
  bool stop = false;
  std::optional<double> capacity;  // highest sustainable rate so far
  std::string reason;
};
// rates[i], verdicts[i]: the steps run so far, in order.
SweepDecision sweep_decision(const std::vector<double>& rates,
                             const std::vector<StepVerdict>& verdicts, int max_steps);

}  // namespace pagoda::bench
