// Log-probabilities through the Engine with the real stories260K model: greedy tokens are the
// top alternative of the raw logits, one entry per streamed token, logprobs do not change the
// tokens, and the values agree with an independent forward pass over the whole sequence
// (raw logits: no penalties, no temperature), also for sampled requests with penalties.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "tests/model/recording_backend.h"
#include "tests/model/request_stream.h"
#include "tests/model/stories_fixture.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

const std::string kRoot = PAGODA_SOURCE_DIR;

class EngineLogprobsTest : public StoriesModelTest {
 protected:
  using Collected = testing::Collected;

  // Every message's logprobs line up with its tokens (or are absent when not asked for).
  static Collected collect(OutputChannel& ch, int num_top) {
    return testing::collect(ch, std::chrono::seconds(60), [num_top](const RequestOutput& out) {
      if (num_top > 0) {
        EXPECT_EQ(out.logprobs.size(), out.new_token_ids.size());
        for (size_t i = 0; i < out.logprobs.size() && i < out.new_token_ids.size(); ++i) {
          EXPECT_EQ(out.logprobs[i].token_id, out.new_token_ids[i]);
        }
      } else {
        EXPECT_TRUE(out.logprobs.empty());
      }
    });
  }

  static std::vector<Collected> run_all(const std::vector<Request>& reqs,
                                        const EngineConfig& config = {}) {
    auto engine = Engine::create(model_, tokenizer_, config);
    EXPECT_TRUE(engine.ok()) << engine.status().to_string();
    if (!engine.ok()) return {};
    std::vector<RequestHandle> handles;
    for (const Request& r : reqs) {
      auto h = (*engine)->submit(r);
      EXPECT_TRUE(h.ok()) << h.status().to_string();
      if (!h.ok()) return {};
      handles.push_back(*h);
    }
    std::vector<Collected> got;
    for (size_t i = 0; i < reqs.size(); ++i) {
      got.push_back(collect(*handles[i].outputs, reqs[i].params.logprobs));
    }
    return got;
  }

  static std::vector<Request> requests(float temperature, int num_top) {
    std::mt19937 rng(17);
    std::vector<Request> reqs;
    reqs.push_back({});
    reqs.back().prompt_ids = tokenizer_->encode("Once upon a time", true).value();
    for (int i = 0; i < 5; ++i) {
      Request r;
      r.prompt_ids = {1};
      const int len = 1 + static_cast<int>(rng() % 40);
      for (int k = 0; k < len; ++k) r.prompt_ids.push_back(3 + static_cast<int>(rng() % 500));
      reqs.push_back(r);
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
      SamplingParams& p = reqs[i].params;
      p.temperature = temperature;
      p.max_tokens = 40;
      p.ignore_eos = true;
      p.logprobs = num_top;
      if (temperature > 0) {
        p.seed = 100 + i;
        p.repetition_penalty = 1.3f;
        p.frequency_penalty = 0.4f;
      }
    }
    return reqs;
  }

  // log_softmax in double of the model's logits at the positions that produced `output`, from
  // one forward pass over prompt + output: the raw distribution each token was drawn from.
  static std::vector<std::vector<double>> reference_logprobs(const std::vector<int>& prompt,
                                                             const std::vector<int>& output) {
    std::vector<int> all = prompt;
    all.insert(all.end(), output.begin(), output.end() - 1);  // the last token is never input
    const int n = static_cast<int>(all.size());
    const int block_size = 16;
    const int blocks = (n + block_size - 1) / block_size;
    auto cache = KvCache::create(backend_, model_->kv_cache_shape(blocks, block_size));
    EXPECT_TRUE(cache.ok());
    ForwardBatch b;
    b.token_ids.assign(all.begin(), all.end());
    for (int i = 0; i < n; ++i) {
      b.positions.push_back(i);
      b.slot_mapping.push_back(i);
    }
    b.max_blocks_per_seq = blocks;
    for (int i = 0; i < blocks; ++i) b.block_tables.push_back(i);
    b.seq_lens = {n};
    b.query_start = {0, n};
    for (int i = static_cast<int>(prompt.size()) - 1; i < n; ++i) b.sample_rows.push_back(i);
    std::vector<float> logits;
    const Status s = model_->forward(b, *cache, &logits);
    EXPECT_TRUE(s.ok()) << s.to_string();
    const int vocab = model_->config().vocab_size;
    std::vector<std::vector<double>> out;
    for (size_t r = 0; r < b.sample_rows.size() && s.ok(); ++r) {
      std::vector<double> row(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      const double max = *std::max_element(row.begin(), row.end());
      double sum = 0.0;
      for (double v : row) sum += std::exp(v - max);
      for (double& v : row) v -= max + std::log(sum);
      out.push_back(std::move(row));
    }
    return out;
  }
};

// The engine's batches differ from one whole-sequence forward (chunks, decodes, neighbours),
// so logits may differ in the last bits.
constexpr double kTol = 1e-3;

TEST_F(EngineLogprobsTest, GreedyTokensAreTheTopAlternative) {
  const std::vector<Request> with = requests(0.0f, 5);
  const std::vector<Request> without = requests(0.0f, 0);
  const auto got = run_all(with);
  const auto plain = run_all(without);
  ASSERT_EQ(got.size(), with.size());
  ASSERT_EQ(plain.size(), with.size());
  for (size_t i = 0; i < with.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i);
    EXPECT_EQ(got[i].ids, plain[i].ids);  // asking for logprobs changes no token
    ASSERT_EQ(got[i].ids.size(), 40u);
    ASSERT_EQ(got[i].logprobs.size(), got[i].ids.size());  // one per streamed token
    EXPECT_TRUE(plain[i].logprobs.empty());
    for (size_t t = 0; t < got[i].ids.size(); ++t) {
      const TokenLogprobs& lp = got[i].logprobs[t];
      ASSERT_EQ(lp.top.size(), 5u) << t;
      EXPECT_EQ(lp.token_id, got[i].ids[t]);
      EXPECT_EQ(lp.top[0].first, lp.token_id) << t;  // greedy = argmax of the raw logits
      EXPECT_EQ(lp.top[0].second, lp.logprob) << t;
      EXPECT_LE(lp.logprob, 0.0f);
      double mass = 0.0;
      for (size_t k = 0; k < lp.top.size(); ++k) {
        EXPECT_LE(lp.top[k].second, 0.0f);
        if (k > 0) {
          EXPECT_TRUE(
              lp.top[k - 1].second > lp.top[k].second ||
              (lp.top[k - 1].second == lp.top[k].second && lp.top[k - 1].first < lp.top[k].first))
              << t << " rank " << k;
        }
        mass += std::exp(static_cast<double>(lp.top[k].second));
      }
      EXPECT_LE(mass, 1.0 + 1e-5) << t;
      EXPECT_GT(mass, 0.0) << t;
    }
  }
}

// Against an independent forward pass, for greedy and for sampled requests whose penalties
// and temperature must not leak into the reported (raw) logprobs.
TEST_F(EngineLogprobsTest, ValuesMatchAWholeSequenceForward) {
  for (float temperature : {0.0f, 0.8f}) {
    SCOPED_TRACE(::testing::Message() << "temperature " << temperature);
    const std::vector<Request> with = requests(temperature, 3);
    const auto got = run_all(with);
    const auto plain = run_all(requests(temperature, 0));
    ASSERT_EQ(got.size(), with.size());
    for (size_t i = 0; i < with.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "request " << i);
      EXPECT_EQ(got[i].ids, plain[i].ids);
      ASSERT_EQ(got[i].logprobs.size(), got[i].ids.size());
      const auto ref = reference_logprobs(with[i].prompt_ids, got[i].ids);
      ASSERT_EQ(ref.size(), got[i].ids.size());
      for (size_t t = 0; t < ref.size(); ++t) {
        const TokenLogprobs& lp = got[i].logprobs[t];
        EXPECT_NEAR(lp.logprob, ref[t][lp.token_id], kTol) << t;
        std::vector<double> sorted = ref[t];
        std::sort(sorted.begin(), sorted.end(), std::greater<>());
        ASSERT_EQ(lp.top.size(), 3u);
        for (size_t k = 0; k < lp.top.size(); ++k) {
          EXPECT_NEAR(lp.top[k].second, ref[t][lp.top[k].first], kTol) << t << " rank " << k;
          EXPECT_NEAR(lp.top[k].second, sorted[k], kTol) << t << " rank " << k;
        }
        EXPECT_LE(lp.logprob, lp.top[0].second);
      }
    }
  }
}

// With device sampling the logprobs come from the backend's logprobs op (one row per request,
// the batch's largest k), without it from the host sampler over the copied-back logits: the
// same values, bit for bit on the CPU, also for requests that ask for fewer top entries than
// their neighbours (their top is the prefix of the row's, ordered as the host orders it).
TEST_F(EngineLogprobsTest, BackendAndHostLogprobsAgree) {
  for (float temperature : {0.0f, 0.8f}) {
    SCOPED_TRACE(::testing::Message() << "temperature " << temperature);
    std::vector<Request> reqs = requests(temperature, 3);
    const int tops[] = {1, 20, 0, 7, 2, 3};
    for (size_t i = 0; i < reqs.size(); ++i) reqs[i].params.logprobs = tops[i % 6];
    EngineConfig on, off;
    on.device_sampling = true;
    off.device_sampling = false;
    const auto backend = run_all(reqs, on);
    const auto host = run_all(reqs, off);
    ASSERT_EQ(backend.size(), reqs.size());
    ASSERT_EQ(host.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "request " << i);
      EXPECT_EQ(backend[i].ids, host[i].ids);
      ASSERT_EQ(backend[i].logprobs.size(), host[i].logprobs.size());
      if (reqs[i].params.logprobs == 0) {
        EXPECT_TRUE(backend[i].logprobs.empty());
      }
      for (size_t t = 0; t < backend[i].logprobs.size(); ++t) {
        const TokenLogprobs& a = backend[i].logprobs[t];
        const TokenLogprobs& b = host[i].logprobs[t];
        EXPECT_EQ(a.token_id, b.token_id) << t;
        EXPECT_EQ(a.logprob, b.logprob) << t;
        EXPECT_EQ(a.top, b.top) << t;
        EXPECT_EQ(a.top.size(), static_cast<size_t>(reqs[i].params.logprobs)) << t;
      }
    }
  }
}

// EngineConfig::max_logprobs caps what a request may ask for (refused at submit, naming the
// field), and 0 reserves none of the logprobs op's memory (its copy of the logits of every
// sequence of a step is the big part).
TEST_F(EngineLogprobsTest, MaxLogprobsIsEnforcedAndZeroReservesNoLogprobBuffers) {
  EngineConfig capped;
  capped.max_logprobs = 3;
  auto engine = Engine::create(model_, tokenizer_, capped);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  Request r;
  r.prompt_ids = {1, 400};
  r.params.max_tokens = 2;
  r.params.logprobs = 4;
  const auto refused = (*engine)->submit(r);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("max_logprobs of 3"), std::string::npos)
      << refused.status().message();
  r.params.logprobs = 3;
  const auto ok = (*engine)->submit(r);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ(collect(*ok->outputs, 3).logprobs.size(), 2u);
  engine->reset();

  EngineConfig bad;
  bad.max_logprobs = 21;
  EXPECT_EQ(Engine::create(model_, tokenizer_, bad).status().code(), StatusCode::kInvalidArgument);

  // Fresh models (a workspace only grows): the same engine with and without logprobs.
  size_t bytes[2] = {0, 0};
  for (int allowed : {0, 1}) {
    auto model = LlamaModel::create(*loaded_, backend_);
    ASSERT_TRUE(model.ok());
    EngineConfig c;
    c.max_logprobs = allowed;
    auto e = Engine::create(model->get(), tokenizer_, c);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    bytes[allowed] = (*model)->workspace_bytes();
    if (allowed == 0) {
      Request one;
      one.prompt_ids = {1, 400};
      one.params.logprobs = 1;
      EXPECT_EQ((*e)->submit(one).status().code(), StatusCode::kInvalidArgument);
    }
    e->reset();
  }
  const size_t seqs = static_cast<size_t>(EngineConfig{}.max_num_seqs);
  EXPECT_GE(bytes[1] - bytes[0], seqs * model_->config().vocab_size * sizeof(float));
}

// Without device sampling, greedy rows without penalties still take the backend's argmax and
// its logprobs op (no logits come back); sampled rows get theirs from the host sampler's logits.
TEST_F(EngineLogprobsTest, WithoutDeviceSamplingGreedyRowsUseTheLogprobsOp) {
  auto rec = std::make_unique<testing::RecordingBackend>(make_backend("cpu", 2).value());
  auto model = LlamaModel::create(*loaded_, rec.get());
  ASSERT_TRUE(model.ok());
  EngineConfig off;
  off.device_sampling = false;
  for (float temperature : {0.0f, 0.8f}) {
    SCOPED_TRACE(::testing::Message() << "temperature " << temperature);
    const std::vector<Request> reqs = requests(temperature, 3);
    const auto want = run_all(reqs);  // device sampling, on the fixture's model
    const int64_t calls = rec->logprobs_calls;
    auto engine = Engine::create(model->get(), tokenizer_, off);
    ASSERT_TRUE(engine.ok()) << engine.status().to_string();
    std::vector<RequestHandle> handles;
    for (const Request& r : reqs) handles.push_back((*engine)->submit(r).value());
    for (size_t i = 0; i < reqs.size(); ++i) {
      const Collected got = collect(*handles[i].outputs, 3);
      EXPECT_EQ(got.ids, want[i].ids) << "request " << i;
      ASSERT_EQ(got.logprobs.size(), want[i].logprobs.size()) << "request " << i;
      for (size_t t = 0; t < got.logprobs.size(); ++t) {
        EXPECT_EQ(got.logprobs[t].logprob, want[i].logprobs[t].logprob) << i << " " << t;
        EXPECT_EQ(got.logprobs[t].top, want[i].logprobs[t].top) << i << " " << t;
      }
    }
    engine->reset();
    if (temperature > 0) {
      EXPECT_EQ(rec->logprobs_calls, calls) << "sampled rows' logprobs are the host's";
    } else {
      EXPECT_GT(rec->logprobs_calls, calls) << "greedy rows' logprobs are the backend's";
    }
  }
  model->reset();  // before its backend
}

TEST_F(EngineLogprobsTest, OutOfRangeIsRefusedAtSubmit) {
  auto engine = Engine::create(model_, tokenizer_, EngineConfig{});
  ASSERT_TRUE(engine.ok());
  Request r;
  r.prompt_ids = {1, 400};
  r.params.logprobs = 21;
  const auto h = (*engine)->submit(r);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(h.status().message().find("logprobs"), std::string::npos) << h.status().message();
  r.params.logprobs = 20;
  r.params.max_tokens = 3;
  const auto ok = (*engine)->submit(r);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  const Collected c = collect(*ok->outputs, 20);
  ASSERT_EQ(c.logprobs.size(), c.ids.size());
  for (const TokenLogprobs& lp : c.logprobs) EXPECT_EQ(lp.top.size(), 20u);
}

}  // namespace
}  // namespace pagoda
