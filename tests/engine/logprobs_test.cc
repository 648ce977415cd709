// Sampler::logprobs against a double log-softmax on random logits (small and large magnitudes,
// large offsets, many ties), the order and length of the top list, num_top == 0, degenerate
// rows (NaN, -inf, +inf), that it leaves sampling alone, and SamplingParams::logprobs
// validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/sampling_params.h"

namespace pagoda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// log_softmax in double, straightforwardly; NaN counts as -inf.
std::vector<double> reference_log_softmax(const std::vector<float>& logits) {
  std::vector<double> x(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    x[i] = std::isnan(logits[i]) ? -std::numeric_limits<double>::infinity() : logits[i];
  }
  const double max = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (double v : x) sum += std::exp(v - max);
  const double lse = max + std::log(sum);
  for (double& v : x) v -= lse;
  return x;
}

// The first n ids by descending logit, ties by ascending id (full sort).
std::vector<int> reference_top(const std::vector<double>& lp, int n) {
  std::vector<int> ids(lp.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int>(i);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return lp[a] > lp[b]; });
  ids.resize(std::min<size_t>(ids.size(), n));
  return ids;
}

// float rounding of the result plus a few ulp of log(sum) and the exponentials.
double tolerance(double ref) {
  return 1e-5 + 1e-6 * std::abs(ref);
}

void expect_matches_reference(Sampler& sampler, const std::vector<float>& logits, int token,
                              int num_top) {
  const std::vector<double> ref = reference_log_softmax(logits);
  const TokenLogprobs got = sampler.logprobs(logits, token, num_top);
  EXPECT_EQ(got.token_id, token);
  EXPECT_NEAR(got.logprob, ref[token], tolerance(ref[token]));
  EXPECT_LE(got.logprob, 0.0f);
  const std::vector<int> want = reference_top(ref, num_top);
  ASSERT_EQ(got.top.size(), want.size());
  double mass = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const auto [id, lp] = got.top[i];
    // Exactly the same ids: the reference breaks ties by ascending id as well.
    EXPECT_EQ(id, want[i]) << "rank " << i;
    EXPECT_NEAR(lp, ref[id], tolerance(ref[id])) << "rank " << i;
    EXPECT_LE(lp, 0.0f);
    if (i > 0) {
      const auto [prev_id, prev_lp] = got.top[i - 1];
      EXPECT_TRUE(prev_lp > lp || (prev_lp == lp && prev_id < id)) << "rank " << i;
    }
    if (id == token) {
      EXPECT_EQ(lp, got.logprob);  // one formula for both
    }
    mass += std::exp(static_cast<double>(lp));
  }
  EXPECT_LE(mass, 1.0 + 1e-5);
}

TEST(Logprobs, MatchesDoubleReferenceOnRandomLogits) {
  std::mt19937 rng(5);
  Sampler sampler;
  for (int vocab : {1, 2, 7, 64, 100, 513, 4096, 32000}) {
    for (double scale : {0.1, 1.0, 10.0, 1000.0, 1e5}) {
      for (double offset : {0.0, -50.0, 3e4, -1e6}) {
        std::normal_distribution<double> normal(offset, scale);
        std::vector<float> logits(vocab);
        for (float& l : logits) l = static_cast<float>(normal(rng));
        const int token = static_cast<int>(rng() % vocab);
        for (int num_top : {0, 1, 5, 20}) {
          SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " scale " << scale << " offset "
                                            << offset << " top " << num_top);
          expect_matches_reference(sampler, logits, token, num_top);
        }
      }
    }
  }
}

TEST(Logprobs, TiesAreOrderedByAscendingId) {
  std::mt19937 rng(9);
  Sampler sampler;
  for (int vocab : {10, 300, 5000}) {
    // Few distinct values: long runs of equal logits across the top-n boundary.
    std::vector<float> logits(vocab);
    for (float& l : logits) l = static_cast<float>(static_cast<int>(rng() % 4)) * 0.5f;
    for (int num_top : {1, 3, 20}) {
      SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " top " << num_top);
      expect_matches_reference(sampler, logits, static_cast<int>(rng() % vocab), num_top);
    }
  }
  // All equal: uniform, the first ids.
  const std::vector<float> flat(50, 3.25f);
  const TokenLogprobs lp = sampler.logprobs(flat, 7, 4);
  ASSERT_EQ(lp.top.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(lp.top[i].first, i);
    EXPECT_NEAR(lp.top[i].second, -std::log(50.0), 1e-6);
  }
  EXPECT_NEAR(lp.logprob, -std::log(50.0), 1e-6);
}

TEST(Logprobs, HandMadeValues) {
  Sampler sampler;
  // log_softmax({0, ln 3}) = {log 1/4, log 3/4}.
  const std::vector<float> two = {0.0f, static_cast<float>(std::log(3.0))};
  const TokenLogprobs lp = sampler.logprobs(two, 0, 2);
  EXPECT_NEAR(lp.logprob, std::log(0.25), 1e-6);
  ASSERT_EQ(lp.top.size(), 2u);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_NEAR(lp.top[0].second, std::log(0.75), 1e-6);
  EXPECT_EQ(lp.top[1].first, 0);
  EXPECT_EQ(lp.top[1].second, lp.logprob);
  // Shifting every logit changes nothing, even far out where exp would overflow.
  for (float shift : {1e4f, -1e4f, 3e37f}) {
    const std::vector<float> shifted = {shift, shift + 1.0f};
    const double gap = static_cast<double>(shifted[1]) - shifted[0];  // 1, or 0 at 3e37
    const TokenLogprobs s = sampler.logprobs(shifted, 1, 0);
    EXPECT_NEAR(s.logprob, -std::log1p(std::exp(-gap)), 1e-6) << shift;
  }
}

TEST(Logprobs, NumTopZeroGivesOnlyTheToken) {
  Sampler sampler;
  const std::vector<float> logits = {1.0f, 2.0f, 3.0f};
  const TokenLogprobs lp = sampler.logprobs(logits, 1, 0);
  EXPECT_EQ(lp.token_id, 1);
  EXPECT_TRUE(lp.top.empty());
  EXPECT_NEAR(lp.logprob, reference_log_softmax(logits)[1], 1e-6);
}

TEST(Logprobs, NumTopBeyondVocabGivesTheWholeVocabulary) {
  Sampler sampler;
  const std::vector<float> logits = {0.5f, -1.0f, 2.0f};
  const TokenLogprobs lp = sampler.logprobs(logits, 0, 20);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 2);
  EXPECT_EQ(lp.top[1].first, 0);
  EXPECT_EQ(lp.top[2].first, 1);
  double mass = 0.0;
  for (const auto& [id, l] : lp.top) mass += std::exp(static_cast<double>(l));
  EXPECT_NEAR(mass, 1.0, 1e-6);
}

TEST(Logprobs, NanAndInfinities) {
  Sampler sampler;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // NaN and -inf: -inf logprob, never ahead of a finite one.
  const std::vector<float> holes = {nan, 1.0f, -kInf, 1.0f};
  TokenLogprobs lp = sampler.logprobs(holes, 0, 4);
  EXPECT_EQ(lp.logprob, -kInf);
  ASSERT_EQ(lp.top.size(), 4u);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_NEAR(lp.top[0].second, -std::log(2.0), 1e-6);
  EXPECT_EQ(lp.top[1].first, 3);
  EXPECT_EQ(lp.top[2].first, 0);  // both -inf: ascending id
  EXPECT_EQ(lp.top[2].second, -kInf);
  EXPECT_EQ(lp.top[3].first, 2);
  // +inf takes all the mass, shared equally.
  const std::vector<float> inf = {kInf, 5.0f, kInf, nan};
  lp = sampler.logprobs(inf, 2, 2);
  EXPECT_NEAR(lp.logprob, -std::log(2.0), 1e-6);
  EXPECT_EQ(lp.top[0].first, 0);
  EXPECT_EQ(lp.top[1].first, 2);
  EXPECT_EQ(sampler.logprobs(inf, 1, 0).logprob, -kInf);
  // Every logit -inf (or NaN): the uniform limit, not NaN.
  const std::vector<float> none = {-kInf, nan, -kInf};
  lp = sampler.logprobs(none, 0, 1);
  EXPECT_NEAR(lp.logprob, -std::log(3.0), 1e-6);
  ASSERT_EQ(lp.top.size(), 1u);
  EXPECT_EQ(lp.top[0].first, 0);
}

TEST(Logprobs, UseTheRawLogitsAndLeaveSamplingAlone) {
  std::mt19937 rng(3);
  std::vector<float> logits(1000);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float& l : logits) l = normal(rng);
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 50;
  p.repetition_penalty = 1.3f;
  p.frequency_penalty = 0.5f;
  const std::vector<int> prompt = {1, 2, 3};
  const std::vector<int> output = {4, 5, 5};
  Sampler plain, with_logprobs;
  const std::vector<double> ref = reference_log_softmax(logits);
  for (int64_t pos = 0; pos < 200; ++pos) {
    const int a = plain.sample(logits, p, prompt, output, 42, pos);
    const int b = with_logprobs.sample(logits, p, prompt, output, 42, pos);
    ASSERT_EQ(a, b) << pos;
    // Penalties and temperature do not enter the logprobs.
    const TokenLogprobs lp = with_logprobs.logprobs(logits, b, 5);
    EXPECT_NEAR(lp.logprob, ref[b], tolerance(ref[b]));
  }
}

TEST(Logprobs, ValidationNamesTheField) {
  SamplingParams p;
  EXPECT_EQ(p.logprobs, 0);
  for (int ok : {0, 1, 20}) {
    p.logprobs = ok;
    EXPECT_TRUE(p.validate().ok()) << ok;
  }
  for (int bad : {-1, 21, 1000}) {
    p.logprobs = bad;
    const Status s = p.validate();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("logprobs"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(std::to_string(bad)), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace pagoda
