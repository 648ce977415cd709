// The CPU sample op against the straightforward reading of SampleArgs' rule (full sorts, double
// sums, exp in double): greedy rows give exactly the reference's argmax after penalties; sampled
// rows give a survivor of top-k / top-p / min-p whose mass interval holds u * total (up to
// float-vs-double rounding). Plus bad arguments, and that the logits are left alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/sample_math.h"
#include "tests/kernels/sample_rows.h"

namespace pagoda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// The rule, read plainly. Returns the greedy id (greedy rows) or the survivors' mass intervals.
struct Reference {
  bool greedy = false;
  int greedy_id = 0;
  std::map<int, std::pair<double, double>> interval;
  double total = 0.0;
};

Reference reference(const float* logits, int64_t vocab, const SampleRowParams& p,
                    const int32_t* ids, const int32_t* counts, int n_pen) {
  std::vector<float> l(logits, logits + vocab);
  for (float& x : l) x = std::isnan(x) ? -kInf : x;
  const bool rep_on = p.repetition_penalty > 0 && std::isfinite(p.repetition_penalty) &&
                      p.repetition_penalty != 1.0f;
  const float pres = std::isfinite(p.presence_penalty) ? p.presence_penalty : 0.0f;
  const float freq = std::isfinite(p.frequency_penalty) ? p.frequency_penalty : 0.0f;
  for (int i = 0; i < n_pen; ++i) {
    float& x = l[ids[i]];
    if (rep_on) x = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    if (counts[i] > 0 && (pres != 0.0f || freq != 0.0f))
      x -= std::fma(freq, static_cast<float>(counts[i]), pres);
  }
  std::vector<int> order(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
  Reference ref;
  const float max = l[order[0]];
  ref.greedy_id = std::isinf(max) && max < 0 ? 0 : order[0];
  if (!(p.temperature > 0) || p.top_k == 1 || !std::isfinite(max)) {
    ref.greedy = true;
    return ref;
  }
  if (p.top_k > 0 && p.top_k < vocab) order.resize(p.top_k);
  std::vector<double> prob(static_cast<size_t>(vocab), 0.0);
  double total = 0.0;
  for (int id : order)
    total += prob[id] = std::exp((static_cast<double>(l[id]) - max) / p.temperature);
  // From here on the order is by probability, ties by id: equal logits have equal
  // probabilities, and so may logits the temperature cannot tell apart.
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    size_t kept = 0;
    while (kept < order.size()) {
      mass += prob[order[kept++]];
      if (mass >= p.top_p * total) break;
    }
    order.resize(kept);
  }
  if (p.min_p > 0) std::erase_if(order, [&](int id) { return prob[id] < std::min(p.min_p, 1.0f); });
  for (int id : order) {
    if (prob[id] == 0.0) continue;
    ref.interval[id] = {ref.total, ref.total + prob[id]};
    ref.total += prob[id];
  }
  return ref;
}

struct HostArgs {
  std::vector<int32_t> out;
  SampleArgs args;
};

HostArgs host_args(testing_sample::Batch& b) {
  HostArgs h;
  h.out.assign(static_cast<size_t>(b.rows), -1);
  const auto P = static_cast<int64_t>(b.penalty_ids.size());
  h.args.logits = TensorView(b.logits.data(), DType::kF32, {b.rows, b.vocab});
  h.args.params = TensorView(b.params.data(), DType::kI32, {b.rows, kSampleRowWords});
  h.args.penalty_start = TensorView(b.penalty_start.data(), DType::kI32, {b.rows + 1});
  h.args.penalty_ids = TensorView(b.penalty_ids.data(), DType::kI32, {P});
  h.args.penalty_counts = TensorView(b.penalty_counts.data(), DType::kI32, {P});
  h.args.out = TensorView(h.out.data(), DType::kI32, {b.rows});
  return h;
}

TEST(CpuSample, FollowsTheRule) {
  auto cpu = make_cpu_backend(2);
  for (int64_t vocab : {1, 2, 7, 100, 1000, 32000}) {
    testing_sample::Batch b = testing_sample::make_batch(3 * testing_sample::kKinds, vocab,
                                                         static_cast<uint32_t>(vocab) + 5);
    const std::vector<float> before = b.logits;
    HostArgs h = host_args(b);
    ASSERT_TRUE(cpu->sample(h.args).ok());
    EXPECT_EQ(std::memcmp(b.logits.data(), before.data(), before.size() * sizeof(float)), 0)
        << "the CPU op leaves the logits alone";
    int sampled_rows = 0;
    for (int64_t r = 0; r < b.rows; ++r) {
      SCOPED_TRACE(testing::Message()
                   << "vocab " << vocab << " row " << r << " (" << b.kinds[r] << ")");
      const int32_t s0 = b.penalty_start[r], s1 = b.penalty_start[r + 1];
      const Reference ref =
          reference(b.logits.data() + r * vocab, vocab, b.params[r], b.penalty_ids.data() + s0,
                    b.penalty_counts.data() + s0, s1 - s0);
      const int got = h.out[r];
      if (ref.greedy) {
        EXPECT_EQ(got, ref.greedy_id);
        continue;
      }
      ++sampled_rows;
      const auto it = ref.interval.find(got);
      ASSERT_NE(it, ref.interval.end()) << "token " << got << " is not a survivor";
      const SampleRowParams& p = b.params[r];
      const double u = sample_math::counter_uniform(
          (uint64_t{p.seed_hi} << 32) | p.seed_lo, (uint64_t{p.position_hi} << 32) | p.position_lo);
      const double target = u * ref.total, slack = 1e-5 * ref.total;
      EXPECT_LE(it->second.first, target + slack) << "token " << got;
      EXPECT_GE(it->second.second, target - slack) << "token " << got;
    }
    if (vocab >= 100) {
      EXPECT_GE(sampled_rows, b.rows / 2);
    }
  }
}

// Row r of b as a batch of its own.
testing_sample::Batch single_row(const testing_sample::Batch& b, int64_t r) {
  testing_sample::Batch one;
  one.rows = 1;
  one.vocab = b.vocab;
  one.logits.assign(b.logits.begin() + r * b.vocab, b.logits.begin() + (r + 1) * b.vocab);
  one.params = {b.params[r]};
  one.penalty_ids.assign(b.penalty_ids.begin() + b.penalty_start[r],
                         b.penalty_ids.begin() + b.penalty_start[r + 1]);
  one.penalty_counts.assign(b.penalty_counts.begin() + b.penalty_start[r],
                            b.penalty_counts.begin() + b.penalty_start[r + 1]);
  one.penalty_start = {0, static_cast<int32_t>(one.penalty_ids.size())};
  one.kinds = {b.kinds[r]};
  return one;
}

TEST(CpuSample, ARowDependsOnItsOwnSeedAndPositionOnly) {
  auto cpu = make_cpu_backend(2);
  testing_sample::Batch b = testing_sample::make_batch(2 * testing_sample::kKinds, 500, 9);
  HostArgs all = host_args(b);
  ASSERT_TRUE(cpu->sample(all.args).ok());
  for (int64_t r = 0; r < b.rows; ++r) {  // alone == in the batch
    testing_sample::Batch one = single_row(b, r);
    HostArgs h = host_args(one);
    ASSERT_TRUE(cpu->sample(h.args).ok());
    EXPECT_EQ(h.out[0], all.out[r]) << "row " << r << " (" << b.kinds[r] << ")";
  }
  // Row 1 (temperature 1) at positions 0..63: the same position gives the same token, and the
  // positions spread over many tokens.
  testing_sample::Batch one = single_row(b, 1);
  std::set<int> seen;
  for (uint32_t pos = 0; pos < 64; ++pos) {
    one.params[0].position_lo = pos;
    one.params[0].position_hi = 0;
    HostArgs h1 = host_args(one), h2 = host_args(one);
    ASSERT_TRUE(cpu->sample(h1.args).ok());
    ASSERT_TRUE(cpu->sample(h2.args).ok());
    EXPECT_EQ(h1.out[0], h2.out[0]);
    seen.insert(h1.out[0]);
  }
  EXPECT_GT(seen.size(), 10u);
}

TEST(CpuSample, RejectsBadArguments) {
  auto cpu = make_cpu_backend(1);
  auto expect_invalid = [&](testing_sample::Batch b, const std::string& needle) {
    HostArgs h = host_args(b);
    const Status s = cpu->sample(h.args);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_EQ(s.message().rfind("sample: ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  testing_sample::Batch good = testing_sample::make_batch(8, 50, 1);  // rows 1 and 6 have tables
  ASSERT_GE(good.penalty_ids.size(), 2u);
  {
    HostArgs h = host_args(good);
    ASSERT_TRUE(cpu->sample(h.args).ok());
  }
  testing_sample::Batch b = good;
  b.penalty_ids[0] = 50;
  expect_invalid(b, "outside [0, 50)");
  b = good;
  b.penalty_ids[1] = b.penalty_ids[0];
  expect_invalid(b, "repeat");
  b = good;
  b.penalty_counts[0] = -1;
  expect_invalid(b, "negative");
  b = good;
  b.penalty_start.back() -= 1;
  expect_invalid(b, "penalty_start");
  b = good;
  std::swap(b.penalty_start[1], b.penalty_start[2]);  // row 1 has a table: a decrease
  expect_invalid(b, "penalty_start");

  HostArgs h = host_args(good);
  SampleArgs a = h.args;
  a.params.shape[1] = kSampleRowWords - 1;
  EXPECT_EQ(cpu->sample(a).code(), StatusCode::kInvalidArgument);
  a = h.args;
  a.out = TensorView(good.logits.data(), DType::kI32, {good.rows});
  const Status overlap = cpu->sample(a);
  EXPECT_NE(overlap.message().find("overlap"), std::string::npos) << overlap.to_string();
  a = h.args;
  a.penalty_counts.shape[0] -= 1;
  EXPECT_EQ(cpu->sample(a).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pagoda
