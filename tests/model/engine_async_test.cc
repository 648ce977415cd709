// Async scheduling (EngineConfig::async_scheduling) with the real stories260K model: planning
// step N+1 while step N runs, and delivering N after N+1 is launched, changes no token, text,
// logprob or finish reason: async equal to sync with stop strings, stop token ids, EOS,
// logprobs and the host sampler; shutdown with a step in flight. (engine_test.cc runs its
// concurrent-requests-equal-alone cases, chunked prefill and forced preemption, and its
// cancellation case both ways.)
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/model/engine_fixture.h"

namespace pagoda {
namespace {

class EngineAsyncTest : public EngineTest {
 protected:
  // Every request of `reqs` through one engine with async scheduling and one without.
  // Returns the async run's streams.
  static std::vector<Collected> expect_async_same_as_sync(EngineConfig config,
                                                          const std::vector<Request>& reqs,
                                                          EngineStats* async_stats) {
    std::vector<Collected> runs[2];
    for (const bool async : {false, true}) {
      config.async_scheduling = async;
      auto engine = Engine::create(model_, tokenizer_, config);
      EXPECT_TRUE(engine.ok()) << engine.status().to_string();
      if (!engine.ok()) return {};
      runs[async] = run_concurrently(**engine, reqs);
      const EngineStats st = (*engine)->stats();
      EXPECT_EQ(st.running, 0);
      if (async) {
        *async_stats = st;
      } else {
        EXPECT_EQ(st.lookahead_steps, 0);
        EXPECT_EQ(st.wasted_rows, 0);
      }
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
      const Collected &want = runs[0][i], &got = runs[1][i];
      EXPECT_EQ(got.ids, want.ids) << "request " << i;
      EXPECT_EQ(got.text, want.text) << "request " << i;
      EXPECT_EQ(got.last.finish_reason, want.last.finish_reason) << "request " << i;
      EXPECT_EQ(got.last.usage.completion_tokens, want.last.usage.completion_tokens);
      EXPECT_EQ(got.logprobs.size(), want.logprobs.size()) << "request " << i;
      for (size_t t = 0; t < std::min(got.logprobs.size(), want.logprobs.size()); ++t) {
        EXPECT_EQ(got.logprobs[t].token_id, want.logprobs[t].token_id);
        EXPECT_EQ(got.logprobs[t].logprob, want.logprobs[t].logprob);
        EXPECT_EQ(got.logprobs[t].top, want.logprobs[t].top);
      }
      expect_timeline(got.last, static_cast<int>(reqs[i].prompt_ids.size()), i);
    }
    return runs[1];
  }

  // Stop strings, stop ids and EOS ended some requests, and a stop string is never emitted.
  static void expect_stops(const std::vector<Request>& reqs, const std::vector<Collected>& got) {
    ASSERT_EQ(got.size(), reqs.size());
    int by_string = 0, by_token = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
      by_string += got[i].last.finish_reason == FinishReason::kStopSequence;
      by_token += got[i].last.finish_reason == FinishReason::kStop;
      for (const std::string& s : reqs[i].stop_strings)
        EXPECT_EQ(got[i].text.find(s), std::string::npos) << "request " << i;
      if (got[i].last.finish_reason == FinishReason::kStopSequence) {
        // The last token completes the first stop string: the output ends right there.
        const auto continuation = [&](size_t n) {
          std::vector<int> all = reqs[i].prompt_ids;
          all.insert(all.end(), got[i].ids.begin(), got[i].ids.begin() + n);
          return tokenizer_->decode(all).substr(tokenizer_->decode(reqs[i].prompt_ids).size());
        };
        const auto has_stop = [&](const std::string& text) {
          return std::any_of(
              reqs[i].stop_strings.begin(), reqs[i].stop_strings.end(),
              [&](const std::string& s) { return text.find(s) != std::string::npos; });
        };
        ASSERT_FALSE(got[i].ids.empty());
        EXPECT_TRUE(has_stop(continuation(got[i].ids.size()))) << "request " << i;
        EXPECT_FALSE(has_stop(continuation(got[i].ids.size() - 1))) << "request " << i;
      }
      if (got[i].last.finish_reason == FinishReason::kLength) {
        EXPECT_EQ(static_cast<int>(got[i].ids.size()), reqs[i].params.max_tokens);
      }
    }
    EXPECT_GT(by_string, 3);
    EXPECT_GT(by_token, 3);
  }

  // The mix, plus what ends requests early: stop strings, stop token ids and logprobs.
  static std::vector<Request> stopping_requests() {
    std::vector<Request> reqs = mixed_requests();
    const std::vector<std::string> stops = {"Lily", " the", ".", "was"};
    for (size_t i = 0; i < reqs.size(); ++i) {
      Request& r = reqs[i];
      if (i % 5 == 0) r.stop_strings = {stops[i % stops.size()]};
      if (i % 5 == 2) r.params.stop_token_ids = {tokenizer_->encode(".", false).value().back()};
      if (i % 6 == 1) r.params.logprobs = 3;
    }
    return reqs;
  }
};

TEST_F(EngineAsyncTest, StopsAndLogprobsAreTheSameAsWithout) {
  EngineConfig config;
  config.num_blocks = 512;
  config.max_num_batched_tokens = 128;
  EngineStats st;
  const std::vector<Request> reqs = stopping_requests();
  expect_stops(reqs, expect_async_same_as_sync(config, reqs, &st));
  EXPECT_GT(st.lookahead_steps, 20);
  EXPECT_GT(st.wasted_rows, 0) << "a request that stops had its next row planned already";
}

TEST_F(EngineAsyncTest, HostSamplerUnderPreemptionIsTheSameAsWithout) {
  EngineConfig config;
  config.max_model_len = 256;
  config.num_blocks = 24;
  config.max_num_batched_tokens = 64;
  config.device_sampling = false;
  config.policy = SchedulingPolicy::kPriority;
  EngineStats st;
  const std::vector<Request> reqs = stopping_requests();
  expect_stops(reqs, expect_async_same_as_sync(config, reqs, &st));
  EXPECT_GT(st.lookahead_steps, 20);
  EXPECT_GT(st.preemptions, 0);
}

// Shutting down with a step in flight waits for it and ends what is left as cancelled.
TEST_F(EngineAsyncTest, DestroyWithRequestsInFlight) {
  EngineConfig config;
  config.async_scheduling = true;
  std::vector<RequestHandle> handles;
  {
    auto engine = Engine::create(model_, tokenizer_, config);
    ASSERT_TRUE(engine.ok());
    for (int i = 0; i < 8; ++i) {
      Request r;
      r.prompt_ids = {1, 403 + i};
      r.params.ignore_eos = true;
      r.params.max_tokens = 400;
      auto h = (*engine)->submit(r);
      ASSERT_TRUE(h.ok());
      handles.push_back(*h);
    }
    ASSERT_TRUE(handles[0].outputs->next(std::chrono::seconds(60)).has_value());
  }
  for (RequestHandle& h : handles)
    EXPECT_EQ(collect(*h.outputs).last.finish_reason, FinishReason::kCancelled);
  // The model is idle again: another engine runs on it, then the solo harness.
  Request r;
  r.prompt_ids = {1, 403};
  r.params.temperature = 0;
  r.params.max_tokens = 5;
  r.params.ignore_eos = true;
  std::vector<int> ids;
  {
    auto again = Engine::create(model_, tokenizer_, config);
    ASSERT_TRUE(again.ok());
    auto h = (*again)->submit(r);
    ASSERT_TRUE(h.ok());
    ids = collect(*h->outputs).ids;
  }
  EXPECT_EQ(ids, alone(r));
}

}  // namespace
}  // namespace pagoda
