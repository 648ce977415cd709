#include "server/metrics/pagoda_metrics.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace pagoda::metrics {
namespace {

const char* const kNames[] = {
    "pagoda_requests_running",
    "pagoda_requests_waiting",
    "pagoda_kv_cache_usage_ratio",
    "pagoda_prefix_cache_queries_total",
    "pagoda_prefix_cache_hits_total",
    "pagoda_preemptions_total",
    "pagoda_decode_graph_captures_total",
    "pagoda_decode_graph_replays_total",
    "pagoda_decode_graph_capture_failures_total",
    "pagoda_async_lookahead_steps_total",
    "pagoda_async_wasted_rows_total",
    "pagoda_prompt_tokens_total",
    "pagoda_generation_tokens_total",
    "pagoda_time_to_first_token_seconds",
    "pagoda_inter_token_latency_seconds",
    "pagoda_e2e_request_latency_seconds",
    "pagoda_request_queue_time_seconds",
    "pagoda_policy_decisions_total",
    "pagoda_requests_finished_total",
    "pagoda_trace_spans_exported_total",
    "pagoda_trace_spans_dropped_total",
    "pagoda_trace_spans_failed_total",
    "pagoda_trace_spans_queued",
    "pagoda_ledger_commits_total",
    "pagoda_ledger_rows_committed_total",
    "pagoda_ledger_commit_failures_total",
    "pagoda_ledger_rows_failed_total",
    "pagoda_ledger_rows_rejected_total",
    "pagoda_ledger_queue_rows",
    "pagoda_ledger_commit_duration_seconds",
    "pagoda_ledger_commit_wait_seconds",
};

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(PagodaMetrics, RegistersEveryMetricWithItsType) {
  Registry r;
  auto m = PagodaMetrics::create(&r);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const std::string text = r.render();
  for (const char* name : kNames) {
    std::string n = name;
    const char* type = n.ends_with("_total")     ? "counter"
                       : n.ends_with("_seconds") ? "histogram"
                                                 : "gauge";
    EXPECT_TRUE(has_line(text, "# TYPE " + n + " " + type)) << n;
    EXPECT_NE(text.find("# HELP " + n + " "), std::string::npos) << n;
  }
  // Registering twice in one registry is an error, not a crash.
  EXPECT_FALSE(PagodaMetrics::create(&r).ok());
}

TEST(PagodaMetrics, KnownWorkloadGivesKnownValues) {
  Registry r;
  auto created = PagodaMetrics::create(&r, {"stop", "length"});
  ASSERT_TRUE(created.ok());
  PagodaMetrics& m = **created;
  m.requests_running->set(3);
  m.requests_waiting->set(1);
  m.kv_cache_usage_ratio->set(0.25);
  m.prefix_cache_queries->inc(64);
  m.prefix_cache_hits->inc(48);
  m.preemptions->inc();
  m.prompt_tokens("acme")->inc(12);
  m.prompt_tokens("beta")->inc(5);
  m.generation_tokens("acme")->inc(40);
  m.policy_decisions("pii", "redact")->inc(2);
  m.requests_finished("stop")->inc();
  m.time_to_first_token->observe(0.03);  // in (0.02, 0.04]
  m.e2e_request_latency->observe(1.25);
  const std::string t = r.render();
  for (const char* line : {
           "pagoda_requests_running 3",
           "pagoda_requests_waiting 1",
           "pagoda_kv_cache_usage_ratio 0.25",
           "pagoda_prefix_cache_queries_total 64",
           "pagoda_prefix_cache_hits_total 48",
           "pagoda_preemptions_total 1",
           "pagoda_prompt_tokens_total{tenant=\"acme\"} 12",
           "pagoda_prompt_tokens_total{tenant=\"beta\"} 5",
           "pagoda_generation_tokens_total{tenant=\"acme\"} 40",
           "pagoda_policy_decisions_total{filter=\"pii\",action=\"redact\"} 2",
           "pagoda_requests_finished_total{finish_reason=\"length\"} 0",
           "pagoda_requests_finished_total{finish_reason=\"stop\"} 1",
           "pagoda_time_to_first_token_seconds_bucket{le=\"0.02\"} 0",
           "pagoda_time_to_first_token_seconds_bucket{le=\"0.04\"} 1",
           "pagoda_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1",
           "pagoda_time_to_first_token_seconds_sum 0.03",
           "pagoda_time_to_first_token_seconds_count 1",
           "pagoda_e2e_request_latency_seconds_bucket{le=\"1\"} 0",
           "pagoda_e2e_request_latency_seconds_bucket{le=\"1.5\"} 1",
           "pagoda_inter_token_latency_seconds_count 0",
           "pagoda_request_queue_time_seconds_count 0",
       }) {
    EXPECT_TRUE(has_line(t, line)) << line;
  }
}

// The exporter's and the ledger's totals are copied at every scrape: counters follow the totals
// by deltas (sampling twice adds nothing), gauges are set, and a total that goes backwards (a
// restarted source) never makes a counter go down.
TEST(PagodaMetrics, SampledTotalsAdvanceCountersByDeltas) {
  Registry r;
  auto created = PagodaMetrics::create(&r);
  ASSERT_TRUE(created.ok());
  PagodaMetrics& m = **created;
  m.sample_trace_export({.exported = 5, .dropped = 0, .failed = 7, .queued = 3});
  m.sample_trace_export({.exported = 5, .dropped = 0, .failed = 7, .queued = 3});
  m.sample_ledger({.commits = 2,
                   .rows_committed = 9,
                   .failed_commits = 1,
                   .rows_failed = 4,
                   .rows_rejected = 0,
                   .queued = 6});
  std::string t = r.render();
  for (const char* line : {
           "pagoda_trace_spans_exported_total 5",
           "pagoda_trace_spans_dropped_total 0",
           "pagoda_trace_spans_failed_total 7",
           "pagoda_trace_spans_queued 3",
           "pagoda_ledger_commits_total 2",
           "pagoda_ledger_rows_committed_total 9",
           "pagoda_ledger_commit_failures_total 1",
           "pagoda_ledger_rows_failed_total 4",
           "pagoda_ledger_rows_rejected_total 0",
           "pagoda_ledger_queue_rows 6",
       }) {
    EXPECT_TRUE(has_line(t, line)) << line << "\n" << t;
  }
  m.sample_trace_export({.exported = 8, .dropped = 2048, .failed = 6, .queued = 0});
  m.sample_ledger({.commits = 3, .rows_committed = 12, .rows_rejected = 1});
  t = r.render();
  for (const char* line : {
           "pagoda_trace_spans_exported_total 8",
           "pagoda_trace_spans_dropped_total 2048",
           "pagoda_trace_spans_failed_total 7",  // went "back" to 6: stays at 7
           "pagoda_trace_spans_queued 0",
           "pagoda_ledger_commits_total 3",
           "pagoda_ledger_rows_committed_total 12",
           "pagoda_ledger_commit_failures_total 1",
           "pagoda_ledger_rows_rejected_total 1",
           "pagoda_ledger_queue_rows 0",
       }) {
    EXPECT_TRUE(has_line(t, line)) << line << "\n" << t;
  }
  m.ledger_commit_duration->observe(0.003);  // in (0.0025, 0.005]
  m.ledger_commit_wait->observe(0.0004);     // in (0.00025, 0.001]
  t = r.render();
  for (const char* line : {
           "pagoda_ledger_commit_duration_seconds_bucket{le=\"0.0025\"} 0",
           "pagoda_ledger_commit_duration_seconds_bucket{le=\"0.005\"} 1",
           "pagoda_ledger_commit_duration_seconds_count 1",
           "pagoda_ledger_commit_wait_seconds_bucket{le=\"0.00025\"} 0",
           "pagoda_ledger_commit_wait_seconds_bucket{le=\"0.001\"} 1",
           "pagoda_ledger_commit_wait_seconds_bucket{le=\"+Inf\"} 1",
       }) {
    EXPECT_TRUE(has_line(t, line)) << line << "\n" << t;
  }
}

TEST(PagodaMetrics, AdvanceToNeverGoesDown) {
  Counter c;
  advance_to(&c, 3);
  EXPECT_EQ(c.value(), 3);
  advance_to(&c, 3);
  EXPECT_EQ(c.value(), 3);
  advance_to(&c, 1);
  EXPECT_EQ(c.value(), 3);
  advance_to(&c, 10.5);
  EXPECT_EQ(c.value(), 10.5);
}

std::string bucket_list(const std::vector<double>& b) {
  std::string s;
  for (double v : b) s += (s.empty() ? "" : ", ") + format_value(v);
  return s;
}

// README.md documents every metric and, verbatim, every bucket list.
TEST(PagodaMetrics, ReadmeDocumentsNamesAndBuckets) {
  std::ifstream in(std::string(PAGODA_SOURCE_DIR) + "/server/metrics/README.md");
  ASSERT_TRUE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  for (const char* name : kNames) {
    EXPECT_NE(readme.find(std::string("`").append(name).append("`")), std::string::npos) << name;
  }
  for (const auto* b :
       {&time_to_first_token_buckets(), &inter_token_latency_buckets(),
        &e2e_request_latency_buckets(), &request_queue_time_buckets(), &ledger_commit_buckets()}) {
    EXPECT_NE(readme.find(bucket_list(*b)), std::string::npos) << bucket_list(*b);
  }
}

}  // namespace
}  // namespace pagoda::metrics
