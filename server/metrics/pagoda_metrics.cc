#include "server/metrics/pagoda_metrics.h"

namespace pagoda::metrics {

// vLLM's TTFT buckets.
const std::vector<double>& time_to_first_token_buckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                        0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                        20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
  return b;
}

// vLLM's inter-token buckets with 1, 2.5 and 5 ms in front: small models step in milliseconds.
const std::vector<double>& inter_token_latency_buckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                        0.15,  0.2,    0.3,   0.4,  0.5,   0.75, 1.0,   2.5,
                                        5.0,   7.5,    10.0,  20.0, 40.0,  80.0};
  return b;
}

// vLLM's request latency buckets with 10, 50 and 100 ms in front.
const std::vector<double>& e2e_request_latency_buckets() {
  static const std::vector<double> b = {0.01, 0.05, 0.1,   0.3,   0.5,   0.8,   1.0,    1.5,
                                        2.0,  2.5,  5.0,   10.0,  15.0,  20.0,  30.0,   40.0,
                                        50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return b;
}

// Queue time is mostly near zero; the tail shows overload.
const std::vector<double>& request_queue_time_buckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,   0.25,  0.5,  1.0,
                                        2.5,   5.0,   10.0, 30.0,  60.0, 120.0, 300.0, 600.0};
  return b;
}

// A group commit is one fsync: fractions of a millisecond on NVMe, tens of ms on network disks;
// the tail shows a struggling disk or a full queue. (Bounds that print in fixed notation.)
const std::vector<double>& ledger_commit_buckets() {
  static const std::vector<double> b = {0.00025, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,     0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
  return b;
}

void advance_to(Counter* counter, double total) {
  const double now = counter->value();
  if (total > now) counter->inc(total - now);
}

void PagodaMetrics::sample_trace_export(const TraceExportTotals& t) {
  advance_to(trace_spans_exported, static_cast<double>(t.exported));
  advance_to(trace_spans_dropped, static_cast<double>(t.dropped));
  advance_to(trace_spans_failed, static_cast<double>(t.failed));
  trace_spans_queued->set(static_cast<double>(t.queued));
}

void PagodaMetrics::sample_ledger(const LedgerTotals& t) {
  advance_to(ledger_commits, static_cast<double>(t.commits));
  advance_to(ledger_rows_committed, static_cast<double>(t.rows_committed));
  advance_to(ledger_commit_failures, static_cast<double>(t.failed_commits));
  advance_to(ledger_rows_failed, static_cast<double>(t.rows_failed));
  advance_to(ledger_rows_rejected, static_cast<double>(t.rows_rejected));
  ledger_queue_rows->set(static_cast<double>(t.queued));
}

StatusOr<std::unique_ptr<PagodaMetrics>> PagodaMetrics::create(
    Registry* registry, const std::vector<std::string>& finish_reasons) {
  std::unique_ptr<PagodaMetrics> m(new PagodaMetrics());
  auto gauge = [&](const char* name, const char* help, Gauge** out) -> Status {
    PAGODA_ASSIGN_OR_RETURN(GaugeFamily * f, registry->add_gauge(name, help));
    *out = f->with({});
    return OkStatus();
  };
  auto counter = [&](const char* name, const char* help, Counter** out) -> Status {
    PAGODA_ASSIGN_OR_RETURN(CounterFamily * f, registry->add_counter(name, help));
    *out = f->with({});
    return OkStatus();
  };
  auto histogram = [&](const char* name, const char* help, const std::vector<double>& bounds,
                       Histogram** out) -> Status {
    PAGODA_ASSIGN_OR_RETURN(HistogramFamily * f, registry->add_histogram(name, help, bounds));
    *out = f->with({});
    return OkStatus();
  };

  PAGODA_RETURN_IF_ERROR(gauge("pagoda_requests_running",
                               "Requests in the running batch (prefilling or decoding).",
                               &m->requests_running));
  PAGODA_RETURN_IF_ERROR(gauge("pagoda_requests_waiting",
                               "Requests admitted and waiting to be scheduled.",
                               &m->requests_waiting));
  PAGODA_RETURN_IF_ERROR(gauge("pagoda_kv_cache_usage_ratio",
                               "Fraction of KV-cache blocks in use, 0 to 1.",
                               &m->kv_cache_usage_ratio));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_prefix_cache_queries_total",
                                 "Prompt tokens looked up in the prefix cache.",
                                 &m->prefix_cache_queries));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_prefix_cache_hits_total",
                                 "Prompt tokens found in the prefix cache.",
                                 &m->prefix_cache_hits));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_preemptions_total",
                                 "Requests preempted (KV blocks freed, to be recomputed).",
                                 &m->preemptions));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_decode_graph_captures_total",
                                 "Decode step graphs captured (--cuda-graphs).",
                                 &m->decode_graph_captures));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_decode_graph_replays_total",
                                 "Decode steps run by replaying a step graph.",
                                 &m->decode_graph_replays));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_decode_graph_capture_failures_total",
                                 "Step-graph captures that failed (the bucket stays eager).",
                                 &m->decode_graph_capture_failures));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_async_lookahead_steps_total",
                                 "Steps planned while the step before ran (--async-scheduling).",
                                 &m->async_lookahead_steps));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_async_wasted_rows_total",
                                 "Sampled rows computed for requests that had already ended.",
                                 &m->async_wasted_rows));
  PAGODA_ASSIGN_OR_RETURN(m->prompt_tokens_,
                          registry->add_counter("pagoda_prompt_tokens_total",
                                                "Prompt tokens processed, by tenant.", {"tenant"}));
  PAGODA_ASSIGN_OR_RETURN(m->generation_tokens_,
                          registry->add_counter("pagoda_generation_tokens_total",
                                                "Tokens generated, by tenant.", {"tenant"}));
  PAGODA_RETURN_IF_ERROR(histogram("pagoda_time_to_first_token_seconds",
                                   "Time from request arrival to its first output token.",
                                   time_to_first_token_buckets(), &m->time_to_first_token));
  PAGODA_RETURN_IF_ERROR(histogram("pagoda_inter_token_latency_seconds",
                                   "Time between successive output tokens of a request.",
                                   inter_token_latency_buckets(), &m->inter_token_latency));
  PAGODA_RETURN_IF_ERROR(histogram("pagoda_e2e_request_latency_seconds",
                                   "Time from request arrival to its final response.",
                                   e2e_request_latency_buckets(), &m->e2e_request_latency));
  PAGODA_RETURN_IF_ERROR(histogram("pagoda_request_queue_time_seconds",
                                   "Time from request arrival until it was first scheduled.",
                                   request_queue_time_buckets(), &m->request_queue_time));
  PAGODA_ASSIGN_OR_RETURN(
      m->policy_decisions_,
      registry->add_counter("pagoda_policy_decisions_total",
                            "Policy-filter decisions, by filter and action (allow, redact, block).",
                            {"filter", "action"}));
  PAGODA_ASSIGN_OR_RETURN(
      m->requests_finished_,
      registry->add_counter("pagoda_requests_finished_total",
                            "Requests finished, by finish reason.", {"finish_reason"}));
  for (const auto& reason : finish_reasons) m->requests_finished(reason);

  PAGODA_RETURN_IF_ERROR(counter("pagoda_trace_spans_exported_total",
                                 "Spans the OTLP collector accepted (2xx).",
                                 &m->trace_spans_exported));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_trace_spans_dropped_total",
                                 "Spans dropped without a send: export queue full, or shut down.",
                                 &m->trace_spans_dropped));
  PAGODA_RETURN_IF_ERROR(
      counter("pagoda_trace_spans_failed_total",
              "Spans sent but not accepted: collector unreachable, timed out or non-2xx.",
              &m->trace_spans_failed));
  PAGODA_RETURN_IF_ERROR(gauge("pagoda_trace_spans_queued", "Spans waiting in the export queue.",
                               &m->trace_spans_queued));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_ledger_commits_total",
                                 "Ledger transactions (group commits) committed.",
                                 &m->ledger_commits));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_ledger_rows_committed_total",
                                 "Usage-ledger rows committed (one per finished request).",
                                 &m->ledger_rows_committed));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_ledger_commit_failures_total",
                                 "Ledger transactions that failed and were rolled back.",
                                 &m->ledger_commit_failures));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_ledger_rows_failed_total",
                                 "Ledger rows lost to failed transactions (their requests failed).",
                                 &m->ledger_rows_failed));
  PAGODA_RETURN_IF_ERROR(counter("pagoda_ledger_rows_rejected_total",
                                 "Ledger rows refused because the queue stayed full.",
                                 &m->ledger_rows_rejected));
  PAGODA_RETURN_IF_ERROR(gauge("pagoda_ledger_queue_rows", "Ledger rows waiting for the writer.",
                               &m->ledger_queue_rows));
  PAGODA_RETURN_IF_ERROR(histogram("pagoda_ledger_commit_duration_seconds",
                                   "Ledger transaction time, BEGIN to COMMIT (with its fsync).",
                                   ledger_commit_buckets(), &m->ledger_commit_duration));
  PAGODA_RETURN_IF_ERROR(
      histogram("pagoda_ledger_commit_wait_seconds",
                "Time a ledger row waited from append to its commit (what a final response waits).",
                ledger_commit_buckets(), &m->ledger_commit_wait));
  return m;
}

}  // namespace pagoda::metrics
