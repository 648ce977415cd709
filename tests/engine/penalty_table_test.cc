// PenaltyTable (kept per request, token by token) against Sampler::penalty_table (rebuilt from
// all the tokens): the same ids and counts in the same order after every step of random
// requests, out-of-vocabulary ids and prompts with repeats included; and it refuses an output
// that shrank.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "engine/sampler.h"

namespace pagoda {
namespace {

TEST(PenaltyTableTest, GrowsIntoWhatARebuildGives) {
  std::mt19937 rng(3);
  SamplingParams params;
  params.repetition_penalty = 1.2f;
  Sampler sampler;
  for (int request = 0; request < 200; ++request) {
    const int vocab = 1 + static_cast<int>(rng() % 64);
    std::vector<int> prompt(rng() % 40), output;
    // Ids a little outside [0, vocab) too: both must ignore them.
    for (int& id : prompt) id = static_cast<int>(rng() % (vocab + 4)) - 2;
    PenaltyTable table;
    for (int step = 0; step < 30; ++step) {
      for (int k = static_cast<int>(rng() % 3); k > 0; --k)  // 0 to 2 new tokens a step
        output.push_back(static_cast<int>(rng() % (vocab + 2)) - 1);
      table.update(prompt, output, vocab);
      std::vector<int32_t> ids, counts;
      sampler.penalty_table(params, prompt, output, vocab, &ids, &counts);
      ASSERT_EQ(std::vector<int32_t>(table.ids().begin(), table.ids().end()), ids)
          << "request " << request << " step " << step;
      ASSERT_EQ(std::vector<int32_t>(table.counts().begin(), table.counts().end()), counts)
          << "request " << request << " step " << step;
    }
  }
}

TEST(PenaltyTableDeathTest, AnOutputThatShrankIsABug) {
  PenaltyTable table;
  const std::vector<int> prompt = {1, 2}, output = {3, 4};
  table.update(prompt, output, 8);
  EXPECT_DEATH(table.update(prompt, std::span<const int>(output).first(1), 8), "CHECK failed");
}

}  // namespace
}  // namespace pagoda
