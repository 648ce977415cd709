// The pagoda metric set: names shaped like vLLM's (vllm:x -> pagoda_x), registered in one
// Registry, with handles the server updates. README.md in this folder documents each metric.
//
// Unlabeled series are plain pointers, usable from any thread. Labeled ones go through a
// lookup (a mutex and a map find): do it once per request or per tenant and keep the pointer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "server/metrics/metrics.h"

namespace pagoda::metrics {

// Histogram bucket upper bounds, in seconds (the +Inf bucket is implicit).
const std::vector<double>& time_to_first_token_buckets();
const std::vector<double>& inter_token_latency_buckets();
const std::vector<double>& e2e_request_latency_buckets();
const std::vector<double>& request_queue_time_buckets();

class PagodaMetrics {
 public:
  // Registers the set in registry (which must outlive it). The finish_reasons given get their
  // series at zero from the start, so that rate() and increase() see every outcome.
  static StatusOr<std::unique_ptr<PagodaMetrics>> create(
      Registry* registry, const std::vector<std::string>& finish_reasons = {});

  // Scheduler state, set each step (or from a Registry collect hook at scrape time).
  Gauge* requests_running = nullptr;
  Gauge* requests_waiting = nullptr;
  Gauge* kv_cache_usage_ratio = nullptr;  // 0..1
  // In tokens, like vLLM: prompt tokens looked up in the prefix cache / found there.
  Counter* prefix_cache_queries = nullptr;
  Counter* prefix_cache_hits = nullptr;
  Counter* preemptions = nullptr;

  Histogram* time_to_first_token = nullptr;  // arrival -> first output token
  Histogram* inter_token_latency = nullptr;  // between successive output tokens
  Histogram* e2e_request_latency = nullptr;  // arrival -> final response
  Histogram* request_queue_time = nullptr;   // arrival -> first scheduled

  Counter* prompt_tokens(const std::string& tenant) { return prompt_tokens_->with({tenant}); }
  Counter* generation_tokens(const std::string& tenant) {
    return generation_tokens_->with({tenant});
  }
  Counter* policy_decisions(const std::string& filter, const std::string& action) {
    return policy_decisions_->with({filter, action});
  }
  Counter* requests_finished(const std::string& finish_reason) {
    return requests_finished_->with({finish_reason});
  }

 private:
  PagodaMetrics() = default;

  CounterFamily* prompt_tokens_ = nullptr;
  CounterFamily* generation_tokens_ = nullptr;
  CounterFamily* policy_decisions_ = nullptr;
  CounterFamily* requests_finished_ = nullptr;
};

}  // namespace pagoda::metrics
