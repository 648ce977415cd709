#include "bench/serve/stats.h"

#include <gtest/gtest.h>

namespace pagoda::bench {
namespace {

TEST(Percentile, MatchesNumpyLinear) {
  // numpy.percentile([1, 2, 3, 4], q): 50 -> 2.5, 90 -> 3.7, 99 -> 3.97, 0 -> 1, 100 -> 4.
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);
  EXPECT_NEAR(percentile(v, 90), 3.7, 1e-12);
  EXPECT_NEAR(percentile(v, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 4);
  // numpy.percentile([10, 20, 30, 40, 50], 25) == 20; 10 -> 14.
  EXPECT_DOUBLE_EQ(percentile({50, 40, 30, 20, 10}, 25), 20);
  EXPECT_NEAR(percentile({50, 40, 30, 20, 10}, 10), 14, 1e-12);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
}

TEST(Summary, MeanMinMax) {
  Summary s = summarize({1, 2, 3, 10});
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.mean, 4);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 10);
  EXPECT_DOUBLE_EQ(s.p50, 2.5);
}

// A hand-made trace: sent at 1.0; messages at 1.2 (1 token), 1.3 (1 token), 1.6 (3 tokens),
// final at 1.6. 5 tokens: ttft 0.2, e2e 0.6, tpot (0.6 - 0.2) / 4 = 0.1,
// itl: 0.1, then 0.3 split over 3 tokens -> 0.1, 0.1, 0.1.
RequestRecord trace() {
  RequestRecord r;
  r.start_s = 1.0;
  r.end_s = 1.6;
  r.chunk_times_s = {1.2, 1.3, 1.6};
  r.chunk_tokens = {1, 1, 3};
  r.output_tokens = 5;
  r.input_tokens = 10;
  r.cached_tokens = 4;
  r.ok = true;
  return r;
}

TEST(RequestMetrics, TtftTpotItlOnTrace) {
  RequestMetrics m = request_metrics(trace());
  ASSERT_TRUE(m.ttft.has_value());
  EXPECT_NEAR(*m.ttft, 0.2, 1e-12);
  EXPECT_NEAR(m.e2e, 0.6, 1e-12);
  ASSERT_TRUE(m.tpot.has_value());
  EXPECT_NEAR(*m.tpot, 0.1, 1e-12);
  ASSERT_EQ(m.itl.size(), 4u);
  for (double x : m.itl) EXPECT_NEAR(x, 0.1, 1e-12);
}

TEST(RequestMetrics, UnevenChunksSplitEvenly) {
  RequestRecord r = trace();
  r.chunk_times_s = {1.2, 1.6};
  r.chunk_tokens = {1, 4};
  RequestMetrics m = request_metrics(r);
  ASSERT_EQ(m.itl.size(), 4u);
  for (double x : m.itl) EXPECT_NEAR(x, 0.1, 1e-12);
}

TEST(RequestMetrics, OneTokenHasNoTpot) {
  RequestRecord r = trace();
  r.chunk_times_s = {1.2};
  r.chunk_tokens = {1};
  r.output_tokens = 1;
  RequestMetrics m = request_metrics(r);
  EXPECT_FALSE(m.tpot.has_value());
  EXPECT_TRUE(m.itl.empty());
}

TEST(Slo, ParsesUnitsAndRejectsMissingUnit) {
  auto slo = parse_slo("ttft=500ms,tpot=50ms,e2e=10s,itl=250us");
  ASSERT_TRUE(slo.ok()) << slo.status().to_string();
  EXPECT_DOUBLE_EQ(*slo->ttft, 0.5);
  EXPECT_DOUBLE_EQ(*slo->tpot, 0.05);
  EXPECT_DOUBLE_EQ(*slo->e2e, 10);
  EXPECT_DOUBLE_EQ(*slo->itl, 250e-6);
  auto bad = parse_slo("ttft=500");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("no unit"), std::string::npos);
  EXPECT_FALSE(parse_slo("ttft=5parsecs").ok());
  EXPECT_FALSE(parse_slo("latency=5ms").ok());
  EXPECT_FALSE(parse_slo("ttft").ok());
  EXPECT_FALSE(parse_slo("").ok());
  EXPECT_FALSE(parse_slo("ttft=0ms").ok());
}

TEST(Goodput, CountsRequestsMeetingEverySlo) {
  std::vector<RequestRecord> rs;
  // Request a: ttft 0.2, tpot 0.1 (the trace). b: ttft 0.5. c: failed. d: tpot 0.3.
  RequestRecord a = trace();
  RequestRecord b = trace();
  b.start_s = 0.7;  // ttft 0.5, e2e 0.9, tpot 0.1
  RequestRecord c = trace();
  c.ok = false;
  c.status_code = "RESOURCE_EXHAUSTED";
  RequestRecord d = trace();
  d.end_s = 2.4;  // tpot (1.4 - 0.2) / 4 = 0.3
  rs = {a, b, c, d};
  Slo slo;
  slo.ttft = 0.3;
  slo.tpot = 0.2;
  EXPECT_TRUE(meets_slo(a, slo));
  EXPECT_FALSE(meets_slo(b, slo));
  EXPECT_FALSE(meets_slo(c, slo));
  EXPECT_FALSE(meets_slo(d, slo));
  RunStats s = compute_stats(rs, slo);
  EXPECT_EQ(s.completed, 3u);
  EXPECT_EQ(s.failed, 1u);
  EXPECT_EQ(s.errors_by_code.at("RESOURCE_EXHAUSTED"), 1u);
  EXPECT_EQ(s.good_requests, 1u);
  // Duration: first start 0.7 .. last end 2.4.
  EXPECT_NEAR(s.duration_s, 1.7, 1e-12);
  EXPECT_NEAR(s.goodput, 1 / 1.7, 1e-12);
  EXPECT_NEAR(s.request_throughput, 3 / 1.7, 1e-12);
  EXPECT_EQ(s.total_output_tokens, 15);
  EXPECT_NEAR(s.cached_token_share, 12.0 / 30.0, 1e-12);
  // Without SLOs every success is good.
  EXPECT_EQ(compute_stats(rs, Slo{}).good_requests, 3u);
}

TEST(Goodput, ClientCancelledRequestsAreLeftOut) {
  RequestRecord a = trace();
  RequestRecord b = trace();
  b.ok = false;
  b.cancelled_by_client = true;
  b.end_s = 100;
  RunStats s = compute_stats({a, b}, Slo{});
  EXPECT_EQ(s.cancelled, 1u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_NEAR(s.duration_s, 0.6, 1e-12);
}

RunStats stats_with(size_t good, size_t completed, double ttft_p99) {
  RunStats s;
  s.completed = completed;
  s.good_requests = good;
  s.ttft.count = completed;
  s.ttft.p99 = ttft_p99;
  return s;
}

TEST(Sweep, JudgeStep) {
  Slo slo;
  slo.ttft = 0.5;
  EXPECT_TRUE(judge_step(stats_with(90, 100, 0.4), 100, slo).sustainable);
  StepVerdict low = judge_step(stats_with(89, 100, 0.4), 100, slo);
  EXPECT_FALSE(low.sustainable);
  EXPECT_NE(low.reason.find("goodput"), std::string::npos);
  StepVerdict slow = judge_step(stats_with(100, 100, 0.6), 100, slo);
  EXPECT_FALSE(slow.sustainable);
  EXPECT_NE(slow.reason.find("p99 ttft"), std::string::npos);
  EXPECT_FALSE(judge_step(stats_with(0, 0, 0), 10, slo).sustainable);
}

TEST(Sweep, StopsAtFirstBrokenStepAndReportsTheOneBefore) {
  const std::vector<double> rates = {1, 2, 4, 8};
  std::vector<StepVerdict> v = {{true, ""}, {true, ""}};
  SweepDecision d = sweep_decision({1, 2}, v, 8);
  EXPECT_FALSE(d.stop);
  EXPECT_EQ(d.capacity, 2);
  v.push_back({false, "p99 ttft"});
  d = sweep_decision({1, 2, 4}, v, 8);
  EXPECT_TRUE(d.stop);
  EXPECT_EQ(d.capacity, 2);
  EXPECT_NE(d.reason.find("p99 ttft"), std::string::npos);
  // The first step broke: no capacity.
  d = sweep_decision({1}, {{false, "x"}}, 8);
  EXPECT_TRUE(d.stop);
  EXPECT_FALSE(d.capacity.has_value());
  // Max steps without a break: stop, capacity the last rate (a lower bound).
  d = sweep_decision({1, 2}, {{true, ""}, {true, ""}}, 2);
  EXPECT_TRUE(d.stop);
  EXPECT_EQ(d.capacity, 2);
  EXPECT_NE(d.reason.find("lower bound"), std::string::npos);
}

}  // namespace
}  // namespace pagoda::bench
