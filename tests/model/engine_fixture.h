// The Engine test fixture over the real stories260K model (tests/model/engine*_test.cc): what a
// request gives alone through the independent BatchGenerator, concurrent submission from
// several threads, a 64-request mix of sampling settings, and the checks of a request's
// timeline.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <vector>

#include "engine/batch_generator.h"
#include "engine/engine.h"
#include "tests/model/request_stream.h"
#include "tests/model/stories_fixture.h"

namespace pagoda {

class EngineTest : public StoriesModelTest {
 protected:
  using Collected = testing::Collected;
  static Collected collect(OutputChannel& ch) { return testing::collect(ch); }

  // What a request gives alone, through the independent BatchGenerator harness.
  static std::vector<int> alone(const Request& r) {
    BatchGenerator gen(model_, GeneratorOptions{});
    auto out = gen.run({GenerationRequest{r.prompt_ids, r.params}});
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? (*out)[0].output_ids : std::vector<int>{};
  }

  // Submits all requests from 4 threads at once and collects every stream.
  static std::vector<Collected> run_concurrently(Engine& engine, const std::vector<Request>& reqs) {
    std::vector<Collected> results(reqs.size());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::vector<std::pair<size_t, RequestHandle>> mine;
        for (size_t i = t; i < reqs.size(); i += 4) {
          auto h = engine.submit(reqs[i]);
          ASSERT_TRUE(h.ok()) << h.status().to_string();
          mine.emplace_back(i, *h);
        }
        for (auto& [i, h] : mine) results[i] = collect(*h.outputs);
      });
    }
    for (auto& th : threads) th.join();
    return results;
  }

  // 64 requests: mixed prompt lengths (1..120 tokens), greedy and seeded sampling (top-p;
  // top-k, min-p and penalties; greedy with a penalty), a shared story prefix on some so the
  // prefix cache has something to find.
  static std::vector<Request> mixed_requests() {
    std::mt19937 rng(11);
    const std::vector<int> prefix =
        tokenizer_
            ->encode(
                "Once upon a time, there was a little girl named Lily. She loved to play outside.",
                true)
            .value();
    std::vector<Request> reqs;
    for (int i = 0; i < 64; ++i) {
      Request r;
      if (i % 3 == 0) {
        r.prompt_ids = prefix;
        for (int k = 0; k < i % 7; ++k) r.prompt_ids.push_back(3 + rng() % 500);
      } else {
        r.prompt_ids = {1};
        const int len = static_cast<int>(rng() % 120);
        for (int k = 0; k < len; ++k) r.prompt_ids.push_back(3 + rng() % 500);
      }
      r.params.max_tokens = 8 + static_cast<int>(rng() % 40);
      r.params.ignore_eos = (i % 2 == 0);
      if (i % 4 == 1) {
        r.params.temperature = 0.8f;
        r.params.top_p = 0.9f;
        r.params.seed = 1000 + i;
      } else if (i % 8 == 3) {  // every step of the sampler, penalties included
        r.params.temperature = 1.1f;
        r.params.top_k = 40;
        r.params.min_p = 0.02f;
        r.params.repetition_penalty = 1.3f;
        r.params.presence_penalty = 0.4f;
        r.params.frequency_penalty = 0.2f;
        r.params.seed = 2000 + i;
      } else if (i % 8 == 7) {  // greedy with a penalty: not the plain argmax
        r.params.temperature = 0.0f;
        r.params.repetition_penalty = 1.5f;
      } else {
        r.params.temperature = 0.0f;
      }
      reqs.push_back(r);
    }
    return reqs;
  }

  // The final message's timeline (what per-request tracing shows): the first admission's
  // prefill chunks continue each other from the cached prefix to the end of the prompt, every
  // preemption is timed and followed by at least one recompute chunk, chunks lie inside the
  // request's life, and every generated token went through the detokenizer.
  static void expect_timeline(const RequestOutput& last, int prompt_len, size_t i) {
    ASSERT_NE(last.timeline, nullptr) << "request " << i;
    const RequestTimeline& tl = *last.timeline;
    const RequestTimings& t = last.timings;
    int next = last.usage.cached_tokens;
    int recomputes = 0;
    for (const PrefillChunk& c : tl.prefill_chunks) {
      EXPECT_LE(t.scheduled, c.start) << "request " << i;
      EXPECT_LE(c.start, c.end) << "request " << i;
      EXPECT_LE(c.end, t.finished) << "request " << i;
      EXPECT_GT(c.num_tokens, 0) << "request " << i;
      if (c.recompute) {
        ++recomputes;
        continue;
      }
      EXPECT_EQ(c.start_position, next) << "request " << i << ": chunks must continue each other";
      next = c.start_position + c.num_tokens;
    }
    if (last.num_preemptions == 0) {
      EXPECT_EQ(next, prompt_len) << "request " << i;
    }
    EXPECT_LE(next, prompt_len) << "request " << i;
    EXPECT_EQ(static_cast<int>(tl.preempted_at.size()), last.num_preemptions) << "request " << i;
    EXPECT_GE(recomputes, last.num_preemptions) << "request " << i;
    for (EngineClock::time_point at : tl.preempted_at) {
      EXPECT_LE(t.scheduled, at) << "request " << i;
      EXPECT_LE(at, t.finished) << "request " << i;
    }
    EXPECT_EQ(tl.detokenized_tokens, last.usage.completion_tokens) << "request " << i;
  }

  // The engine's outputs against each request alone. The engine is gone before the solo runs:
  // one model serves one user at a time (with async scheduling a step may still be in flight
  // after the last final message: the row of a request that had just stopped).
  static void expect_same_as_alone(const EngineConfig& config, int64_t* preemptions,
                                   int64_t* cached_tokens) {
    const auto reqs = mixed_requests();
    std::vector<Collected> got;
    {
      auto engine = Engine::create(model_, tokenizer_, config);
      ASSERT_TRUE(engine.ok()) << engine.status().to_string();
      got = run_concurrently(**engine, reqs);
      *preemptions = (*engine)->stats().preemptions;
      EXPECT_EQ((*engine)->stats().running, 0);
    }
    *cached_tokens = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(got[i].ids, alone(reqs[i])) << "request " << i;
      EXPECT_EQ(got[i].last.usage.completion_tokens, static_cast<int>(got[i].ids.size()));
      EXPECT_EQ(got[i].last.usage.prompt_tokens, static_cast<int>(reqs[i].prompt_ids.size()));
      *cached_tokens += got[i].last.usage.cached_tokens;
      expect_timeline(got[i].last, static_cast<int>(reqs[i].prompt_ids.size()), i);
    }
  }
};

}  // namespace pagoda
