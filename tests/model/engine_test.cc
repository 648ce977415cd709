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
#include "tests/model/engine_fixture.h"
#include "tests/model/stories_reference.h"

namespace pagoda {
namespace {

const std::string kRoot = PAGODA_SOURCE_DIR;

// Each with and without async scheduling (engine_async_test.cc has the rest of its tests).
TEST_F(EngineTest, ConcurrentRequestsMatchAloneWithPrefixCaching) {
  for (const bool async : {false, true}) {
    SCOPED_TRACE(async ? "async scheduling" : "sync");
    EngineConfig config;
    config.num_blocks = 512;
    config.max_num_batched_tokens = 96;  // forces chunked prefill mixed with decodes
    config.async_scheduling = async;
    int64_t preemptions = 0, cached = 0;
    expect_same_as_alone(config, &preemptions, &cached);
    EXPECT_GT(cached, 0) << "requests sharing the story prefix should hit the prefix cache";
  }
}

TEST_F(EngineTest, ConcurrentRequestsMatchAloneUnderForcedPreemption) {
  for (const bool async : {false, true}) {
    SCOPED_TRACE(async ? "async scheduling (preempting requests in flight)" : "sync");
    EngineConfig config;
    config.max_model_len = 256;
    config.num_blocks = 16;  // 256 tokens of KV for 64 requests: preemption is certain
    config.max_num_batched_tokens = 64;
    config.async_scheduling = async;
    int64_t preemptions = 0, cached = 0;
    expect_same_as_alone(config, &preemptions, &cached);
    EXPECT_GT(preemptions, 0);
  }
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
  for (const bool async : {false, true}) {
    SCOPED_TRACE(async ? "async scheduling" : "sync");
    EngineConfig config;
    config.async_scheduling = async;
    auto engine = Engine::create(model_, tokenizer_, config);
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
    // The engine publishes its state after each step; give it a few steps to run.
    Request probe = r;
    probe.params.max_tokens = 3;
    auto p = (*engine)->submit(probe);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(collect(*p->outputs).ids.size(), 3u);
    EXPECT_EQ((*engine)->stats().running, 0);
    EXPECT_EQ((*engine)->stats().kv_usage, 0.0);
  }
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
