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
    "pagoda_prompt_tokens_total",
    "pagoda_generation_tokens_total",
    "pagoda_time_to_first_token_seconds",
    "pagoda_inter_token_latency_seconds",
    "pagoda_e2e_request_latency_seconds",
    "pagoda_request_queue_time_seconds",
    "pagoda_policy_decisions_total",
    "pagoda_requests_finished_total",
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
  for (const auto* b : {&time_to_first_token_buckets(), &inter_token_latency_buckets(),
                        &e2e_request_latency_buckets(), &request_queue_time_buckets()}) {
    EXPECT_NE(readme.find(bucket_list(*b)), std::string::npos) << bucket_list(*b);
  }
}

}  // namespace
}  // namespace pagoda::metrics
