#include "bench/serve/workload.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "bench/serve/arrivals.h"

namespace pagoda::bench {
namespace {

TEST(Workload, FixedLengthsAndTokenRange) {
  WorkloadConfig c;
  c.input_len = 20;
  c.output_len = 7;
  c.vocab_size = 512;
  for (uint64_t i = 0; i < 50; ++i) {
    RequestSpec r = make_request(c, i);
    ASSERT_EQ(r.prompt.size(), 20u);
    EXPECT_EQ(r.output_len, 7);
    for (int t : r.prompt) {
      EXPECT_GE(t, kFirstTokenId);
      EXPECT_LT(t, 512);
    }
  }
}

TEST(Workload, SeededReproducibleAndSeedMatters) {
  WorkloadConfig c;
  c.mode = LengthMode::kRandom;
  c.seed = 42;
  WorkloadConfig d = c;
  d.seed = 43;
  bool any_diff = false;
  for (uint64_t i = 0; i < 20; ++i) {
    RequestSpec a = make_request(c, i), b = make_request(c, i);
    EXPECT_EQ(a.prompt, b.prompt);
    EXPECT_EQ(a.output_len, b.output_len);
    if (make_request(d, i).prompt != a.prompt) any_diff = true;
    EXPECT_GE(a.prompt.size(), 16u);
    EXPECT_LE(a.prompt.size(), 64u);
    EXPECT_GE(a.output_len, 16);
    EXPECT_LE(a.output_len, 64);
  }
  EXPECT_TRUE(any_diff);
}

TEST(Workload, LongTailHasMedianNearParameterAndFitsContext) {
  WorkloadConfig c;
  c.mode = LengthMode::kLongTail;
  c.context_length = 0;
  c.seed = 7;
  std::vector<double> in;
  int above_4x = 0;
  for (uint64_t i = 0; i < 4000; ++i) {
    int n = static_cast<int>(make_request(c, i).prompt.size());
    in.push_back(n);
    if (n > 4 * 128) ++above_4x;
  }
  std::sort(in.begin(), in.end());
  EXPECT_NEAR(in[in.size() / 2], 128, 12);  // median exp(mu)
  EXPECT_GT(above_4x, 0);                   // a long tail
  c.context_length = 512;
  for (uint64_t i = 0; i < 500; ++i) {
    RequestSpec r = make_request(c, i);
    EXPECT_LE(static_cast<int>(r.prompt.size()) + r.output_len, 512);
    EXPECT_GE(r.output_len, 1);
  }
}

TEST(Workload, SharedPrefix) {
  WorkloadConfig c;
  c.shared_prefix = 30;
  c.num_prefixes = 3;
  c.input_len = 5;
  std::set<std::vector<int>> prefixes, suffixes;
  for (uint64_t i = 0; i < 12; ++i) {
    RequestSpec r = make_request(c, i);
    ASSERT_EQ(r.prompt.size(), 35u);
    EXPECT_EQ(r.prefix_id, static_cast<int>(i % 3));
    std::vector<int> p(r.prompt.begin(), r.prompt.begin() + 30);
    EXPECT_EQ(p, make_prefix(c, r.prefix_id));
    prefixes.insert(p);
    suffixes.insert(std::vector<int>(r.prompt.begin() + 30, r.prompt.end()));
  }
  EXPECT_EQ(prefixes.size(), 3u);
  EXPECT_EQ(suffixes.size(), 12u);
}

TEST(Workload, Validation) {
  WorkloadConfig c;
  c.context_length = 64;
  c.input_len = 40;
  c.output_len = 40;
  EXPECT_FALSE(validate_workload(c).ok());
  c.output_len = 20;
  EXPECT_TRUE(validate_workload(c).ok());
  c.mode = LengthMode::kRandom;
  c.input_min = 10;
  c.input_max = 5;
  EXPECT_FALSE(validate_workload(c).ok());
}

double mean_gap(const ArrivalConfig& c, int n, std::vector<double>* gaps) {
  ArrivalProcess p(c);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    double g = p.next_gap();
    EXPECT_GE(g, 0);
    gaps->push_back(g);
    sum += g;
  }
  return sum / n;
}

TEST(Arrivals, PoissonMeanAndReproducible) {
  ArrivalConfig c;
  c.rate = 4;
  c.seed = 1;
  std::vector<double> g1, g2;
  const double m = mean_gap(c, 20000, &g1);
  mean_gap(c, 20000, &g2);
  EXPECT_EQ(g1, g2);
  EXPECT_NEAR(m, 0.25, 0.25 * 0.03);  // standard error 0.7%: 3% is > 4 sigma
  // Exponential: coefficient of variation 1.
  double var = 0;
  for (double g : g1) var += (g - m) * (g - m);
  EXPECT_NEAR(std::sqrt(var / g1.size()) / m, 1.0, 0.05);
}

TEST(Arrivals, GammaBurstinessKeepsMeanChangesSpread) {
  for (double b : {0.25, 4.0}) {
    ArrivalConfig c;
    c.rate = 10;
    c.burstiness = b;
    c.seed = 9;
    std::vector<double> g;
    const double m = mean_gap(c, 40000, &g);
    EXPECT_NEAR(m, 0.1, 0.1 * 0.05) << "burstiness " << b;
    double var = 0;
    for (double x : g) var += (x - m) * (x - m);
    // Gamma(shape k): CV = 1 / sqrt(k).
    EXPECT_NEAR(std::sqrt(var / g.size()) / m, 1 / std::sqrt(b), 0.1 / std::sqrt(b))
        << "burstiness " << b;
  }
}

TEST(Arrivals, Validation) {
  ArrivalConfig c;
  c.rate = 0;
  EXPECT_FALSE(validate_arrivals(c).ok());
  c.rate = -1;
  EXPECT_FALSE(validate_arrivals(c).ok());
  c.rate = 1;
  EXPECT_TRUE(validate_arrivals(c).ok());
  c.burstiness = 0;
  EXPECT_FALSE(validate_arrivals(c).ok());
  ArrivalConfig closed;
  closed.concurrency = 4;
  EXPECT_TRUE(validate_arrivals(closed).ok());
}

}  // namespace
}  // namespace pagoda::bench
