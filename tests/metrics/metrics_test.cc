#include "server/metrics/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

namespace pagoda::metrics {
namespace {

TEST(MetricsFormat, ExactExpositionForCounterGaugeHistogram) {
  Registry r;
  auto c =
      r.add_counter("test_requests_total", "Requests \\ done.\nSecond line", {"tenant", "code"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  (*c)->with({"back\\slash\nnl", "500"})->inc();
  (*c)->with({"a\"b", "200"})->inc(3);
  auto g = r.add_gauge("test_temperature", "A gauge.");
  ASSERT_TRUE(g.ok());
  (*g)->with({})->set(-2.5);
  auto h = r.add_histogram("test_latency_seconds", "Latency.", {0.25, 0.5, 1}, {"route"});
  ASSERT_TRUE(h.ok());
  Histogram* hh = (*h)->with({"/x"});
  for (double v : {0.125, 0.25, 0.375, 2.0}) hh->observe(v);  // 0.25 lands in le="0.25"
  auto empty = r.add_histogram("test_empty_seconds", "Never observed.", {1});
  ASSERT_TRUE(empty.ok());

  const std::string expected =
      "# HELP test_requests_total Requests \\\\ done.\\nSecond line\n"
      "# TYPE test_requests_total counter\n"
      "test_requests_total{tenant=\"a\\\"b\",code=\"200\"} 3\n"
      "test_requests_total{tenant=\"back\\\\slash\\nnl\",code=\"500\"} 1\n"
      "# HELP test_temperature A gauge.\n"
      "# TYPE test_temperature gauge\n"
      "test_temperature -2.5\n"
      "# HELP test_latency_seconds Latency.\n"
      "# TYPE test_latency_seconds histogram\n"
      "test_latency_seconds_bucket{route=\"/x\",le=\"0.25\"} 2\n"
      "test_latency_seconds_bucket{route=\"/x\",le=\"0.5\"} 3\n"
      "test_latency_seconds_bucket{route=\"/x\",le=\"1\"} 3\n"
      "test_latency_seconds_bucket{route=\"/x\",le=\"+Inf\"} 4\n"
      "test_latency_seconds_sum{route=\"/x\"} 2.75\n"
      "test_latency_seconds_count{route=\"/x\"} 4\n"
      "# HELP test_empty_seconds Never observed.\n"
      "# TYPE test_empty_seconds histogram\n"
      "test_empty_seconds_bucket{le=\"1\"} 0\n"
      "test_empty_seconds_bucket{le=\"+Inf\"} 0\n"
      "test_empty_seconds_sum 0\n"
      "test_empty_seconds_count 0\n";
  EXPECT_EQ(r.render(), expected);
}

TEST(MetricsFormat, LabeledFamilyWithoutSeriesRendersOnlyHeader) {
  Registry r;
  ASSERT_TRUE(r.add_counter("x_total", "X.", {"k"}).ok());
  ASSERT_TRUE(r.add_counter("y_total", "Y.").ok());
  EXPECT_EQ(r.render(),
            "# HELP x_total X.\n# TYPE x_total counter\n"
            "# HELP y_total Y.\n# TYPE y_total counter\ny_total 0\n");
}

TEST(MetricsFormat, Values) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(-3), "-3");
  EXPECT_EQ(format_value(123456789012), "123456789012");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(0.0025), "0.0025");
  EXPECT_EQ(format_value(1e20), "1e+20");
  EXPECT_EQ(format_value(1.5e-7), "1.5e-07");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  EXPECT_EQ(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(escape_help("a\\b\"c\nd"), "a\\\\b\"c\\nd");
}

TEST(MetricsRegistry, RejectsBadDefinitions) {
  Registry r;
  EXPECT_FALSE(r.add_gauge("1abc", "").ok());
  EXPECT_FALSE(r.add_gauge("a-b", "").ok());
  EXPECT_FALSE(r.add_gauge("", "").ok());
  EXPECT_FALSE(r.add_gauge("ok_name", "", {"__reserved"}).ok());
  EXPECT_FALSE(r.add_gauge("ok_name", "", {"a:b"}).ok());
  EXPECT_FALSE(r.add_gauge("ok_name", "", {"a", "a"}).ok());
  EXPECT_FALSE(r.add_counter("no_suffix", "").ok());
  EXPECT_FALSE(r.add_histogram("h", "", {1, 2}, {"le"}).ok());
  EXPECT_FALSE(r.add_histogram("h", "", {}).ok());
  EXPECT_FALSE(r.add_histogram("h", "", {1, 1}).ok());
  EXPECT_FALSE(r.add_histogram("h", "", {2, 1}).ok());
  EXPECT_FALSE(r.add_histogram("h", "", {1, std::numeric_limits<double>::infinity()}).ok());
  EXPECT_FALSE(r.add_histogram("h", "", {std::nan("")}).ok());
  ASSERT_TRUE(r.add_gauge("ok_name:sub", "", {"a", "b_2"}).ok());
  auto dup = r.add_counter("ok_name:sub", "");
  EXPECT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.render(), "# HELP ok_name:sub \n# TYPE ok_name:sub gauge\n");
}

TEST(MetricsSeries, CounterIgnoresNegativeAndNaN_HistogramDropsNaN) {
  Registry r;
  Counter* c = (*r.add_counter("c_total", ""))->with({});
  c->inc(2);
  c->inc(-5);
  c->inc(std::nan(""));
  EXPECT_EQ(c->value(), 2);
  Histogram* h = (*r.add_histogram("h", "", {1}))->with({});
  h->observe(std::nan(""));
  h->observe(-1);  // below every bound: first bucket
  h->observe(std::numeric_limits<double>::infinity());
  Histogram::Snapshot s = h->snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{1, 2}));
  Gauge* g = (*r.add_gauge("g", ""))->with({});
  g->inc(3);
  g->dec(0.5);
  EXPECT_EQ(g->value(), 2.5);
}

TEST(MetricsSeries, LookupReturnsTheSameHandle) {
  Registry r;
  CounterFamily* f = *r.add_counter("c_total", "", {"tenant"});
  Counter* a = f->with({"acme"});
  EXPECT_EQ(f->with({"acme"}), a);
  EXPECT_NE(f->with({"other"}), a);
}

TEST(MetricsConcurrency, IncrementsFromThreadsSumExactly) {
  Registry r;
  CounterFamily* f = *r.add_counter("c_total", "", {"tenant"});
  HistogramFamily* hf = *r.add_histogram("h_seconds", "", {0.5, 1.5, 2.5});
  Gauge* g = (*r.add_gauge("g", ""))->with({});
  constexpr int kThreads = 8, kIters = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter* c = f->with({"shared"});  // looked up concurrently by every thread
      Counter* own = f->with({t % 2 == 0 ? "t0" : "t1"});
      Histogram* h = hf->with({});
      for (int i = 0; i < kIters; ++i) {
        c->inc();
        own->inc(2);
        h->observe(i % 3);  // 0, 1, 2: one per finite bucket
        g->inc();
        g->dec();
        if (i % 10000 == 0) (void)r.render();  // scrapes while updating
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(f->with({"shared"})->value(), kThreads * kIters);
  EXPECT_EQ(f->with({"t0"})->value(), 2.0 * kThreads / 2 * kIters);
  EXPECT_EQ(f->with({"t1"})->value(), 2.0 * kThreads / 2 * kIters);
  EXPECT_EQ(g->value(), 0);
  Histogram::Snapshot s = hf->with({})->snapshot();
  const uint64_t total = uint64_t{kThreads} * kIters;
  ASSERT_EQ(s.cumulative.size(), 4u);
  EXPECT_EQ(s.cumulative[3], total);
  uint64_t zeros = 0, ones = 0;
  for (int i = 0; i < kIters; ++i) {
    if (i % 3 == 0) ++zeros;
    if (i % 3 == 1) ++ones;
  }
  EXPECT_EQ(s.cumulative[0], zeros * kThreads);
  EXPECT_EQ(s.cumulative[1], (zeros + ones) * kThreads);
  EXPECT_EQ(s.cumulative[2], total);
  // Every observation is a small integer: the sum is exact.
  EXPECT_EQ(s.sum, static_cast<double>((ones + 2 * (kIters - zeros - ones)) * kThreads));
}

TEST(MetricsRegistry, CollectHookRunsBeforeRender) {
  Registry r;
  Gauge* g = (*r.add_gauge("sampled", "Sampled at scrape."))->with({});
  int calls = 0;
  r.add_collect_hook([&] { g->set(++calls * 10); });
  EXPECT_EQ(r.render(), "# HELP sampled Sampled at scrape.\n# TYPE sampled gauge\nsampled 10\n");
  EXPECT_EQ(r.render(), "# HELP sampled Sampled at scrape.\n# TYPE sampled gauge\nsampled 20\n");
}

}  // namespace
}  // namespace pagoda::metrics
