// LlamaModel::launch/collect (forward() in two halves, for async scheduling), on stories260K.
// The model under test runs on RecordingBackend (tests/model/recording_backend.h), which, as a
// GPU stream would, delivers copy_to_host_async's data only at the next synchronizing call and
// poisons the destination until then; the reference is forward() on the plain CPU backend.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/backend_factory.h"
#include "kernels/cpu/sample.h"
#include "models/llama.h"
#include "tests/model/recording_backend.h"
#include "tests/model/stories_fixture.h"

namespace pagoda {
namespace {

using testing::decode_rows;
using testing::RecordingBackend;

// Three tokens of one sequence in block 30, two of them sampled (R = 2, T != B: never a graph).
ForwardBatch prefill_rows(int step) {
  ForwardBatch b;
  b.token_ids = {1, 403 + step % 50, 407};
  b.positions = {0, 1, 2};
  b.slot_mapping = {480, 481, 482};
  b.max_blocks_per_seq = 1;
  b.block_tables = {30};
  b.seq_lens = {3};
  b.query_start = {0, 3};
  b.sample_rows = {2, 0};
  return b;
}

// Device sampling for every sample row (seeded), with penalty tables when asked.
void add_sampling(ForwardBatch& b, bool penalties, int salt) {
  const int R = static_cast<int>(b.sample_rows.size());
  for (int r = 0; r < R; ++r) {
    SampleRowParams p;
    p.temperature = 0.8f;
    p.top_k = 50;
    p.seed_lo = static_cast<uint32_t>(17 + r + 31 * salt);
    p.position_lo = static_cast<uint32_t>(b.positions[b.sample_rows[r]] + 1);
    if (penalties) p.repetition_penalty = 1.4f;
    b.sample_params.push_back(p);
  }
  if (penalties) {
    b.penalty_start.push_back(0);
    for (int r = 0; r < R; ++r) {  // row r penalizes its own token and token 7 + r
      b.penalty_ids.push_back(b.token_ids[b.sample_rows[r]]);
      b.penalty_counts.push_back(1);
      if (b.token_ids[b.sample_rows[r]] != 7 + r) {
        b.penalty_ids.push_back(7 + r);
        b.penalty_counts.push_back(0);
      }
      b.penalty_start.push_back(static_cast<int32_t>(b.penalty_ids.size()));
    }
  }
}

class StepLaunchTest : public StoriesWeightsTest {
 protected:
  // A reference model (forward() on the CPU backend) and the model under test (launch/collect
  // on RecordingBackend, with decode graphs when `graphs`), each with a cache of its own.
  void make_models(bool graphs) {
    ref_cache_ = KvCache();  // what the old backends made goes before them
    cache_ = KvCache();
    ref_ = nullptr;
    model_ = nullptr;
    ref_backend_ = make_backend("cpu", 2).value();
    rec_ = std::make_unique<RecordingBackend>(make_backend("cpu", 2).value());
    ref_ = LlamaModel::create(*loaded_, ref_backend_.get()).value();
    model_ = LlamaModel::create(*loaded_, rec_.get()).value();
    if (graphs) {
      ASSERT_TRUE(model_->enable_decode_graphs({2, 4}, 4).ok());
    }
    ref_cache_ = KvCache::create(ref_backend_.get(), ref_->kv_cache_shape(32, 16)).value();
    cache_ = KvCache::create(rec_.get(), model_->kv_cache_shape(32, 16)).value();
  }
  void SetUp() override { make_models(false); }

  // The reference's logits and ids for `b` (ids only when `want_ids`).
  void reference(const ForwardBatch& b, bool want_ids, std::vector<float>* logits,
                 std::vector<int32_t>* ids) {
    const Status s = ref_->forward(b, ref_cache_, logits, want_ids ? ids : nullptr);
    ASSERT_TRUE(s.ok()) << s.to_string();
  }

  int64_t vocab() const { return ref_->config().vocab_size; }

  std::unique_ptr<Backend> ref_backend_;
  std::unique_ptr<RecordingBackend> rec_;
  // Declared after their backends: destroyed first.
  std::unique_ptr<LlamaModel> ref_, model_;
  KvCache ref_cache_, cache_;
};

// Every kind of step (greedy and sampled, with and without penalties; no, one or every logit
// row; ids wanted or not; prefill and decode), eagerly and through replayed decode graphs:
// launch() returns with the copies of the logits and ids still queued, without waiting for the
// device; collect() waits once and gives exactly the logits and ids forward() gives.
TEST_F(StepLaunchTest, LaunchAndCollectGiveWhatForwardGives) {
  for (bool graphs : {false, true}) {
    SCOPED_TRACE(graphs ? "decode graphs" : "eager");
    ASSERT_NO_FATAL_FAILURE(make_models(graphs));
    int step = 0;
    for (int kind = 0; kind < 3; ++kind) {  // greedy, sampled, sampled with penalties
      for (int logit_rows : {0, 1, -1}) {
        for (bool want_ids : {true, false}) {
          for (int B : {3, 1, 0}) {  // decodes of 3 rows (bucket 4), 1 row (bucket 2); prefill
            SCOPED_TRACE("step " + std::to_string(step) + " kind " + std::to_string(kind) +
                         " logit rows " + std::to_string(logit_rows) + " ids " +
                         std::to_string(want_ids) + " B " + std::to_string(B));
            ForwardBatch b = B > 0 ? decode_rows(B, step) : prefill_rows(step);
            ++step;
            b.num_logit_rows = logit_rows;
            if (kind > 0) add_sampling(b, kind == 2, step);
            std::vector<float> want_logits;
            std::vector<int32_t> want;
            ASSERT_NO_FATAL_FAILURE(reference(b, want_ids, &want_logits, &want));
            if (want_ids) {
              ASSERT_EQ(want.size(), b.sample_rows.size());
            }

            const int64_t syncs0 = rec_->syncs;
            const Status launched = model_->launch(b, cache_, want_ids);
            ASSERT_TRUE(launched.ok()) << launched.to_string();
            EXPECT_TRUE(model_->step_in_flight());
            EXPECT_EQ(rec_->syncs, syncs0) << "launch waited for the device";
            // The logits (when any row wants them) and the ids, both still queued.
            EXPECT_EQ(rec_->pending_downloads(),
                      (want_logits.empty() ? 0u : 1u) + (want_ids ? 1u : 0u));

            std::vector<float> logits = {1.5f};  // whatever was there goes
            std::vector<int32_t> ids = {-7};
            const Status collected = model_->collect(&logits, &ids);
            ASSERT_TRUE(collected.ok()) << collected.to_string();
            EXPECT_FALSE(model_->step_in_flight());
            EXPECT_EQ(rec_->syncs, syncs0 + 1);
            EXPECT_EQ(rec_->pending_downloads(), 0u);
            EXPECT_EQ(logits, want_logits);  // read after the wait: poison before it
            EXPECT_EQ(ids, want);            // empty when no ids were wanted
          }
        }
      }
    }
    const LlamaModel::GraphStats st = model_->graph_stats();
    if (graphs) {
      EXPECT_EQ(st.captures, 2);  // buckets 4 and 2
      EXPECT_GT(st.replays, 20);
    } else {
      EXPECT_EQ(st.captures + st.replays, 0);
    }
  }
}

// Rows that ask for logprobs get them from the backend's logprobs op, for the token this step
// picks (argmax or sampled, with penalties), on the logits as they were before the sample op
// (which poisons them here, as a GPU overwrites them): the reference's logits through the same
// rule (kernels/cpu/sample.h row_logprobs), bit for bit, eagerly and through decode graphs, with
// logit rows before them or not.
TEST_F(StepLaunchTest, LogprobRowsAreComputedOnTheBackendForTheirTokens) {
  for (bool graphs : {false, true}) {
    SCOPED_TRACE(graphs ? "decode graphs" : "eager");
    ASSERT_NO_FATAL_FAILURE(make_models(graphs));
    int step = 0;
    for (int kind = 0; kind < 3; ++kind) {  // greedy, sampled, sampled with penalties
      for (int logit_rows : {0, 1}) {
        for (int top : {0, 3, 20}) {
          for (int B : {3, 1, 0}) {
            SCOPED_TRACE("kind " + std::to_string(kind) + " logit rows " +
                         std::to_string(logit_rows) + " top " + std::to_string(top) + " B " +
                         std::to_string(B));
            ForwardBatch b = B > 0 ? decode_rows(B, step) : prefill_rows(step);
            ++step;
            if (kind > 0) add_sampling(b, kind == 2, step);
            const int R = static_cast<int>(b.sample_rows.size());
            const int L = std::min(logit_rows, R - 1);  // at least one logprob row
            std::vector<float> all_logits;
            std::vector<int32_t> want_ids;
            ForwardBatch all = b;
            all.num_logit_rows = -1;
            ASSERT_NO_FATAL_FAILURE(reference(all, true, &all_logits, &want_ids));
            b.num_logit_rows = L;
            b.num_logprob_rows = R - L;
            b.num_top_logprobs = top;

            ASSERT_TRUE(model_->launch(b, cache_, true).ok());
            std::vector<float> logits;
            std::vector<int32_t> ids;
            StepLogprobs lp;
            lp.rows = -1;
            ASSERT_TRUE(model_->collect(&logits, &ids, &lp).ok());
            EXPECT_EQ(ids, want_ids);
            EXPECT_EQ(logits,
                      std::vector<float>(all_logits.begin(), all_logits.begin() + L * vocab()));
            ASSERT_EQ(lp.rows, R - L);
            ASSERT_EQ(lp.top, top);
            ASSERT_EQ(lp.token_logprobs.size(), static_cast<size_t>(R - L));
            ASSERT_EQ(lp.top_ids.size(), static_cast<size_t>((R - L) * top));
            ASSERT_EQ(lp.top_logprobs.size(), static_cast<size_t>((R - L) * top));
            cpu::SampleScratch scratch;
            for (int j = 0; j < R - L; ++j) {
              float token_lp = 0.0f;
              std::vector<int32_t> top_ids(top);
              std::vector<float> top_lp(top);
              cpu::row_logprobs({all_logits.data() + (L + j) * vocab(), size_t(vocab())},
                                want_ids[L + j], top, scratch, &token_lp, top_ids.data(),
                                top_lp.data());
              EXPECT_EQ(lp.token_logprobs[j], token_lp) << "row " << j;
              EXPECT_EQ(std::vector<int32_t>(lp.top_ids.begin() + j * top,
                                             lp.top_ids.begin() + (j + 1) * top),
                        top_ids)
                  << "row " << j;
              EXPECT_EQ(std::vector<float>(lp.top_logprobs.begin() + j * top,
                                           lp.top_logprobs.begin() + (j + 1) * top),
                        top_lp)
                  << "row " << j;
            }
          }
        }
      }
    }
  }
}

// A batch whose logprob rows do not fit, or that asks for too many top entries or for logprobs
// without the tokens, is refused before anything is queued.
TEST_F(StepLaunchTest, BadLogprobRowsAreRefused) {
  ForwardBatch b = decode_rows(3, 0);
  const int64_t uploads = rec_->sync_uploads + rec_->async_uploads;
  b.num_logit_rows = 1;
  b.num_logprob_rows = 3;  // 1 + 3 > R = 3
  EXPECT_EQ(model_->launch(b, cache_, true).code(), StatusCode::kInvalidArgument);
  b.num_logprob_rows = 2;
  b.num_top_logprobs = kMaxTopLogprobs + 1;
  EXPECT_EQ(model_->launch(b, cache_, true).code(), StatusCode::kInvalidArgument);
  b.num_top_logprobs = 2;
  EXPECT_EQ(model_->launch(b, cache_, false).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(model_->step_in_flight());
  // Refused by the batch checks: not even the step's inputs went up.
  EXPECT_EQ(rec_->sync_uploads + rec_->async_uploads, uploads);
  EXPECT_TRUE(model_->launch(b, cache_, true).ok());
  EXPECT_TRUE(model_->collect(nullptr, nullptr).ok());
}

// The ids come back into staging memory (RecordingBackend refuses any other destination) and
// are there only after collect() has waited: right after launch the staging bytes are still
// poison, so a launch or collect that read them before synchronizing would return garbage.
TEST_F(StepLaunchTest, IdsAreReadFromStagingOnlyAfterTheStepIsWaitedFor) {
  for (bool graphs : {false, true}) {
    SCOPED_TRACE(graphs ? "decode graphs" : "eager");
    ASSERT_NO_FATAL_FAILURE(make_models(graphs));
    for (int step = 0; step < 3; ++step) {  // with graphs: eager + capture, then replays
      ForwardBatch b = decode_rows(3, step);
      b.num_logit_rows = 0;
      add_sampling(b, step == 1, step);
      std::vector<float> want_logits, logits;
      std::vector<int32_t> want, ids;
      ASSERT_NO_FATAL_FAILURE(reference(b, true, &want_logits, &want));
      ASSERT_TRUE(model_->launch(b, cache_, true).ok());
      ASSERT_EQ(rec_->pending_downloads(), 1u);
      const auto* staged = static_cast<const unsigned char*>(rec_->last_download_dst());
      ASSERT_NE(staged, nullptr);
      for (size_t i = 0; i < 3 * sizeof(int32_t); ++i)
        ASSERT_EQ(staged[i], RecordingBackend::kPoison) << "byte " << i;
      ASSERT_TRUE(model_->collect(&logits, &ids).ok());
      EXPECT_EQ(ids, want) << "step " << step;
    }
  }
  // The backend's own check: a destination that is not staging memory is refused.
  int32_t local = 0;
  auto dev = rec_->allocate(sizeof(int32_t));
  ASSERT_TRUE(dev.ok());
  EXPECT_EQ(rec_->copy_to_host_async(&local, dev->data(), sizeof(local)).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(StepLaunchTest, CollectWithNothingInFlightFails) {
  std::vector<float> logits = {2.5f};
  std::vector<int32_t> ids = {5};
  Status s = model_->collect(&logits, &ids);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_TRUE(ids.empty());
  EXPECT_TRUE(logits.empty());
  ASSERT_TRUE(model_->launch(decode_rows(2, 0), cache_, true).ok());
  ASSERT_TRUE(model_->collect(&logits, &ids).ok());
  s = model_->collect(&logits, &ids);  // collected already
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_FALSE(model_->step_in_flight());
}

// One step in flight at most: a second launch is refused and changes nothing (the first is
// still collected with its own ids), and so is a reserve() that could move its buffers.
TEST_F(StepLaunchTest, ASecondLaunchIsRefusedAndTheFirstStaysCollectable) {
  ForwardBatch first = decode_rows(3, 0), second = decode_rows(3, 1);
  add_sampling(first, true, 1);
  first.num_logit_rows = 1;
  std::vector<float> want_logits, want_logits2, logits, logits2;
  std::vector<int32_t> want, want2, ids;
  ASSERT_NO_FATAL_FAILURE(reference(first, true, &want_logits, &want));
  ASSERT_NO_FATAL_FAILURE(reference(second, true, &want_logits2, &want2));

  ASSERT_TRUE(model_->launch(first, cache_, true).ok());
  Status s = model_->launch(second, cache_, true);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  s = model_->reserve(64, 8, 64, 8);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_TRUE(model_->step_in_flight());
  ASSERT_TRUE(model_->collect(&logits, &ids).ok());
  EXPECT_EQ(ids, want);
  EXPECT_EQ(logits, want_logits);

  ASSERT_TRUE(model_->launch(second, cache_, true).ok());
  ASSERT_TRUE(model_->collect(&logits2, &ids).ok());
  EXPECT_EQ(ids, want2);
  EXPECT_EQ(logits2, want_logits2);
}

// A launch that fails, before anything is queued (an invalid batch) or part-way (the sample op
// fails after the uploads and the layers), leaves no step in flight; the next one works.
TEST_F(StepLaunchTest, AFailedLaunchLeavesNothingInFlight) {
  std::vector<float> logits;
  std::vector<int32_t> ids;
  ForwardBatch bad = decode_rows(2, 0);
  bad.sample_rows = {5};  // beyond T
  Status s = model_->launch(bad, cache_, true);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_FALSE(model_->step_in_flight());
  EXPECT_EQ(model_->collect(&logits, &ids).code(), StatusCode::kFailedPrecondition);

  ForwardBatch b = decode_rows(3, 2);
  add_sampling(b, false, 3);
  std::vector<float> want_logits;
  std::vector<int32_t> want;
  ASSERT_NO_FATAL_FAILURE(reference(b, true, &want_logits, &want));
  rec_->fail_sample = true;
  s = model_->launch(b, cache_, true);
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.to_string();
  EXPECT_FALSE(model_->step_in_flight());
  EXPECT_EQ(model_->collect(&logits, &ids).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(rec_->pending_downloads(), 0u);

  // The same step again (its KV writes are the same): as if the failure had not happened.
  rec_->fail_sample = false;
  s = model_->launch(b, cache_, true);
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_TRUE(model_->collect(&logits, &ids).ok());
  EXPECT_EQ(ids, want);
  EXPECT_EQ(logits, want_logits);
}

// The outputs' staging memory is sized by reserve() (host memory: not in workspace_bytes, which
// counts exactly the device memory reserve() took), so a reserved step allocates nothing.
TEST_F(StepLaunchTest, AReservedStepAllocatesNothing) {
  const size_t device0 = rec_->allocated_bytes;
  const int64_t staging0 = rec_->staging_allocations;
  ASSERT_TRUE(model_->reserve(64, 8, 64, 8).ok());
  EXPECT_EQ(rec_->allocated_bytes - device0, model_->workspace_bytes());
  EXPECT_EQ(rec_->staging_allocations - staging0, 3);  // StepInputs', the logits', the ids'
  // Then logprob rows: their copy of the logits and results on the device, staging for those.
  const size_t without_logprobs = model_->workspace_bytes();
  ASSERT_TRUE(model_->reserve(64, 8, 64, 8, 0, 8).ok());
  EXPECT_EQ(rec_->allocated_bytes - device0, model_->workspace_bytes());
  EXPECT_GE(model_->workspace_bytes() - without_logprobs,
            size_t{8} * static_cast<size_t>(vocab()) * sizeof(float));
  EXPECT_EQ(rec_->staging_allocations - staging0, 4);
  const int64_t allocations = rec_->allocations + rec_->staging_allocations;
  for (int step = 0; step < 4; ++step) {
    ForwardBatch b = step % 2 == 0 ? decode_rows(8, step) : prefill_rows(step);
    if (step >= 2) add_sampling(b, true, step);
    if (step % 2 == 1 || step == 2) {  // every row with the most logprobs
      b.num_logit_rows = 0;
      b.num_logprob_rows = static_cast<int>(b.sample_rows.size());
      b.num_top_logprobs = kMaxTopLogprobs;
    }
    std::vector<float> logits;
    std::vector<int32_t> ids;
    ASSERT_TRUE(model_->launch(b, cache_, true).ok());
    ASSERT_TRUE(model_->collect(&logits, &ids).ok());
    EXPECT_EQ(ids.size(), b.sample_rows.size());
  }
  EXPECT_EQ(rec_->allocations + rec_->staging_allocations, allocations) << "a step allocated";
}

// forward() is launch + collect: no step is left in flight, with or without ids.
TEST_F(StepLaunchTest, ForwardLeavesNothingInFlight) {
  std::vector<float> logits;
  std::vector<int32_t> ids = {9};
  ASSERT_TRUE(model_->forward(decode_rows(2, 0), cache_, &logits, &ids).ok());
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_FALSE(model_->step_in_flight());
  ASSERT_TRUE(model_->forward(decode_rows(2, 1), cache_, &logits).ok());
  EXPECT_FALSE(model_->step_in_flight());
  EXPECT_EQ(rec_->pending_downloads(), 0u);
}

}  // namespace
}  // namespace pagoda
