// The continuous-batching Engine with the real stories260K model: many concurrent requests give
// exactly what each gives alone (also under forced preemption and with prefix caching), the
// llama2.c reference still holds through the engine, and cancellation, deadlines, stop strings
// and bad input behave.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "engine/batch_generator.h"
#include "kernels/backend_factory.h"
#include "tests/model/request_stream.h"
#include "tests/model/stories_fixture.h"
#include "tests/model/stories_reference.h"

namespace pagoda {
namespace {

const std::string kRoot = PAGODA_SOURCE_DIR;

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

  static void expect_same_as_alone(const EngineConfig& config, int64_t* preemptions,
                                   int64_t* cached_tokens) {
    auto engine = Engine::create(model_, tokenizer_, config);
    ASSERT_TRUE(engine.ok()) << engine.status().to_string();
    const auto reqs = mixed_requests();
    const auto got = run_concurrently(**engine, reqs);
    *cached_tokens = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(got[i].ids, alone(reqs[i])) << "request " << i;
      EXPECT_EQ(got[i].last.usage.completion_tokens, static_cast<int>(got[i].ids.size()));
      EXPECT_EQ(got[i].last.usage.prompt_tokens, static_cast<int>(reqs[i].prompt_ids.size()));
      *cached_tokens += got[i].last.usage.cached_tokens;
      expect_timeline(got[i].last, static_cast<int>(reqs[i].prompt_ids.size()), i);
    }
    *preemptions = (*engine)->stats().preemptions;
    EXPECT_EQ((*engine)->stats().running, 0);
  }
};

TEST_F(EngineTest, ConcurrentRequestsMatchAloneWithPrefixCaching) {
  EngineConfig config;
  config.num_blocks = 512;
  config.max_num_batched_tokens = 96;  // forces chunked prefill mixed with decodes
  int64_t preemptions = 0, cached = 0;
  expect_same_as_alone(config, &preemptions, &cached);
  EXPECT_GT(cached, 0) << "requests sharing the story prefix should hit the prefix cache";
}

TEST_F(EngineTest, ConcurrentRequestsMatchAloneUnderForcedPreemption) {
  EngineConfig config;
  config.max_model_len = 256;
  config.num_blocks = 16;  // 256 tokens of KV for 64 requests: preemption is certain
  config.max_num_batched_tokens = 64;
  int64_t preemptions = 0, cached = 0;
  expect_same_as_alone(config, &preemptions, &cached);
  EXPECT_GT(preemptions, 0);
}

TEST_F(EngineTest, ConcurrentRequestsMatchAloneWithoutPrefixCaching) {
  EngineConfig config;
  config.num_blocks = 512;
  config.enable_prefix_caching = false;
  config.policy = SchedulingPolicy::kPriority;
  config.device_sampling = false;  // the host sampler for every row: the same tokens
  int64_t preemptions = 0, cached = 0;
  expect_same_as_alone(config, &preemptions, &cached);
  EXPECT_EQ(cached, 0);
}

TEST_F(EngineTest, ReferenceIdsHoldThroughTheEngine) {
  auto engine = Engine::create(model_, tokenizer_, EngineConfig{});
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  std::vector<Request> reqs;
  std::vector<std::vector<int>> expected;
  for (const testing_reference::ReferenceCase& c : testing_reference::load_stories_reference()) {
    Request r;
    r.prompt_ids = c.prompt_ids;
    r.params = testing_reference::reference_params(c);
    reqs.push_back(r);
    expected.push_back(c.generated_ids);
  }
  const auto got = run_concurrently(**engine, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(got[i].ids, expected[i]) << "case " << i;
    // The streamed text continues the prompt's text: decode(prompt + output) minus the prompt.
    std::vector<int> all = reqs[i].prompt_ids;
    all.insert(all.end(), expected[i].begin(), expected[i].end());
    const std::string whole = tokenizer_->decode(all),
                      prompt = tokenizer_->decode(reqs[i].prompt_ids);
    ASSERT_EQ(whole.substr(0, prompt.size()), prompt);
    EXPECT_EQ(got[i].text, whole.substr(prompt.size())) << "case " << i;
  }
}

TEST_F(EngineTest, StopStringIsNotEmittedAndEndsTheRequest) {
  auto engine = Engine::create(model_, tokenizer_, EngineConfig{});
  ASSERT_TRUE(engine.ok());
  Request r;
  r.prompt_ids = tokenizer_->encode("Once upon a time", true).value();
  r.params.temperature = 0;
  r.params.max_tokens = 60;
  std::vector<int> all = r.prompt_ids;
  for (int id : alone(r)) all.push_back(id);
  const std::string full = tokenizer_->decode(all).substr(tokenizer_->decode(r.prompt_ids).size());
  const size_t at = full.find("Lily");
  ASSERT_NE(at, std::string::npos) << full;
  r.stop_strings = {"Lily", "a string that never appears"};
  auto h = (*engine)->submit(r);
  ASSERT_TRUE(h.ok());
  const Collected c = collect(*h->outputs);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kStopSequence);
  EXPECT_EQ(c.text, full.substr(0, at));
  EXPECT_GT(c.messages, 2) << "text should stream, not arrive at the end";
}

TEST_F(EngineTest, CancelMidDecodeFreesEverything) {
  auto engine = Engine::create(model_, tokenizer_, EngineConfig{});
  ASSERT_TRUE(engine.ok());
  Request r;
  r.prompt_ids = {1, 403};
  r.params.temperature = 0;
  r.params.ignore_eos = true;
  r.params.max_tokens = 500;
  auto h = (*engine)->submit(r);
  ASSERT_TRUE(h.ok());
  auto first = h->outputs->next(std::chrono::seconds(60));
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE((*engine)->cancel(h->id).ok());
  const Collected rest = collect(*h->outputs);
  EXPECT_EQ(rest.last.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(rest.last.usage.completion_tokens, 500);
  EXPECT_EQ((*engine)->cancel(h->id).code(), StatusCode::kNotFound);
  // The engine publishes its state after each step; give it a step to run.
  Request probe = r;
  probe.params.max_tokens = 1;
  auto p = (*engine)->submit(probe);
  ASSERT_TRUE(p.ok());
  collect(*p->outputs);
  EXPECT_EQ((*engine)->stats().running, 0);
}

TEST_F(EngineTest, DeadlineEndsWithTimeLimit) {
  auto engine = Engine::create(model_, tokenizer_, EngineConfig{});
  ASSERT_TRUE(engine.ok());
  Request r;
  r.prompt_ids = {1, 403};
  r.params.ignore_eos = true;
  r.params.max_tokens = 500;
  r.deadline = EngineClock::now();  // already passed: ends at the first step
  auto h = (*engine)->submit(r);
  ASSERT_TRUE(h.ok());
  const Collected c = collect(*h->outputs);
  EXPECT_EQ(c.last.finish_reason, FinishReason::kTimeLimit);
}

// The per-row host work (logprobs, the host sampler) gives the same tokens and logprobs on the
// engine thread alone as on a pool; a bad thread count is refused at create.
TEST_F(EngineTest, HostRowWorkDoesNotDependOnItsThreads) {
  std::vector<Request> reqs;
  for (int i = 0; i < 12; ++i) {
    Request r;
    r.prompt_ids = {1, 403 + i, 407};
    r.params.max_tokens = 12;
    r.params.ignore_eos = true;
    r.params.temperature = 0.9f;
    r.params.seed = 40 + i;
    r.params.logprobs = 2;
    reqs.push_back(r);
  }
  std::vector<std::vector<Collected>> runs;
  for (bool device : {true, false}) {
    for (int threads : {1, 3}) {
      EngineConfig config;
      config.device_sampling = device;
      config.host_threads = threads;
      auto engine = Engine::create(model_, tokenizer_, config);
      ASSERT_TRUE(engine.ok()) << engine.status().to_string();
      runs.push_back(run_concurrently(**engine, reqs));
    }
  }
  for (size_t k = 1; k < runs.size(); ++k) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(runs[k][i].ids, runs[0][i].ids) << "run " << k << " request " << i;
      ASSERT_EQ(runs[k][i].logprobs.size(), runs[0][i].logprobs.size());
      for (size_t t = 0; t < runs[0][i].logprobs.size(); ++t) {
        EXPECT_EQ(runs[k][i].logprobs[t].logprob, runs[0][i].logprobs[t].logprob);
        EXPECT_EQ(runs[k][i].logprobs[t].top, runs[0][i].logprobs[t].top);
      }
    }
  }
  EngineConfig bad;
  bad.host_threads = -1;
  auto refused = Engine::create(model_, tokenizer_, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("host_threads"), std::string::npos)
      << refused.status().message();
}

TEST_F(EngineTest, BadInputIsRefusedAtSubmit) {
  EngineConfig config;
  config.max_model_len = 64;
  auto engine = Engine::create(model_, tokenizer_, config);
  ASSERT_TRUE(engine.ok());
  auto expect_refused = [&](Request r, const std::string& field) {
    auto h = (*engine)->submit(r);
    ASSERT_FALSE(h.ok()) << field;
    EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(h.status().message().find(field), std::string::npos) << h.status().message();
  };
  Request good;
  good.prompt_ids = {1, 403};
  good.params.max_tokens = 8;
  Request r = good;
  r.prompt_ids = {};
  expect_refused(r, "prompt");
  r = good;
  r.prompt_ids.assign(64, 5);
  expect_refused(r, "prompt");
  r = good;
  r.prompt_ids = {1, 512};
  expect_refused(r, "prompt_ids");
  r = good;
  r.params.max_tokens = 0;
  expect_refused(r, "max_tokens");
  r = good;
  r.params.max_tokens = 63;
  expect_refused(r, "max_tokens");
  r = good;
  r.params.temperature = -1;
  expect_refused(r, "temperature");
  r = good;
  r.params.top_p = 0;
  expect_refused(r, "top_p");
  r = good;
  r.params.top_p = 1.5f;
  expect_refused(r, "top_p");
  r = good;
  r.priority = 1 << 20;
  expect_refused(r, "priority");
  r = good;
  r.stop_strings = {""};
  expect_refused(r, "stop");
  // Nothing entered the queue.
  EXPECT_EQ((*engine)->stats().waiting, 0);
  auto ok = (*engine)->submit(good);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(collect(*ok->outputs).last.usage.completion_tokens, 8);
}

}  // namespace
}  // namespace pagoda

namespace pagoda {
namespace {

// A continuation that starts with a new word keeps its leading space: the text streams as the
// continuation of the prompt, not as a text of its own.
TEST_F(EngineTest, OutputTextKeepsTheLeadingSpaceOfTheContinuation) {
  auto engine = Engine::create(model_, tokenizer_, EngineConfig{});
  ASSERT_TRUE(engine.ok());
  Request r;
  r.prompt_ids =
      tokenizer_->encode("Once upon a time, there was a little girl named", true).value();
  r.params.temperature = 0;
  r.params.max_tokens = 3;
  auto h = (*engine)->submit(r);
  ASSERT_TRUE(h.ok());
  const Collected c = collect(*h->outputs);
  ASSERT_FALSE(c.text.empty());
  EXPECT_EQ(c.text[0], ' ') << "'" << c.text << "'";
}

}  // namespace
}  // namespace pagoda

namespace pagoda {
namespace {

TEST_F(EngineTest, KvCacheSizedFromAFractionOfMemory) {
  EngineConfig config;
  config.kv_cache_memory_fraction = 0.01;
  auto engine = Engine::create(model_, tokenizer_, config);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  const size_t available = backend_->available_memory_bytes().value();
  const size_t per_block = model_->kv_cache_shape(1, config.block_size).bytes_per_block();
  const double expected = 0.01 * available / per_block;
  EXPECT_NEAR((*engine)->scheduler_config().num_blocks, expected, expected * 0.2 + 1);

  config.kv_cache_memory_fraction = 1.5;
  auto bad = Engine::create(model_, tokenizer_, config);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kv_cache_memory_fraction"), std::string::npos);
  config.kv_cache_memory_fraction = 0;
  config.kv_cache_bytes = 1024;  // not even one context
  bad = Engine::create(model_, tokenizer_, config);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kv_cache_bytes"), std::string::npos);
}

// The engine reserves the workspace for its largest step before sizing the KV cache, so no
// step allocates: a fresh model's workspace grows once (at create) and never while 64 mixed
// requests (long prompts in chunks, many sequences at once) run through it.
TEST_F(EngineTest, NoStepAllocatesAfterCreate) {
  auto fresh = LlamaModel::create(*loaded_, backend_);
  ASSERT_TRUE(fresh.ok()) << fresh.status().to_string();
  LlamaModel& model = **fresh;
  EXPECT_EQ(model.workspace_grows(), 0);
  EngineConfig config;
  config.num_blocks = 512;
  config.max_num_batched_tokens = 96;
  config.max_num_seqs = 48;
  auto engine = Engine::create(&model, tokenizer_, config);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  EXPECT_EQ(model.workspace_grows(), 1);
  const size_t reserved = model.workspace_bytes();
  const auto reqs = mixed_requests();
  const auto got = run_concurrently(**engine, reqs);
  int64_t tokens = 0;
  for (const Collected& c : got) tokens += c.last.usage.completion_tokens;
  EXPECT_GT(tokens, 64 * 8);
  EXPECT_EQ(model.workspace_grows(), 1) << "a step allocated";
  EXPECT_EQ(model.workspace_bytes(), reserved);
  // Logits are sized by the sequences of a step, not its tokens.
  const ModelConfig& mc = model.config();
  EXPECT_LT(reserved, size_t{96} * mc.vocab_size * sizeof(float) +
                          size_t{96} * 16 * mc.hidden_size * sizeof(float));
}

}  // namespace
}  // namespace pagoda
