// Decode steps as step graphs (models/decode_graphs.cc), on the CPU: a backend that records the
// ops queued between begin_capture() and end_capture() and replays them, as CUDA graphs do
// (capture runs nothing; replay reruns the recorded arguments, pointers and shapes unchanged:
// tests/model/recording_backend.h).
// The padded, replayed steps must give exactly what the eager steps give: logits, argmax ids,
// and whole generations through the Engine (greedy, seeded sampling, logprobs).
#include <gtest/gtest.h>

#include <random>

#include "engine/engine.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "tests/model/recording_backend.h"
#include "tests/model/request_stream.h"
#include "tests/model/stories_fixture.h"

namespace pagoda {
namespace {

using testing::decode_rows;
using testing::RecordingBackend;

class DecodeGraphTest : public StoriesWeightsTest {
 protected:
  void SetUp() override {
    eager_backend_ = make_backend("cpu", 2).value();
    graph_backend_ = std::make_unique<RecordingBackend>(make_backend("cpu", 2).value());
    eager_ = LlamaModel::create(*loaded_, eager_backend_.get()).value();
    graphed_ = LlamaModel::create(*loaded_, graph_backend_.get()).value();
  }

  std::unique_ptr<Backend> eager_backend_;
  std::unique_ptr<Backend> graph_backend_;
  std::unique_ptr<LlamaModel> eager_, graphed_;
};

TEST_F(DecodeGraphTest, PaddedReplayedStepsMatchEagerSteps) {
  ASSERT_TRUE(graphed_->enable_decode_graphs({2, 4, 8}, 6).ok());
  auto eager_cache = KvCache::create(eager_backend_.get(), eager_->kv_cache_shape(32, 16));
  auto graph_cache = KvCache::create(graph_backend_.get(), graphed_->kv_cache_shape(32, 16));
  ASSERT_TRUE(eager_cache.ok() && graph_cache.ok());
  for (int step = 0; step < 4; ++step) {
    for (int B : {3, 4, 1}) {  // buckets 4, 4, 2: captured once, then replayed
      ForwardBatch b = decode_rows(B, step * 3 + B);
      b.num_logit_rows = 1;  // one row wants logits; every row wants its argmax
      std::vector<float> want_logits, got_logits;
      std::vector<int32_t> want_ids, got_ids;
      ASSERT_TRUE(eager_->forward(b, *eager_cache, &want_logits, &want_ids).ok());
      const Status s = graphed_->forward(b, *graph_cache, &got_logits, &got_ids);
      ASSERT_TRUE(s.ok()) << s.to_string();
      EXPECT_EQ(got_ids, want_ids) << "B " << B << " step " << step;
      EXPECT_EQ(got_logits, want_logits) << "B " << B << " step " << step;
    }
  }
  const LlamaModel::GraphStats st = graphed_->graph_stats();
  EXPECT_EQ(st.captures, 2);  // buckets 4 and 2
  EXPECT_EQ(st.replays, 4 * 3 - 2);
  EXPECT_EQ(st.failures, 0);
  // Rows wider than the graph's block tables, or prefill rows, run eagerly and still agree.
  ForwardBatch prefill;
  prefill.token_ids = {1, 403, 407};
  prefill.positions = {0, 1, 2};
  prefill.slot_mapping = {480, 481, 482};
  prefill.max_blocks_per_seq = 1;
  prefill.block_tables = {30};
  prefill.seq_lens = {3};
  prefill.query_start = {0, 3};
  prefill.sample_rows = {2};
  std::vector<float> want, got;
  ASSERT_TRUE(eager_->forward(prefill, *eager_cache, &want).ok());
  ASSERT_TRUE(graphed_->forward(prefill, *graph_cache, &got).ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ(graphed_->graph_stats().replays, st.replays);
}

TEST_F(DecodeGraphTest, RecapturesWhenTheCacheMoves) {
  ASSERT_TRUE(graphed_->enable_decode_graphs({4}, 4).ok());
  // Two caches alive together (so their buffers differ), used A, B, then A again: each switch
  // recaptures, and the graphs always write into the cache of the step.
  std::vector<KvCache> eager_caches, graph_caches;
  for (int i = 0; i < 2; ++i) {
    auto e = KvCache::create(eager_backend_.get(), eager_->kv_cache_shape(16, 16));
    auto g = KvCache::create(graph_backend_.get(), graphed_->kv_cache_shape(16, 16));
    ASSERT_TRUE(e.ok() && g.ok());
    eager_caches.push_back(std::move(e).value());
    graph_caches.push_back(std::move(g).value());
  }
  int step = 0;
  for (int round : {0, 1, 0}) {
    for (int k = 0; k < 2; ++k, ++step) {
      const ForwardBatch b = decode_rows(3, step);
      std::vector<float> want, got;
      ASSERT_TRUE(eager_->forward(b, eager_caches[round], &want).ok());
      ASSERT_TRUE(graphed_->forward(b, graph_caches[round], &got).ok());
      EXPECT_EQ(got, want) << "cache " << round << " step " << step;
    }
  }
  EXPECT_EQ(graphed_->graph_stats().captures, 3);
  EXPECT_EQ(graphed_->graph_stats().replays, 3);
}

// A step's inputs go over in one asynchronous copy (two with penalty tables), not one
// synchronous copy per array (StepInputs), in eager and in replayed steps; with device sampling
// the ids match the eager model's.
TEST_F(DecodeGraphTest, EachStepUploadsItsInputsInOneOrTwoAsynchronousCopies) {
  auto* rec = static_cast<RecordingBackend*>(graph_backend_.get());
  ASSERT_TRUE(graphed_->enable_decode_graphs({4}, 4).ok());
  auto eager_cache = KvCache::create(eager_backend_.get(), eager_->kv_cache_shape(32, 16));
  auto graph_cache = KvCache::create(graph_backend_.get(), graphed_->kv_cache_shape(32, 16));
  ASSERT_TRUE(eager_cache.ok() && graph_cache.ok());
  ASSERT_TRUE(graphed_->reserve(64, 8, 64, 8).ok());
  for (int step = 0; step < 6; ++step) {
    for (bool penalties : {false, true}) {
      ForwardBatch b = decode_rows(3, 2 * step + penalties);
      b.num_logit_rows = 1;
      for (int r = 0; r < 3; ++r) {  // every row, the logits row too
        SampleRowParams p;
        p.temperature = 0.8f;
        p.top_k = 50;
        p.seed_lo = 17 + r;
        p.position_lo = static_cast<uint32_t>(b.positions[b.sample_rows[r]] + 1);
        if (penalties) p.repetition_penalty = 1.4f;
        b.sample_params.push_back(p);
      }
      if (penalties) {
        b.penalty_start = {0, 0, 2, 3};
        b.penalty_ids = {b.token_ids[0], 7, b.token_ids[1]};
        b.penalty_counts = {1, 0, 2};
      }
      std::vector<float> want_logits, got_logits;
      std::vector<int32_t> want_ids, got_ids;
      ASSERT_TRUE(eager_->forward(b, *eager_cache, &want_logits, &want_ids).ok());
      const int64_t sync0 = rec->sync_uploads, async0 = rec->async_uploads;
      const Status s = graphed_->forward(b, *graph_cache, &got_logits, &got_ids);
      ASSERT_TRUE(s.ok()) << s.to_string();
      EXPECT_EQ(rec->sync_uploads - sync0, 0) << "step " << step;
      EXPECT_EQ(rec->async_uploads - async0, penalties ? 2 : 1) << "step " << step;
      EXPECT_EQ(got_ids, want_ids) << "step " << step;
      EXPECT_EQ(got_ids.size(), 3u);
      EXPECT_EQ(got_logits, want_logits) << "step " << step;
    }
  }
  EXPECT_GT(graphed_->graph_stats().replays, 8);
  // A repeated penalty id is refused before anything runs.
  ForwardBatch bad = decode_rows(2, 0);
  bad.num_logit_rows = 0;
  bad.sample_params.resize(2);  // two rows sampled, row 0 with a repeated penalty id
  bad.penalty_start = {0, 2, 2};
  bad.penalty_ids = {5, 5};
  bad.penalty_counts = {0, 1};
  std::vector<float> logits;
  std::vector<int32_t> ids;
  const Status refused = graphed_->forward(bad, *graph_cache, &logits, &ids);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument) << refused.to_string();
  EXPECT_NE(refused.message().find("repeated"), std::string::npos) << refused.message();
}

// StepInputs lays a batch out where its views say, and never rewrites the staging buffer while
// copies from it may be in flight: an upload not marked done (a step that failed before its
// outputs came back) makes the next upload wait for the stream first.
TEST_F(DecodeGraphTest, StepInputsWaitForAnUnfinishedUploadBeforeRewritingStaging) {
  auto* rec = static_cast<RecordingBackend*>(graph_backend_.get());
  StepInputs in;
  bool moved = false;
  ASSERT_TRUE(in.reserve(rec, {8, 4, 16, 4, 8}, &moved).ok());
  EXPECT_TRUE(moved);
  ForwardBatch b = decode_rows(3, 1);
  b.num_logit_rows = 1;
  b.sample_params.resize(3);
  b.sample_params[1].top_k = 7;
  b.penalty_start = {0, 1, 3, 3};
  b.penalty_ids = {4, 9, 2};
  b.penalty_counts = {1, 0, 5};
  const int64_t syncs0 = rec->syncs;
  ASSERT_TRUE(in.upload(rec, b).ok());
  EXPECT_EQ(rec->syncs, syncs0);
  // The device side (host memory here) holds every array where its view points.
  const auto read = [](const TensorView& v) {
    const auto* p = static_cast<const int32_t*>(v.data);
    return std::vector<int32_t>(p, p + v.numel());
  };
  EXPECT_EQ(read(in.token_ids(3)), b.token_ids);
  EXPECT_EQ(read(in.positions(3)), b.positions);
  EXPECT_EQ(read(in.slot_mapping(3)), b.slot_mapping);
  EXPECT_EQ(read(in.seq_lens(3)), b.seq_lens);
  EXPECT_EQ(read(in.query_start(4)), b.query_start);
  EXPECT_EQ(read(in.sample_rows(3)), b.sample_rows);
  EXPECT_EQ(read(in.block_tables(3, 4)), b.block_tables);
  EXPECT_EQ(read(in.penalty_start(4)), b.penalty_start);
  EXPECT_EQ(read(in.penalty_ids(3)), b.penalty_ids);
  EXPECT_EQ(read(in.penalty_counts(3)), b.penalty_counts);
  EXPECT_EQ(read(in.sample_params(2))[kSampleRowWords + 1], 7);  // row 1's top_k
  ASSERT_TRUE(in.upload(rec, b).ok());  // the last one was not marked done: wait first
  EXPECT_EQ(rec->syncs, syncs0 + 1);
  in.mark_done();
  ASSERT_TRUE(in.upload(rec, b).ok());
  EXPECT_EQ(rec->syncs, syncs0 + 1);
}

TEST_F(DecodeGraphTest, BackendsWithoutGraphsStayEager) {
  ASSERT_TRUE(eager_->enable_decode_graphs({1, 2}, 4).ok());
  auto cache = KvCache::create(eager_backend_.get(), eager_->kv_cache_shape(16, 16));
  ASSERT_TRUE(cache.ok());
  std::vector<float> logits;
  ASSERT_TRUE(eager_->forward(decode_rows(2, 0), *cache, &logits).ok());
  EXPECT_EQ(eager_->graph_stats().captures, 0);
  EXPECT_FALSE(graphed_->enable_decode_graphs({2, 2}, 4).ok());
  EXPECT_FALSE(graphed_->enable_decode_graphs({}, 4).ok());
}

struct Generation {
  std::vector<int> ids;
  std::vector<TokenLogprobs> logprobs;
};

std::vector<Generation> generate(LlamaModel* model, bool graphs, const std::vector<Request>& reqs,
                                 bool async = false, EngineStats* stats = nullptr) {
  EngineConfig config;
  config.async_scheduling = async;
  config.num_blocks = 256;
  config.max_num_batched_tokens = 64;  // chunked prefill beside decodes: mixed steps stay eager
  config.max_num_seqs = 24;
  config.decode_graphs = graphs;
  auto engine = Engine::create(model, nullptr, config);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  if (!engine.ok()) return {};
  std::vector<RequestHandle> handles;
  for (const Request& r : reqs) handles.push_back((*engine)->submit(r).value());
  std::vector<Generation> out;
  for (RequestHandle& h : handles) {
    testing::Collected c = testing::collect(*h.outputs);
    out.push_back({std::move(c.ids), std::move(c.logprobs)});
  }
  // The engine publishes the model's graph counters (what /metrics shows).
  const EngineStats st = (*engine)->stats();
  EXPECT_EQ(st.graph_replays, model->graph_stats().replays);
  EXPECT_EQ(st.graph_captures, model->graph_stats().captures);
  if (stats != nullptr) *stats = st;
  return out;
}

// 40 requests: prompts of 1..90 tokens, greedy, seeded top-k, logprobs and penalties.
std::vector<Request> graph_requests() {
  std::mt19937 rng(9);
  std::vector<Request> reqs;
  for (int i = 0; i < 40; ++i) {
    Request r;
    r.prompt_ids = {1};
    const int len = static_cast<int>(rng() % 90);
    for (int k = 0; k < len; ++k) r.prompt_ids.push_back(3 + static_cast<int>(rng() % 500));
    r.params.max_tokens = 5 + static_cast<int>(rng() % 40);
    r.params.ignore_eos = true;
    if (i % 3 == 1) {
      r.params.temperature = 0.9f;
      r.params.top_k = 40;
      r.params.seed = 77 + i;
    } else {
      r.params.temperature = 0.0f;
    }
    if (i % 5 == 0) r.params.logprobs = 3;
    if (i % 6 == 4) {  // penalties: the device sampler's tables, beside replayed graphs
      r.params.temperature = 0.7f;
      r.params.repetition_penalty = 1.3f;
      r.params.frequency_penalty = 0.2f;
      r.params.seed = 500 + i;
    }
    reqs.push_back(std::move(r));
  }
  return reqs;
}

void expect_same(const std::vector<Generation>& got, const std::vector<Generation>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].ids, want[i].ids) << "request " << i;
    ASSERT_EQ(got[i].logprobs.size(), want[i].logprobs.size()) << "request " << i;
    for (size_t t = 0; t < got[i].logprobs.size(); ++t) {
      EXPECT_EQ(got[i].logprobs[t].logprob, want[i].logprobs[t].logprob) << "request " << i;
      EXPECT_EQ(got[i].logprobs[t].top, want[i].logprobs[t].top) << "request " << i;
    }
  }
}

TEST_F(DecodeGraphTest, EngineWithGraphsGivesWhatTheEagerEngineGives) {
  const std::vector<Request> reqs = graph_requests();
  const std::vector<Generation> want = generate(eager_.get(), false, reqs);
  const std::vector<Generation> got = generate(graphed_.get(), true, reqs);
  expect_same(got, want);
  const LlamaModel::GraphStats st = graphed_->graph_stats();
  EXPECT_GT(st.captures, 0);
  EXPECT_GT(st.replays, 20) << "most decode steps should replay a graph";
  EXPECT_EQ(st.failures, 0);
}

// Async scheduling over the backend that holds device-to-host copies back until the next
// synchronize (as a GPU does): the engine reads a step's ids only once it has collected it,
// while the next step is already queued; with replayed graphs, stop ids and wasted rows.
TEST_F(DecodeGraphTest, AsyncEngineOnADeferringBackendGivesWhatTheSyncEngineGives) {
  std::vector<Request> reqs = graph_requests();
  for (size_t i = 0; i < reqs.size(); i += 2) reqs[i].params.stop_token_ids = {13, 29, 41};
  const std::vector<Generation> want = generate(eager_.get(), false, reqs);
  EngineStats st;
  const std::vector<Generation> got = generate(graphed_.get(), true, reqs, /*async=*/true, &st);
  expect_same(got, want);
  int stopped_early = 0;
  for (size_t i = 0; i < reqs.size(); ++i)
    stopped_early += static_cast<int>(want[i].ids.size()) < reqs[i].params.max_tokens;
  EXPECT_GT(stopped_early, 0) << "some requests should end at a stop id";
  EXPECT_GT(st.lookahead_steps, 20);
  EXPECT_GT(st.wasted_rows, 0);
  EXPECT_GT(graphed_->graph_stats().replays, 20);
}

}  // namespace
}  // namespace pagoda
