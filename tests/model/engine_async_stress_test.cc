// Randomized: the async engine against the sync engine with cancellations, deadlines and an
// injected device failure. No tokenizer, so it runs under the sanitizers. (Adapted from the
// review of the async scheduling work.)
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "tests/model/recording_backend.h"
#include "tests/model/request_stream.h"
#include "tests/model/stories_fixture.h"

namespace pagoda {
namespace {

using testing::RecordingBackend;

std::vector<Request> make_reqs(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Request> reqs;
  for (int i = 0; i < 40; ++i) {
    Request r;
    r.prompt_ids = {1};
    const int len = static_cast<int>(rng() % 60);
    for (int k = 0; k < len; ++k) r.prompt_ids.push_back(3 + rng() % 500);
    r.params.max_tokens = 1 + static_cast<int>(rng() % 40);
    r.params.ignore_eos = rng() % 2;
    r.params.temperature = rng() % 2 ? 0.0f : 0.9f;
    r.params.seed = 77 + i;
    if (rng() % 3 == 0) r.params.repetition_penalty = 1.3f;
    if (rng() % 2 == 0) r.params.stop_token_ids = {13, 29, 41, 400};
    if (rng() % 4 == 0) r.params.logprobs = 2;
    r.priority = static_cast<int>(rng() % 3);
    reqs.push_back(r);
  }
  return reqs;
}

// Async scheduling against the sync engine under everything at once, over 10 seeds: cancels
// from another thread and deadlines landing at any step, stop ids, penalties, logprobs, a KV
// pool tight enough to preempt (also requests in flight), the priority policy, the host sampler,
// decode graphs, and a sample op that fails once. Whatever the timing, every stream must be
// consistent: a request that finished on its own has exactly the sync engine's tokens and
// reason; one cancelled, timed out or failed has a prefix of them; usage and logprob counts
// match the ids; nothing is left running and the model ends idle.
class EngineAsyncStressTest : public StoriesWeightsTest {};

TEST_F(EngineAsyncStressTest, MatchesTheSyncEngineUnderCancelsDeadlinesAndFailures) {
  const LoadedModel& loaded = *loaded_;
  int errors = 0;
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    const auto reqs = make_reqs(seed);
    EngineConfig config;
    config.max_model_len = 256;
    config.num_blocks = seed % 2 ? 20 : 200;
    config.max_num_batched_tokens = 48;
    config.max_num_seqs = 16;
    config.policy = seed % 3 == 0 ? SchedulingPolicy::kPriority : SchedulingPolicy::kFcfs;
    config.device_sampling = seed % 4 != 1;
    std::vector<testing::Collected> want;
    {
      auto be = std::make_unique<RecordingBackend>(make_backend("cpu", 1).value());
      auto model = LlamaModel::create(loaded, be.get()).value();
      auto e = Engine::create(model.get(), nullptr, config).value();
      std::vector<RequestHandle> hs;
      for (const Request& r : reqs) hs.push_back(e->submit(r).value());
      for (auto& h : hs) want.push_back(testing::collect(*h.outputs));
    }
    auto be = std::make_unique<RecordingBackend>(make_backend("cpu", 1).value());
    if (seed % 3 == 2) be->fail_sample_call = 10 + seed;
    auto model = LlamaModel::create(loaded, be.get()).value();
    config.async_scheduling = true;
    config.decode_graphs = seed % 2 == 0;
    auto e = Engine::create(model.get(), nullptr, config).value();
    std::vector<RequestHandle> hs;
    std::mt19937 rng(seed * 31);
    for (Request r : reqs) {
      if (rng() % 4 == 0)
        r.deadline = EngineClock::now() + std::chrono::microseconds(rng() % 20000);
      hs.push_back(e->submit(r).value());
    }
    std::thread canceller([&] {
      std::mt19937 crng(seed);
      for (int k = 0; k < 12; ++k) {
        std::this_thread::sleep_for(std::chrono::microseconds(crng() % 3000));
        (void)e->cancel(hs[crng() % hs.size()].id);
      }
    });
    std::vector<testing::Collected> got;
    for (auto& h : hs) got.push_back(testing::collect(*h.outputs));
    canceller.join();
    for (size_t i = 0; i < reqs.size(); ++i) {
      const auto &w = want[i], &g = got[i];
      EXPECT_EQ(g.last.usage.completion_tokens, static_cast<int>(g.ids.size()));
      if (reqs[i].params.logprobs > 0) {
        EXPECT_EQ(g.logprobs.size(), g.ids.size());
      }
      const FinishReason f = g.last.finish_reason;
      if (f == FinishReason::kCancelled || f == FinishReason::kTimeLimit ||
          f == FinishReason::kError) {
        if (f == FinishReason::kError) {
          ++errors;
          EXPECT_NE(g.last.error.message().find("failure injected"), std::string::npos)
              << g.last.error.to_string();
        }
        ASSERT_LE(g.ids.size(), w.ids.size()) << seed << " " << i;
        EXPECT_TRUE(std::equal(g.ids.begin(), g.ids.end(), w.ids.begin())) << seed << " " << i;
      } else {
        EXPECT_EQ(g.ids, w.ids) << seed << " " << i;
        EXPECT_EQ(f, w.last.finish_reason) << seed << " " << i;
      }
    }
    EXPECT_EQ(e->stats().running, 0);
    EXPECT_EQ(e->stats().waiting, 0);
    e.reset();
    EXPECT_FALSE(model->step_in_flight());
  }
  EXPECT_GT(errors, 0) << "the injected failures should have ended some requests";
}

}  // namespace
}  // namespace pagoda
