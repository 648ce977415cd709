// Sampler and SamplingParams: Philox against Random123's known answers, greedy, seeded
// reproducibility, the sampled distribution against softmax, top-k / top-p / min-p supports on
// hand-made distributions, and the penalty formulas. Everything is deterministic (counter-based
// random numbers), so the statistical bounds cannot flake.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "engine/sampling_params.h"
#include "kernels/cpu/cpu_backend.h"

namespace pagoda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Random123 tests/kat_vectors, the three philox4x32 10-round lines (counter, key, expected), as
// reproduced in D. E. Shaw Research's fs123 core123/ut/ut_philox.cpp.
TEST(Philox, MatchesRandom123KnownAnswers) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(
      philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
      (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(
      philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
      (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(CounterUniform, TakesTheTop24BitsOfTheFirstWord) {
  EXPECT_EQ(counter_uniform(0, 0), static_cast<float>(0x6627e8d5u >> 8) / 16777216.0f);
  // Seed = key {low, high}, counter = {low, high, 0, 0}.
  const uint64_t seed = 0x299f31d0a4093822ull;
  const uint64_t counter = 0x85a308d3243f6a88ull;
  const auto words = philox4x32_10({0x243f6a88, 0x85a308d3, 0, 0}, {0xa4093822, 0x299f31d0});
  EXPECT_EQ(counter_uniform(seed, counter), static_cast<float>(words[0] >> 8) / 16777216.0f);
}

TEST(CounterUniform, IsUniformInUnitInterval) {
  double sum = 0.0;
  std::vector<int> bins(10, 0);
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const float u = counter_uniform(7, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    ++bins[static_cast<int>(u * 10)];
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  for (int b : bins) EXPECT_NEAR(b, n / 10, 500);
  EXPECT_NE(counter_uniform(1, 5), counter_uniform(2, 5));
  EXPECT_NE(counter_uniform(1ull << 32, 5), counter_uniform(0, 5));  // the seed's high half
  EXPECT_NE(counter_uniform(1, 1ull << 32), counter_uniform(1, 0));  // the counter's high half
}

std::vector<float> random_logits(int vocab, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(vocab);
  for (float& l : logits) l = normal(rng);
  return logits;
}

SamplingParams params_with(float temperature) {
  SamplingParams p;
  p.temperature = temperature;
  return p;
}

int sample(Sampler& s, const std::vector<float>& logits, const SamplingParams& p, int64_t position,
           uint64_t seed = 1234, std::vector<int> prompt = {}, std::vector<int> output = {}) {
  return s.sample(logits, p, prompt, output, seed, position);
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s;
  const auto logits = random_logits(32000, 1);
  const int expected =
      static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  EXPECT_EQ(sample(s, logits, params_with(0.0f), 0), expected);
  const std::vector<float> tied = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  EXPECT_EQ(sample(s, tied, params_with(0.0f), 0), 1);
  // top_k == 1 is greedy at any temperature, for every position.
  SamplingParams top1 = params_with(1.5f);
  top1.top_k = 1;
  for (int pos = 0; pos < 50; ++pos) {
    EXPECT_EQ(sample(s, logits, top1, pos), expected);
    EXPECT_EQ(sample(s, tied, top1, pos), 1);
  }
}

TEST(Sampler, SeededDrawsAreReproducibleAndSpread) {
  const auto logits = random_logits(32000, 2, 1.0f);
  const SamplingParams p = params_with(1.0f);
  Sampler a;
  Sampler b;
  std::set<int> distinct;
  std::vector<int> first;
  for (int pos = 0; pos < 200; ++pos) first.push_back(sample(a, logits, p, pos, 99));
  for (int pos = 199; pos >= 0; --pos) {  // another sampler, another order
    EXPECT_EQ(sample(b, logits, p, pos, 99), first[pos]);
    distinct.insert(first[pos]);
  }
  EXPECT_GT(distinct.size(), 150u);  // a flat distribution over 32000 tokens
  int same = 0;
  for (int pos = 0; pos < 200; ++pos) same += sample(a, logits, p, pos, 100) == first[pos];
  EXPECT_LT(same, 10);  // another seed, other draws
}

// Empirical frequencies over many positions against the exact renormalized distribution.
void expect_distribution(const std::vector<float>& logits, const SamplingParams& p,
                         const std::vector<double>& expected, int draws = 40000) {
  Sampler s;
  std::vector<int> counts(logits.size(), 0);
  for (int pos = 0; pos < draws; ++pos) ++counts[sample(s, logits, p, pos, 2024)];
  double chi2 = 0.0;
  int dof = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the support";
      continue;
    }
    const double e = expected[i] * draws;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
    ++dof;
  }
  // The 99.99th percentile of chi-square is below 4 * dof + 16 for these few degrees of freedom.
  EXPECT_LT(chi2, 4.0 * std::max(dof, 1) + 16.0) << "degrees of freedom " << dof;
}

std::vector<double> softmax(const std::vector<float>& logits, float temperature) {
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - m) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

std::vector<double> restrict_to(std::vector<double> p, const std::set<int>& support) {
  double sum = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (!support.count(static_cast<int>(i))) p[i] = 0.0;
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  return p;
}

TEST(Sampler, FrequenciesFollowSoftmax) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f, 1.2f, 0.2f};
  for (float t : {1.0f, 0.7f, 2.0f}) {
    SCOPED_TRACE(t);
    expect_distribution(logits, params_with(t), softmax(logits, t));
  }
}

TEST(Sampler, TopKRestrictsSupport) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f, 1.2f, 0.2f};
  SamplingParams p = params_with(1.0f);
  p.top_k = 3;  // tokens 0, 6, 1
  expect_distribution(logits, p, restrict_to(softmax(logits, 1.0f), {0, 1, 6}));

  // At vocabulary scale: every draw among the 5 largest, each of them drawn.
  const auto big = random_logits(50000, 3, 0.5f);
  std::vector<int> ids(big.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int>(i);
  std::partial_sort(ids.begin(), ids.begin() + 5, ids.end(),
                    [&](int a, int b) { return big[a] > big[b]; });
  const std::set<int> top5(ids.begin(), ids.begin() + 5);
  p.top_k = 5;
  Sampler s;
  std::set<int> seen;
  for (int pos = 0; pos < 500; ++pos) {
    const int id = sample(s, big, p, pos);
    ASSERT_TRUE(top5.count(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen, top5);
}

// Probabilities 0.5, 0.2, 0.15, 0.1, 0.05 for tokens 3, 0, 4, 1, 2 (ids shuffled on purpose).
std::vector<float> hand_made_logits() {
  return {std::log(0.2f), std::log(0.1f), std::log(0.05f), std::log(0.5f), std::log(0.15f)};
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  const auto logits = hand_made_logits();
  const auto full = softmax(logits, 1.0f);
  SamplingParams p = params_with(1.0f);
  const std::vector<std::pair<float, std::set<int>>> cases = {
      {0.4f, {3}},          {0.65f, {3, 0}},          {0.75f, {3, 0, 4}},
      {0.9f, {3, 0, 4, 1}}, {0.97f, {3, 0, 4, 1, 2}}, {1.0f, {3, 0, 4, 1, 2}},
  };
  for (const auto& [top_p, support] : cases) {
    SCOPED_TRACE(top_p);
    p.top_p = top_p;
    expect_distribution(logits, p, restrict_to(full, support), 20000);
  }
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheTop) {
  const auto logits = hand_made_logits();
  const auto full = softmax(logits, 1.0f);
  SamplingParams p = params_with(1.0f);
  // Threshold min_p * 0.5.
  const std::vector<std::pair<float, std::set<int>>> cases = {
      {0.05f, {3, 0, 4, 1, 2}}, {0.15f, {3, 0, 4, 1}}, {0.25f, {3, 0, 4}},
      {0.35f, {3, 0}},          {0.5f, {3}},           {1.0f, {3}},
  };
  for (const auto& [min_p, support] : cases) {
    SCOPED_TRACE(min_p);
    p.min_p = min_p;
    expect_distribution(logits, p, restrict_to(full, support), 20000);
  }
  // Combined with top-p: the smaller of the two sets.
  p.min_p = 0.25f;
  p.top_p = 0.65f;
  expect_distribution(logits, p, restrict_to(full, {3, 0}), 20000);
}

TEST(Sampler, TemperatureAppliesBeforeMinP) {
  // At temperature 2 the probabilities flatten to sqrt of the above (renormalized): every
  // ratio to the top one is sqrt(p / 0.5), so min_p 0.5 keeps tokens with p >= 0.125.
  SamplingParams p = params_with(2.0f);
  p.min_p = 0.5f;
  const auto logits = hand_made_logits();
  expect_distribution(logits, p, restrict_to(softmax(logits, 2.0f), {3, 0, 4}), 20000);
}

// The greedy choice between token 0 (penalized) and token 1 (logit c) tells on which side of
// c the penalized logit of token 0 lies (a tie goes to token 0).
float greedy_bracket(const SamplingParams& base, float l0, const std::vector<int>& prompt,
                     const std::vector<int>& output, float expected) {
  Sampler s;
  SamplingParams p = base;
  p.temperature = 0.0f;
  const float eps = 1e-4f * std::max(1.0f, std::fabs(expected));
  EXPECT_EQ(sample(s, {l0, expected - eps}, p, 0, 1, prompt, output), 0) << expected;
  EXPECT_EQ(sample(s, {l0, expected + eps}, p, 0, 1, prompt, output), 1) << expected;
  return expected;
}

TEST(Sampler, RepetitionPenaltyFollowsTheHuggingFaceRule) {
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  greedy_bracket(p, 1.2f, {0}, {}, 1.2f / 1.5f);            // positive: divided
  greedy_bracket(p, -1.2f, {}, {0}, -1.2f * 1.5f);          // negative: multiplied
  greedy_bracket(p, 1.2f, {0, 0, 0}, {0, 0}, 1.2f / 1.5f);  // once per token, not per use
  greedy_bracket(p, 1.2f, {5, -1, 7}, {9}, 1.2f);           // unseen (and bad ids ignored)
  p.repetition_penalty = 0.5f;                              // < 1 favours repeats
  greedy_bracket(p, 1.2f, {0}, {}, 2.4f);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesFollowTheOpenAIRule) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.3f;
  greedy_bracket(p, 3.0f, {}, {0, 0}, 3.0f - 2 * 0.3f - 0.5f);
  greedy_bracket(p, 3.0f, {}, {0, 5, 0, 0}, 3.0f - 3 * 0.3f - 0.5f);  // 5: not in vocab
  greedy_bracket(p, 3.0f, {0, 0, 0}, {}, 3.0f);                       // the prompt does not count
  p.presence_penalty = -1.0f;                                         // negative values encourage
  p.frequency_penalty = 0.0f;
  greedy_bracket(p, 3.0f, {}, {0}, 4.0f);
  // Repetition first, then presence/frequency.
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  greedy_bracket(p, 3.0f, {}, {0, 0}, 3.0f / 2.0f - 0.5f - 0.5f);
}

TEST(Sampler, PenaltiesLeaveNoStateBehind) {
  const auto logits = random_logits(4000, 5, 1.0f);
  SamplingParams plain = params_with(0.8f);
  SamplingParams penalized = plain;
  penalized.repetition_penalty = 1.3f;
  penalized.presence_penalty = 0.4f;
  penalized.frequency_penalty = 0.2f;
  Sampler reused;
  for (int pos = 0; pos < 100; ++pos) {
    std::vector<int> output = {pos % 7, pos % 11, pos % 7, 3999};
    sample(reused, logits, penalized, pos, 1, {1, 2, 3}, output);
    Sampler fresh;
    EXPECT_EQ(sample(reused, logits, plain, pos), sample(fresh, logits, plain, pos));
  }
}

TEST(Sampler, PenaltyTableListsEachSeenTokenOnceWithItsOutputCount) {
  Sampler s;
  SamplingParams p;
  std::vector<int32_t> ids = {99}, counts = {42};  // appended to, not replaced
  s.penalty_table(p, {{3, 1, 3}}, {{1, 7, 1, 1, -2, 50}}, 10, &ids, &counts);
  EXPECT_TRUE(ids.size() == 1 && counts.size() == 1) << "no penalty on: no table";
  p.frequency_penalty = 0.1f;
  s.penalty_table(p, std::vector<int>{3, 1, 3}, std::vector<int>{1, 7, 1, 1, -2, 50}, 10, &ids,
                  &counts);
  EXPECT_EQ(ids, (std::vector<int32_t>{99, 3, 1, 7}));  // first appearance; bad ids dropped
  EXPECT_EQ(counts, (std::vector<int32_t>{42, 0, 3, 1}));
  // No state left behind: the same call again gives the same rows.
  ids.clear();
  counts.clear();
  s.penalty_table(p, std::vector<int>{3, 1, 3}, std::vector<int>{1, 7, 1, 1, -2, 50}, 10, &ids,
                  &counts);
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 1, 7}));
  EXPECT_EQ(counts, (std::vector<int32_t>{0, 3, 1}));
}

// The engine hands rows without logprobs to the backend's sample op: the op, given
// sample_row_params and penalty_table, must pick what Sampler::sample picks.
TEST(Sampler, TheCpuSampleOpPicksTheSameTokens) {
  auto cpu = make_cpu_backend(2);
  std::mt19937 rng(8);
  const int vocab = 3000;
  std::vector<float> logits;
  std::vector<SampleRowParams> rows;
  std::vector<int32_t> start = {0}, ids, counts, want;
  Sampler s;
  for (int r = 0; r < 40; ++r) {
    const auto row = random_logits(vocab, 100 + r, 2.0f);
    logits.insert(logits.end(), row.begin(), row.end());
    SamplingParams p = params_with(r % 5 == 0 ? 0.0f : 0.5f + 0.1f * (r % 7));
    p.top_k = r % 3 == 0 ? 30 : 0;
    p.top_p = r % 4 == 0 ? 0.85f : 1.0f;
    p.min_p = r % 6 == 0 ? 0.03f : 0.0f;
    if (r % 2 == 0) {
      p.repetition_penalty = 1.2f;
      p.presence_penalty = 0.3f;
      p.frequency_penalty = 0.2f;
    }
    std::vector<int> prompt, output;
    for (int i = 0; i < 20; ++i) prompt.push_back(static_cast<int>(rng() % 50));
    for (int i = 0; i < 15; ++i) output.push_back(static_cast<int>(rng() % 50));
    const uint64_t seed = rng();
    const int64_t position = 35 + r;
    want.push_back(s.sample(row, p, prompt, output, seed, position));
    rows.push_back(sample_row_params(p, seed, position));
    s.penalty_table(p, prompt, output, vocab, &ids, &counts);
    start.push_back(static_cast<int32_t>(ids.size()));
  }
  const int64_t R = static_cast<int64_t>(rows.size()), P = static_cast<int64_t>(ids.size());
  std::vector<int32_t> got(R, -1);
  const Status st = cpu->sample(
      {TensorView(logits.data(), DType::kF32, {R, vocab}),
       TensorView(rows.data(), DType::kI32, {R, kSampleRowWords}),
       TensorView(start.data(), DType::kI32, {R + 1}), TensorView(ids.data(), DType::kI32, {P}),
       TensorView(counts.data(), DType::kI32, {P}), TensorView(got.data(), DType::kI32, {R})});
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(got, want);
  // The penalties decided some rows: without them, some tokens differ.
  std::vector<int32_t> bare(R, -1);
  std::vector<int32_t> no_start(R + 1, 0);
  ASSERT_TRUE(cpu->sample({TensorView(logits.data(), DType::kF32, {R, vocab}),
                           TensorView(rows.data(), DType::kI32, {R, kSampleRowWords}),
                           TensorView(no_start.data(), DType::kI32, {R + 1}),
                           TensorView(ids.data(), DType::kI32, {0}),
                           TensorView(counts.data(), DType::kI32, {0}),
                           TensorView(bare.data(), DType::kI32, {R})})
                  .ok());
  EXPECT_NE(bare, want);
}

TEST(Sampler, MaskedAndNaNLogitsAreNeverDrawn) {
  std::vector<float> logits = {-kInf, 1.0f, std::nanf(""), 1.0f, -kInf};
  Sampler s;
  for (int pos = 0; pos < 200; ++pos) {
    const int id = sample(s, logits, params_with(5.0f), pos);
    EXPECT_TRUE(id == 1 || id == 3) << id;
  }
  EXPECT_EQ(sample(s, {-kInf, -kInf}, params_with(1.0f), 0), 0);  // nothing left: id 0
  EXPECT_EQ(sample(s, {0.0f, kInf, kInf}, params_with(1.0f), 0), 1);
  // A tiny temperature is greedy in effect, without overflow.
  EXPECT_EQ(sample(s, {1.0f, 1.001f, 0.5f}, params_with(1e-30f), 3), 1);
}

TEST(Sampler, LargeVocabularyWithTopP) {
  // Lazily sorted top-p at Llama 3 scale: the draws must stay within the nucleus, computed
  // here by a full sort.
  const auto logits = random_logits(128256, 6, 2.0f);
  const auto probs = softmax(logits, 0.9f);
  std::vector<int> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int>(i);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return probs[a] > probs[b]; });
  std::set<int> nucleus;
  double mass = 0.0;
  for (int id : ids) {
    nucleus.insert(id);
    if ((mass += probs[id]) >= 0.8) break;
  }
  SamplingParams p = params_with(0.9f);
  p.top_p = 0.8f;
  Sampler s;
  for (int pos = 0; pos < 100; ++pos) {
    const int id = sample(s, logits, p, pos);
    EXPECT_TRUE(nucleus.count(id)) << id;
  }
}

// The straightforward reading of the spec, in double with full sorts: the survivors, and each
// survivor's interval [before, after) of mass in descending probability (ties by ascending id).
struct ReferenceDraw {
  std::map<int, std::pair<double, double>> interval;
  double total = 0.0;
};

ReferenceDraw reference_distribution(const std::vector<float>& logits, const SamplingParams& p) {
  const int vocab = static_cast<int>(logits.size());
  std::vector<int> ids(vocab);
  for (int i = 0; i < vocab; ++i) ids[i] = i;
  std::sort(ids.begin(), ids.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  if (p.top_k > 0 && p.top_k < vocab) ids.resize(p.top_k);
  const double max = logits[ids[0]];
  std::vector<double> prob(vocab, 0.0);
  double total = 0.0;
  for (int id : ids) total += prob[id] = std::exp((logits[id] - max) / p.temperature);
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    size_t kept = 0;
    while (kept < ids.size()) {
      mass += prob[ids[kept++]];
      if (mass >= p.top_p * total) break;
    }
    ids.resize(kept);
  }
  std::erase_if(ids, [&](int id) { return prob[id] < p.min_p; });  // the top one has 1
  ReferenceDraw ref;
  for (int id : ids) {
    ref.interval[id] = {ref.total, ref.total + prob[id]};
    ref.total += prob[id];
  }
  return ref;
}

TEST(Sampler, AgreesWithAFullSortReference) {
  struct Case {
    int vocab;
    float temperature;
    int top_k;
    float top_p;
    float min_p;
  };
  const std::vector<Case> cases = {
      {100, 1.0f, 0, 1.0f, 0.0f},     {1000, 0.7f, 0, 1.0f, 0.0f},
      {32000, 1.0f, 0, 1.0f, 0.0f},   {32000, 1.3f, 0, 0.9f, 0.0f},
      {32000, 0.8f, 0, 1.0f, 0.02f},  {32000, 1.0f, 40, 0.95f, 0.0f},
      {5000, 2.0f, 1000, 0.5f, 0.0f}, {128256, 1.0f, 0, 0.7f, 0.01f},
      {300, 50.0f, 0, 0.99f, 0.0f},
  };
  Sampler s;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "vocab " << c.vocab << " T " << c.temperature << " k "
                                    << c.top_k << " p " << c.top_p << " min_p " << c.min_p);
    const auto logits = random_logits(c.vocab, static_cast<uint32_t>(c.vocab) + 17, 2.5f);
    SamplingParams p = params_with(c.temperature);
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    const ReferenceDraw ref = reference_distribution(logits, p);
    std::set<int> drawn;
    for (int pos = 0; pos < 300; ++pos) {
      const int id = sample(s, logits, p, pos, 77);
      const auto it = ref.interval.find(id);
      ASSERT_NE(it, ref.interval.end()) << "token " << id << " is not a survivor";
      // The draw's point falls in the token's interval, up to the rounding of float
      // probabilities and of sums grouped differently.
      const double target = counter_uniform(77, pos) * ref.total;
      const double slack = 1e-5 * ref.total;
      EXPECT_LE(it->second.first, target + slack) << "token " << id << " position " << pos;
      EXPECT_GE(it->second.second, target - slack) << "token " << id << " position " << pos;
      drawn.insert(id);
    }
    EXPECT_GE(drawn.size(), std::min<size_t>(ref.interval.size(), 2));
  }
}

TEST(SamplingParams, DefaultsAreValid) {
  EXPECT_TRUE(SamplingParams().validate().ok());
}

TEST(SamplingParams, ErrorsNameTheFieldAndValue) {
  struct Case {
    void (*set)(SamplingParams&);
    const char* field;
    const char* value;
  };
  const std::vector<Case> cases = {
      {[](SamplingParams& p) { p.temperature = -0.5f; }, "temperature", "-0.5"},
      {[](SamplingParams& p) { p.temperature = kInf; }, "temperature", "inf"},
      {[](SamplingParams& p) { p.temperature = std::nanf(""); }, "temperature", "nan"},
      {[](SamplingParams& p) { p.top_k = -1; }, "top_k", "-1"},
      {[](SamplingParams& p) { p.top_p = 0.0f; }, "top_p", "0"},
      {[](SamplingParams& p) { p.top_p = 1.5f; }, "top_p", "1.5"},
      {[](SamplingParams& p) { p.min_p = -0.1f; }, "min_p", "-0.1"},
      {[](SamplingParams& p) { p.min_p = 2.0f; }, "min_p", "2"},
      {[](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty", "0"},
      {[](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty", "2.5"},
      {[](SamplingParams& p) { p.frequency_penalty = -3.0f; }, "frequency_penalty", "-3"},
      {[](SamplingParams& p) { p.frequency_penalty = std::nanf(""); }, "frequency_penalty", "nan"},
      {[](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens", "0"},
      {[](SamplingParams& p) {
         p.stop_token_ids = {2, -7};
       },
       "stop_token_ids[1]", "-7"},
  };
  for (const auto& c : cases) {
    SamplingParams p;
    c.set(p);
    const Status status = p.validate();
    ASSERT_FALSE(status.ok()) << c.field;
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(status.message().find(c.field), std::string::npos) << status.message();
    EXPECT_NE(status.message().find(c.value), std::string::npos) << status.message();
  }
  SamplingParams edge;
  edge.temperature = 0.0f;
  edge.top_p = 1.0f;
  edge.min_p = 1.0f;
  edge.presence_penalty = -2.0f;
  edge.frequency_penalty = 2.0f;
  edge.max_tokens = 1;
  edge.stop_token_ids = {0};
  EXPECT_TRUE(edge.validate().ok()) << edge.validate().to_string();
}

}  // namespace
}  // namespace pagoda
