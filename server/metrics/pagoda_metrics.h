// The pagoda metric set: names shaped like vLLM's (vllm:x -> pagoda_x), registered in one
// Registry, with handles the server updates. README.md in this folder documents each metric.
//
// Unlabeled series are plain pointers, usable from any thread. Labeled ones go through a
// lookup (a mutex and a map find): do it once per request or per tenant and keep the pointer.
#pragma once

#include <cstdint>
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
const std::vector<double>& ledger_commit_buckets();  // both ledger histograms

// Advances `counter`, which mirrors a monotonically increasing total kept elsewhere (the span
// exporter's, the ledger's), by what the total gained since the last call: afterwards it reads
// `total`. A total below the counter's value changes nothing (counters never go down).
void advance_to(Counter* counter, double total);

// What the span exporter reports (tracing::OtlpExporterStats), copied by the server.
struct TraceExportTotals {
  uint64_t exported = 0;  // accepted by the collector
  uint64_t dropped = 0;   // queue full or shut down
  uint64_t failed = 0;    // collector unreachable, timed out or non-2xx
  uint64_t queued = 0;    // waiting in the queue now
};

// What the ledger reports (ledger::LedgerStats), copied by the server.
struct LedgerTotals {
  int64_t commits = 0;         // transactions committed
  int64_t rows_committed = 0;  // rows in them
  int64_t failed_commits = 0;  // transactions rolled back
  int64_t rows_failed = 0;     // rows in them
  int64_t rows_rejected = 0;   // appends refused because the queue stayed full
  int64_t queued = 0;          // rows waiting for the writer now
};

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
  // Decode steps as step graphs (--cuda-graphs): graphs captured, steps replayed, captures that
  // failed (those batch buckets stay eager).
  Counter* decode_graph_captures = nullptr;
  Counter* decode_graph_replays = nullptr;
  Counter* decode_graph_capture_failures = nullptr;
  // Async scheduling (--async-scheduling): steps planned while the step before ran; sampled rows
  // computed for requests that had ended by then (a stop one step earlier, a cancel).
  Counter* async_lookahead_steps = nullptr;
  Counter* async_wasted_rows = nullptr;

  Histogram* time_to_first_token = nullptr;  // arrival -> first output token
  Histogram* inter_token_latency = nullptr;  // between successive output tokens
  Histogram* e2e_request_latency = nullptr;  // arrival -> final response
  Histogram* request_queue_time = nullptr;   // arrival -> first scheduled

  // Span export (--otlp-endpoint): counters follow the exporter's totals (sample_trace_export).
  Counter* trace_spans_exported = nullptr;
  Counter* trace_spans_dropped = nullptr;
  Counter* trace_spans_failed = nullptr;
  Gauge* trace_spans_queued = nullptr;
  // Usage ledger (--ledger): counters follow the ledger's totals (sample_ledger); the
  // histograms are observed per commit from the ledger's writer thread.
  Counter* ledger_commits = nullptr;
  Counter* ledger_rows_committed = nullptr;
  Counter* ledger_commit_failures = nullptr;
  Counter* ledger_rows_failed = nullptr;
  Counter* ledger_rows_rejected = nullptr;
  Gauge* ledger_queue_rows = nullptr;
  Histogram* ledger_commit_duration = nullptr;  // BEGIN -> COMMIT returned, per transaction
  Histogram* ledger_commit_wait = nullptr;      // append -> commit outcome, per row

  // Copy totals sampled from the exporter / the ledger (e.g. in a collect hook): counters
  // advance by what changed since the previous call, gauges are set.
  void sample_trace_export(const TraceExportTotals& t);
  void sample_ledger(const LedgerTotals& t);

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
