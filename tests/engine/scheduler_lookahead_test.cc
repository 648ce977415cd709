// Lookahead (async scheduling) by tables: plan N+1 while plan N awaits its update(), as the
// engine does while step N runs on the device. Each case scripts the calls and checks every
// plan's rows {id, start, n, sample, input_pending}, what ended when, and when a lookahead
// preempts or waits.
#include <gtest/gtest.h>

#include <ostream>
#include <vector>

#include "engine/scheduler.h"

namespace pagoda {
namespace {

struct Row {
  RequestId id;
  int start, n;
  bool sample, pending;
  bool operator==(const Row&) const = default;
};
void PrintTo(const Row& r, std::ostream* os) {
  *os << "{id " << r.id << ", [" << r.start << ", +" << r.n << ")" << (r.sample ? " sample" : "")
      << (r.pending ? " pending" : "") << "}";
}

std::vector<Row> rows(const StepPlan& plan) {
  std::vector<Row> out;
  for (const ScheduledSeq& s : plan.seqs) {
    out.push_back({s.id, s.start, s.num_tokens, s.sample, s.input_pending});
    EXPECT_EQ(s.token_ids.size(), s.input_pending ? 0u : static_cast<size_t>(s.num_tokens));
  }
  return out;
}

std::vector<RequestId> ids(const std::vector<EndedRequest>& ended, EndReason want) {
  std::vector<RequestId> out;
  for (const EndedRequest& e : ended) {
    EXPECT_STREQ(end_reason_name(e.reason), end_reason_name(want)) << "request " << e.id;
    out.push_back(e.id);
  }
  return out;
}

Scheduler make(int block_size, int num_blocks, int budget, int max_model_len) {
  SchedulerConfig c;
  c.block_size = block_size;
  c.num_blocks = num_blocks;
  c.max_num_batched_tokens = budget;
  c.max_num_seqs = 4;
  c.max_model_len = max_model_len;
  c.enable_prefix_caching = false;
  return Scheduler(c);
}

void add(Scheduler& s, RequestId id, int prompt_len, int max_tokens) {
  NewRequest r;
  r.id = id;
  r.prompt.assign(prompt_len, static_cast<int32_t>(id));
  r.max_tokens = max_tokens;
  r.arrival = id;
  ASSERT_TRUE(s.add(std::move(r)).ok());
}

constexpr bool S = true, C = false;  // sample / chunk
constexpr bool P = true, K = false;  // input pending / known

// A prefill chunk continues and sampled requests decode their pending token; a request whose
// next token is surely its last (max_tokens) is not planned again, so nothing is wasted.
TEST(SchedulerLookaheadTest, ChunksContinueAndDecodesWaitForTheirToken) {
  Scheduler s = make(4, 4, 8, 16);
  add(s, 1, 3, 3);
  add(s, 2, 6, 2);
  const StepPlan p1 = s.schedule();
  EXPECT_EQ(rows(p1), (std::vector<Row>{{1, 0, 3, S, K}, {2, 0, 5, C, K}}));
  const StepPlan p2 = s.schedule();  // step 1 in flight
  EXPECT_EQ(rows(p2), (std::vector<Row>{{1, 3, 1, S, P}, {2, 5, 1, S, K}}));
  EXPECT_TRUE(p2.preempted.empty());
  s.check_invariants();
  EXPECT_TRUE(s.update(p1, std::vector<SampledToken>{{1, 7, false}}).empty());
  EXPECT_EQ(s.find(1)->tokens.back(), 7);  // the pending input of step 2, now known
  s.check_invariants();
  const StepPlan p3 = s.schedule();  // step 2 in flight
  EXPECT_EQ(rows(p3), (std::vector<Row>{{1, 4, 1, S, P}, {2, 6, 1, S, P}}));
  EXPECT_TRUE(s.update(p2, std::vector<SampledToken>{{1, 8, false}, {2, 9, false}}).empty());
  const StepPlan p4 = s.schedule();  // step 3 in flight: both end after it
  EXPECT_TRUE(p4.empty());
  EXPECT_EQ(ids(s.update(p3, std::vector<SampledToken>{{1, 10, false}, {2, 11, false}}),
                EndReason::kMaxTokens),
            (std::vector<RequestId>{1, 2}));
  EXPECT_FALSE(s.has_unfinished());
  EXPECT_EQ(s.kv().num_free(), 4);
}

// A stop only update() learns: the lookahead row was planned for nothing, and update() of its
// plan skips it (no token is owed for it).
TEST(SchedulerLookaheadTest, AStopAtTheRunningStepWastesOneRow) {
  Scheduler s = make(4, 4, 8, 16);
  add(s, 1, 2, 5);
  add(s, 2, 2, 5);
  const StepPlan p1 = s.schedule();
  const StepPlan p2 = s.schedule();
  EXPECT_EQ(rows(p2), (std::vector<Row>{{1, 2, 1, S, P}, {2, 2, 1, S, P}}));
  EXPECT_EQ(
      ids(s.update(p1, std::vector<SampledToken>{{1, 3, true}, {2, 4, false}}), EndReason::kStop),
      (std::vector<RequestId>{1}));
  EXPECT_EQ(s.find(1), nullptr);
  s.check_invariants();
  EXPECT_TRUE(s.update(p2, std::vector<SampledToken>{{2, 5, false}}).empty());
  EXPECT_EQ(s.find(2)->tokens, (std::vector<int32_t>{2, 2, 4, 5}));
  s.check_invariants();
}

// A lookahead preempts as a normal plan does, also a request the running plan computes: that
// work is dropped (planned_in() turns false, update() skips it and its token), and after it
// resumes it recomputes its tokens and samples that token again.
TEST(SchedulerLookaheadTest, PreemptingARequestInFlightDropsWhatItsStepComputes) {
  Scheduler s = make(4, 3, 16, 12);
  add(s, 1, 4, 8);
  add(s, 2, 4, 8);
  const StepPlan p1 = s.schedule();
  EXPECT_EQ(rows(p1), (std::vector<Row>{{1, 0, 4, S, K}, {2, 0, 4, S, K}}));
  const StepPlan p2 = s.schedule();  // 1 takes the last free block; 2, last in order, yields
  EXPECT_EQ(rows(p2), (std::vector<Row>{{1, 4, 1, S, P}}));
  EXPECT_EQ(p2.preempted, (std::vector<RequestId>{2}));
  EXPECT_TRUE(s.planned_in(1, p1.step));
  EXPECT_FALSE(s.planned_in(2, p1.step));
  s.check_invariants();
  // Step 1 comes back with a token for both: 2's is dropped.
  EXPECT_TRUE(s.update(p1, std::vector<SampledToken>{{1, 5, false}, {2, 6, false}}).empty());
  EXPECT_EQ(s.find(1)->tokens, (std::vector<int32_t>{1, 1, 1, 1, 5}));
  EXPECT_EQ(s.find(2)->tokens, (std::vector<int32_t>{2, 2, 2, 2}));
  EXPECT_EQ(s.find(2)->num_computed, 0);
  s.check_invariants();
  EXPECT_TRUE(s.update(p2, std::vector<SampledToken>{{1, 7, false}}).empty());
  s.check_invariants();
  // Nothing in flight now: 2 comes back (the block it gave up is free) and recomputes its
  // prompt; the token it samples is the one dropped above.
  const StepPlan p3 = s.schedule();
  ASSERT_EQ(rows(p3), (std::vector<Row>{{1, 5, 1, S, K}, {2, 0, 4, S, K}}));
  EXPECT_TRUE(p3.seqs[1].resumed);
  EXPECT_TRUE(p3.preempted.empty());
  EXPECT_EQ(
      ids(s.update(p3, std::vector<SampledToken>{{1, 9, true}, {2, 6, false}}), EndReason::kStop),
      (std::vector<RequestId>{1}));
  EXPECT_EQ(s.find(2)->tokens, (std::vector<int32_t>{2, 2, 2, 2, 6}));
  s.check_invariants();
}

// Out of blocks while a request that the running plan surely ends (max_tokens) still holds
// some, a lookahead leaves the request that needs a block out instead of preempting anyone
// (a preemption would recompute a whole context; the blocks are free at the next plan); a
// request after it that needs no new block still runs, and nobody is admitted meanwhile.
TEST(SchedulerLookaheadTest, OutOfBlocksItWaitsForThoseOfARequestSurelyEnding) {
  Scheduler s = make(4, 3, 16, 12);
  add(s, 1, 4, 1);  // its first token is its last
  add(s, 2, 4, 8);
  add(s, 3, 2, 8);
  add(s, 4, 2, 8);  // waits: max_num_seqs would allow it, the blocks do not
  const StepPlan p1 = s.schedule();
  EXPECT_EQ(rows(p1), (std::vector<Row>{{1, 0, 4, S, K}, {2, 0, 4, S, K}, {3, 0, 2, S, K}}));
  const StepPlan p2 = s.schedule();  // step 1 in flight; 2 needs a block, 1 will free one
  EXPECT_EQ(rows(p2), (std::vector<Row>{{3, 2, 1, S, P}}));
  EXPECT_TRUE(p2.preempted.empty());
  EXPECT_TRUE(s.planned_in(2, p1.step));  // its step-1 token still counts
  s.check_invariants();
  EXPECT_EQ(
      ids(s.update(p1, std::vector<SampledToken>{{1, 5, false}, {2, 6, false}, {3, 7, false}}),
          EndReason::kMaxTokens),
      (std::vector<RequestId>{1}));
  EXPECT_EQ(s.find(2)->tokens, (std::vector<int32_t>{2, 2, 2, 2, 6}));
  s.check_invariants();
  // Step 2 in flight: 2 decodes its known token in the block 1 gave back; 3 its pending one.
  const StepPlan p3 = s.schedule();
  EXPECT_EQ(rows(p3), (std::vector<Row>{{2, 4, 1, S, K}, {3, 3, 1, S, P}}));
  EXPECT_TRUE(p3.preempted.empty());
  EXPECT_EQ(s.num_preemptions(), 0);
  s.check_invariants();
}

}  // namespace
}  // namespace pagoda
