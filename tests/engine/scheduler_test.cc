// Table-driven scheduler tests: scripted arrivals, lengths, budgets and block counts, and the
// expected plan of every step as rows {step, id, start, n, sample}. A fake model makes the
// token sampled at position p of request id a fixed function of (id, p); the harness checks
// that every planned token id is the request's real token at that position (so a resumed
// request recomputes exactly its prompt + output) and that block tables cover the chunk.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <ostream>
#include <tuple>

namespace pagoda {
namespace {

constexpr bool kSample = true;  // the row's request samples a token after the step
constexpr bool kChunk = false;  // a partial prefill chunk

struct Row {
  uint64_t step;
  RequestId id;
  int start, n;
  bool sample;
  bool operator==(const Row&) const = default;
};
void PrintTo(const Row& r, std::ostream* os) {
  *os << "{step " << r.step << ", id " << r.id << ", [" << r.start << ", +" << r.n << ")"
      << (r.sample ? " sample" : "") << "}";
}

struct Event {  // step, id: preempted / aborted at that step
  uint64_t step;
  RequestId id;
  bool operator==(const Event&) const = default;
};
void PrintTo(const Event& e, std::ostream* os) {
  *os << "{step " << e.step << ", id " << e.id << "}";
}

struct Ended {
  uint64_t step;
  RequestId id;
  EndReason reason;
  bool operator==(const Ended&) const = default;
};
void PrintTo(const Ended& e, std::ostream* os) {
  *os << "{step " << e.step << ", id " << e.id << ", " << end_reason_name(e.reason) << "}";
}

int32_t fake_token(RequestId id, int pos) {
  return static_cast<int32_t>(id * 1000 + pos) % 30011;
}

std::vector<int32_t> make_prompt(RequestId id, int len) {
  std::vector<int32_t> p(len);
  for (int i = 0; i < len; ++i) p[i] = static_cast<int32_t>(100000 + id * 100 + i);
  return p;
}

SchedulerConfig config(int block_size, int num_blocks, int budget, int max_num_seqs,
                       int max_model_len, bool caching = false,
                       SchedulingPolicy policy = SchedulingPolicy::kFcfs) {
  SchedulerConfig c;
  c.block_size = block_size;
  c.num_blocks = num_blocks;
  c.max_num_batched_tokens = budget;
  c.max_num_seqs = max_num_seqs;
  c.max_model_len = max_model_len;
  c.enable_prefix_caching = caching;
  c.policy = policy;
  return c;
}

class Sim {
 public:
  explicit Sim(const SchedulerConfig& c) : sched(c) {}

  void add(RequestId id, std::vector<int32_t> prompt, int max_tokens, int priority = 0,
           std::string salt = {}, int64_t arrival = -1) {
    prompts[id] = prompt;
    NewRequest r;
    r.id = id;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.priority = priority;
    r.arrival = arrival >= 0 ? arrival : next_arrival_++;
    r.cache_salt = std::move(salt);
    ASSERT_TRUE(sched.add(std::move(r)).ok());
  }
  void add_len(RequestId id, int prompt_len, int max_tokens, int priority = 0) {
    add(id, make_prompt(id, prompt_len), max_tokens, priority);
  }

  int32_t token_at(RequestId id, int pos) {
    const auto& p = prompts[id];
    return pos < static_cast<int>(p.size()) ? p[pos] : outputs[id][pos - p.size()];
  }

  StepPlan step() {
    StepPlan plan = sched.schedule();
    for (RequestId id : plan.preempted) preempted.push_back({plan.step, id});
    for (RequestId id : plan.aborted) aborted.push_back({plan.step, id});
    std::vector<SampledToken> sampled;
    for (const ScheduledSeq& s : plan.seqs) {
      rows.push_back({plan.step, s.id, s.start, s.num_tokens, s.sample});
      EXPECT_EQ(static_cast<int>(s.token_ids.size()), s.num_tokens);
      for (int j = 0; j < s.num_tokens; ++j)
        EXPECT_EQ(s.token_ids[j], token_at(s.id, s.start + j)) << "request " << s.id;
      EXPECT_EQ(static_cast<int>(s.block_table.size()),
                sched.kv().blocks_for(s.start + s.num_tokens));
      if (s.admitted) cached[s.id] = s.num_cached_tokens;
      if (!s.sample) continue;
      const int pos = s.start + s.num_tokens;  // position of the new token
      const int32_t t = fake_token(s.id, pos);
      outputs[s.id].push_back(t);
      const auto it = stop_at.find(s.id);
      const bool stop = it != stop_at.end() && it->second == static_cast<int>(outputs[s.id].size());
      sampled.push_back({s.id, t, stop});
    }
    if (after_schedule) after_schedule(*this, plan);
    for (const EndedRequest& e : sched.update(plan, sampled))
      ended.push_back({plan.step, e.id, e.reason});
    sched.check_invariants();
    return plan;
  }
  void run(int steps) {
    for (int i = 0; i < steps; ++i) step();
  }
  void run_to_end(int max_steps = 1000) {
    for (int i = 0; i < max_steps && sched.has_unfinished(); ++i) step();
    ASSERT_FALSE(sched.has_unfinished());
    EXPECT_EQ(sched.kv().num_free(), sched.kv().num_blocks());
  }
  // The output a request would produce alone: fake tokens at positions prompt_len, ...
  std::vector<int32_t> expected_output(RequestId id, int n) {
    std::vector<int32_t> out;
    const int p = static_cast<int>(prompts[id].size());
    for (int i = 0; i < n; ++i) out.push_back(fake_token(id, p + i));
    return out;
  }

  Scheduler sched;
  std::map<RequestId, std::vector<int32_t>> prompts, outputs;
  std::map<RequestId, int> stop_at;  // output count whose token the engine calls a stop
  std::map<RequestId, int> cached;   // num_cached_tokens at the latest admission
  std::function<void(Sim&, const StepPlan&)> after_schedule;
  std::vector<Row> rows;
  std::vector<Event> preempted, aborted;
  std::vector<Ended> ended;

 private:
  int64_t next_arrival_ = 0;
};

TEST(SchedulerTest, ChunkedPrefillThenDecode) {
  Sim sim(config(4, 16, /*budget=*/8, 4, 64));
  sim.add_len(1, 20, 3);
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 8, kChunk},
                          {2, 1, 8, 8, kChunk},
                          {3, 1, 16, 4, kSample},
                          {4, 1, 20, 1, kSample},
                          {5, 1, 21, 1, kSample},
                      }));
  EXPECT_EQ(sim.ended, (std::vector<Ended>{{5, 1, EndReason::kMaxTokens}}));
  EXPECT_EQ(sim.outputs[1], sim.expected_output(1, 3));
}

TEST(SchedulerTest, DecodesMixWithPrefillChunksUnderTheBudget) {
  Sim sim(config(4, 16, /*budget=*/8, 4, 64));
  sim.add_len(1, 4, 4);
  sim.step();
  sim.add_len(2, 12, 2);  // arrives while 1 decodes
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 4, kSample},
                          {2, 1, 4, 1, kSample},
                          {2, 2, 0, 7, kChunk},  // the rest of the budget
                          {3, 1, 5, 1, kSample},
                          {3, 2, 7, 5, kSample},
                          {4, 1, 6, 1, kSample},
                          {4, 2, 12, 1, kSample},
                      }));
  EXPECT_EQ(sim.ended,
            (std::vector<Ended>{{4, 1, EndReason::kMaxTokens}, {4, 2, EndReason::kMaxTokens}}));
}

TEST(SchedulerTest, TokenBudgetSplitsAdmissions) {
  Sim sim(config(4, 16, /*budget=*/4, 8, 64));
  sim.add_len(1, 3, 2);
  sim.add_len(2, 3, 2);
  sim.add_len(3, 2, 1);
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 3, kSample},
                          {1, 2, 0, 1, kChunk},
                          {2, 1, 3, 1, kSample},
                          {2, 2, 1, 2, kSample},
                          {2, 3, 0, 1, kChunk},
                          {3, 2, 3, 1, kSample},
                          {3, 3, 1, 1, kSample},
                      }));
}

TEST(SchedulerTest, MaxNumSeqsHoldsBackAdmission) {
  Sim sim(config(4, 16, /*budget=*/100, /*max_num_seqs=*/2, 64));
  sim.add_len(1, 3, 2);
  sim.add_len(2, 3, 3);
  sim.add_len(3, 2, 1);
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 3, kSample},
                          {1, 2, 0, 3, kSample},
                          {2, 1, 3, 1, kSample},  // 1 ends here, but 3 waits: 2 still run
                          {2, 2, 3, 1, kSample},
                          {3, 2, 4, 1, kSample},
                          {3, 3, 0, 2, kSample},
                      }));
}

// 4 blocks of 2 tokens: two requests of 3 prompt tokens fill the pool after two decodes.
// Request 1 (earlier) needs a third block; the victim is the latest arrival, request 2, which
// resumes when 1 ends, recomputing prompt + its 2 earlier outputs, and continues the same stream.
TEST(SchedulerTest, PreemptsLatestArrivalAndResumesTheSameTokens) {
  Sim sim(config(2, 4, 16, 8, /*max_model_len=*/8));
  sim.add_len(1, 3, 5);
  sim.add_len(2, 3, 5);
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 3, kSample},
                          {1, 2, 0, 3, kSample},
                          {2, 1, 3, 1, kSample},
                          {2, 2, 3, 1, kSample},
                          {3, 1, 4, 1, kSample},  // 2 preempted for 1's third block
                          {4, 1, 5, 1, kSample},  // 2 waits: it needs 3 blocks, 1 is free
                          {5, 1, 6, 1, kSample},
                          {6, 2, 0, 5, kSample},  // recomputes prompt + 2 outputs
                          {7, 2, 5, 1, kSample},
                          {8, 2, 6, 1, kSample},
                      }));
  EXPECT_EQ(sim.preempted, (std::vector<Event>{{3, 2}}));
  EXPECT_EQ(sim.sched.num_preemptions(), 1);
  EXPECT_EQ(sim.outputs[2], sim.expected_output(2, 5));
  EXPECT_EQ(sim.ended,
            (std::vector<Ended>{{5, 1, EndReason::kMaxTokens}, {8, 2, EndReason::kMaxTokens}}));
}

// Under the priority policy the victim is the least important running request, even though it
// arrived first; and admission goes by priority.
TEST(SchedulerTest, PriorityPolicyPicksLowestPriorityVictim) {
  Sim sim(config(2, 4, 16, 8, 8, false, SchedulingPolicy::kPriority));
  sim.add_len(1, 3, 3, /*priority=*/1);
  sim.add_len(2, 3, 3, /*priority=*/0);
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 2, 0, 3, kSample},
                          {1, 1, 0, 3, kSample},
                          {2, 2, 3, 1, kSample},
                          {2, 1, 3, 1, kSample},
                          {3, 2, 4, 1, kSample},  // 1 preempted although it arrived first
                          {4, 1, 0, 5, kSample},
                      }));
  EXPECT_EQ(sim.preempted, (std::vector<Event>{{3, 1}}));
  EXPECT_EQ(sim.outputs[1], sim.expected_output(1, 3));
}

// No admission in a step that preempted: the urgent request 3 fits once 2 is preempted at
// step 3, but waits for step 4 (as in vLLM, so a preemption is not undone by the same step).
TEST(SchedulerTest, NoAdmissionInAStepThatPreempted) {
  Sim sim(config(2, 4, 16, 8, 8, false, SchedulingPolicy::kPriority));
  sim.add_len(1, 3, 5, /*priority=*/1);
  sim.add_len(2, 3, 5, /*priority=*/2);
  sim.step();
  sim.add_len(3, 1, 1, /*priority=*/0);  // no free block until 2 is preempted
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 3, kSample},
                          {1, 2, 0, 3, kSample},
                          {2, 1, 3, 1, kSample},
                          {2, 2, 3, 1, kSample},
                          {3, 1, 4, 1, kSample},  // 2 preempted; 3 would fit but waits
                          {4, 1, 5, 1, kSample},
                          {4, 3, 0, 1, kSample},  // 3 is ahead of 2 in the waiting queue
                          {5, 1, 6, 1, kSample},
                          {6, 2, 0, 5, kSample},
                          {7, 2, 5, 1, kSample},
                          {8, 2, 6, 1, kSample},
                      }));
  EXPECT_EQ(sim.preempted, (std::vector<Event>{{3, 2}}));
}

// The request that needs a block is itself the last in policy order: it preempts itself.
TEST(SchedulerTest, RequesterPreemptsItselfWhenItIsTheVictim) {
  Sim sim(config(2, 4, 16, 8, 8));
  sim.add_len(1, 3, 3);
  sim.add_len(2, 4, 3);
  sim.run(3);
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 3, kSample},
                          {1, 2, 0, 4, kSample},
                          {2, 1, 3, 1, kSample},  // 2 needs a third block: preempts itself
                          {3, 1, 4, 1, kSample},  // 1 ends; 2 needs 3 blocks, 1 free
                      }));
  EXPECT_EQ(sim.preempted, (std::vector<Event>{{2, 2}}));
  sim.rows.clear();
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{{4, 2, 0, 5, kSample}, {5, 2, 5, 1, kSample}}));
  EXPECT_EQ(sim.outputs[2], sim.expected_output(2, 3));
}

TEST(SchedulerTest, AdmissionOrderFollowsPolicy) {
  for (const auto policy : {SchedulingPolicy::kFcfs, SchedulingPolicy::kPriority}) {
    Sim sim(config(4, 16, 100, /*max_num_seqs=*/1, 64, false, policy));
    sim.add(1, make_prompt(1, 2), 1, /*priority=*/2, {}, /*arrival=*/0);
    sim.add(2, make_prompt(2, 2), 1, 0, {}, 1);
    sim.add(3, make_prompt(3, 2), 1, 1, {}, 2);
    sim.add(4, make_prompt(4, 2), 1, 0, {}, 7);
    sim.add(5, make_prompt(5, 2), 1, 0, {}, 7);  // same arrival as 4: add order breaks the tie
    sim.add(6, make_prompt(6, 2), 1, 0, {}, 5);
    sim.run_to_end();
    std::vector<RequestId> order;
    for (const Row& r : sim.rows) order.push_back(r.id);
    if (policy == SchedulingPolicy::kFcfs) {
      EXPECT_EQ(order, (std::vector<RequestId>{1, 2, 3, 6, 4, 5}));
    } else {
      EXPECT_EQ(order, (std::vector<RequestId>{2, 6, 4, 5, 3, 1}));
    }
  }
}

TEST(SchedulerTest, AbortMidPrefillFreesBlocksAtTheNextStep) {
  Sim sim(config(4, 8, /*budget=*/4, 8, 32));
  sim.add_len(1, 12, 5);
  sim.add_len(2, 2, 1);
  sim.step();
  EXPECT_EQ(sim.sched.kv().num_free(), 7);
  ASSERT_TRUE(sim.sched.abort(1).ok());
  ASSERT_TRUE(sim.sched.abort(1).ok());   // repeated: harmless
  EXPECT_EQ(sim.sched.num_running(), 1);  // nothing happens before the next step
  sim.step();
  EXPECT_EQ(sim.rows, (std::vector<Row>{{1, 1, 0, 4, kChunk}, {2, 2, 0, 2, kSample}}));
  EXPECT_EQ(sim.aborted, (std::vector<Event>{{2, 1}}));
  EXPECT_EQ(sim.ended, (std::vector<Ended>{{2, 2, EndReason::kMaxTokens}}));
  EXPECT_EQ(sim.sched.kv().num_free(), 8);
  EXPECT_EQ(sim.sched.abort(1).code(), StatusCode::kNotFound);  // ended: once only
  EXPECT_EQ(sim.sched.num_ended(EndReason::kAborted), 1);
  EXPECT_FALSE(sim.sched.has_unfinished());
}

TEST(SchedulerTest, AbortMidDecodeAndWhileWaiting) {
  Sim sim(config(4, 8, 16, /*max_num_seqs=*/1, 32));
  sim.add_len(1, 2, 10);
  sim.add_len(2, 2, 10);  // waits behind max_num_seqs
  sim.run(3);
  ASSERT_TRUE(sim.sched.abort(2).ok());
  // Cancelled between schedule() and update(): the step completes, then 1 leaves.
  sim.after_schedule = [](Sim& s, const StepPlan& plan) {
    if (plan.step == 4) {
      ASSERT_TRUE(s.sched.abort(1).ok());
    }
  };
  sim.run(2);
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 2, kSample},
                          {2, 1, 2, 1, kSample},
                          {3, 1, 3, 1, kSample},
                          {4, 1, 4, 1, kSample},
                      }));
  EXPECT_EQ(sim.aborted, (std::vector<Event>{{4, 2}, {5, 1}}));
  EXPECT_EQ(sim.outputs[1], sim.expected_output(1, 4));
  EXPECT_EQ(sim.sched.kv().num_free(), 8);
  EXPECT_FALSE(sim.sched.has_unfinished());
}

// An abort that loses the race with a natural end is dropped: the request ends once.
TEST(SchedulerTest, AbortAfterLastTokenEndsOnce) {
  Sim sim(config(4, 8, 16, 4, 32));
  sim.add_len(1, 2, 1);
  sim.after_schedule = [](Sim& s, const StepPlan&) { ASSERT_TRUE(s.sched.abort(1).ok()); };
  sim.step();
  sim.after_schedule = nullptr;
  const StepPlan next = sim.step();
  EXPECT_TRUE(next.aborted.empty());
  EXPECT_EQ(sim.ended, (std::vector<Ended>{{1, 1, EndReason::kMaxTokens}}));
}

TEST(SchedulerTest, PrefixCacheHitsSharedBlocksAndTheCapRule) {
  Sim sim(config(4, 32, 64, 8, 64, /*caching=*/true));
  const std::vector<int32_t> p = make_prompt(1, 10);
  sim.add(1, p, 2);
  sim.run_to_end();  // blocks of tokens [0, 4), [4, 8) are now cached
  EXPECT_EQ(sim.cached[1], 0);

  std::vector<int32_t> q(p.begin(), p.begin() + 8);
  q.insert(q.end(), {7, 8, 9, 10, 11});
  sim.add(2, q, 1);
  sim.add(3, q, 1);                                               // shares with 2
  sim.add(4, std::vector<int32_t>(p.begin(), p.begin() + 8), 1);  // fully cached prompt
  sim.add(5, p, 1, 0, "tenant-b");                                // another salt: no sharing
  const StepPlan plan = sim.step();
  ASSERT_EQ(plan.seqs.size(), 4u);
  EXPECT_EQ(std::vector<Row>(sim.rows.end() - 4, sim.rows.end()),
            (std::vector<Row>{
                {3, 2, 8, 5, kSample},
                {3, 3, 8, 5, kSample},
                {3, 4, 4, 4, kSample},  // the cap: its last block is recomputed
                {3, 5, 0, 10, kSample},
            }));
  EXPECT_EQ(sim.cached, (std::map<RequestId, int>{{1, 0}, {2, 8}, {3, 8}, {4, 4}, {5, 0}}));
  EXPECT_TRUE(plan.seqs[0].admitted);
  EXPECT_EQ(plan.seqs[0].num_cached_tokens, 8);
  EXPECT_EQ(sim.sched.find(2), nullptr);  // all ended after one token
  EXPECT_EQ(sim.sched.kv().prefix_queries(), 10 + 13 + 13 + 8 + 10);
  EXPECT_EQ(sim.sched.kv().prefix_hits(), 8 + 8 + 4);
  EXPECT_EQ(sim.sched.kv().num_free(), 32);
}

TEST(SchedulerTest, SharedPrefixBlocksAreReferencedOncePerRequest) {
  Sim sim(config(4, 32, 64, 8, 64, true));
  const std::vector<int32_t> p = make_prompt(1, 9);
  sim.add(1, p, 1);
  sim.run_to_end();
  sim.add(2, p, 3);
  sim.add(3, p, 3);
  const StepPlan plan = sim.step();
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(sim.cached[2], 8);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(plan.seqs[0].block_table[i], plan.seqs[1].block_table[i]);
    EXPECT_EQ(sim.sched.kv().ref_count(plan.seqs[0].block_table[i]), 2);
  }
  EXPECT_NE(plan.seqs[0].block_table[2], plan.seqs[1].block_table[2]);
  EXPECT_EQ(sim.sched.kv().ref_count(plan.seqs[0].block_table[2]), 1);
  sim.run_to_end();
}

// 6 blocks of 2: request 2 is preempted with 3 full blocks cached; 1 evicts the tail one; 2
// resumes from the other two (4 cached tokens) and recomputes the rest.
TEST(SchedulerTest, PreemptedRequestResumesFromThePrefixCache) {
  Sim sim(config(2, 6, 16, 8, 12, true));
  sim.add_len(1, 5, 3);
  sim.add_len(2, 5, 5);
  sim.run_to_end();
  EXPECT_EQ(sim.rows, (std::vector<Row>{
                          {1, 1, 0, 5, kSample},
                          {1, 2, 0, 5, kSample},
                          {2, 1, 5, 1, kSample},
                          {2, 2, 5, 1, kSample},
                          {3, 1, 6, 1, kSample},
                          {4, 2, 4, 3, kSample},  // resumed: 4 tokens from the cache
                          {5, 2, 7, 1, kSample},
                          {6, 2, 8, 1, kSample},
                      }));
  EXPECT_EQ(sim.preempted, (std::vector<Event>{{3, 2}}));
  EXPECT_EQ(sim.cached[2], 4);
  EXPECT_EQ(sim.sched.find(2), nullptr);
  EXPECT_EQ(sim.outputs[2], sim.expected_output(2, 5));
  // 1 evicted 2's tail block at step 3; 2 then evicted 1's cached blocks for its own.
  EXPECT_EQ(sim.sched.kv().evictions(), 3);
}

TEST(SchedulerTest, EngineStopsAndMaxModelLen) {
  Sim sim(config(4, 16, 64, 8, /*max_model_len=*/8));
  sim.add_len(1, 3, 10);
  sim.stop_at[1] = 2;      // the engine sees EOS in the 2nd token
  sim.add_len(2, 6, 100);  // 6 + 2 = max_model_len
  sim.add_len(3, 8, 100);  // a prompt of max_model_len gets one token
  sim.add_len(4, 3, 1);
  sim.stop_at[4] = 1;  // stop and max_tokens on the same token: stop wins
  sim.add_len(5, 3, 10);
  sim.run(1);
  ASSERT_TRUE(sim.sched.finish(5, EndReason::kError).ok());  // the engine gives up on 5
  EXPECT_EQ(sim.sched.finish(5, EndReason::kError).code(), StatusCode::kNotFound);
  sim.run_to_end();
  EXPECT_EQ(sim.ended, (std::vector<Ended>{
                           {1, 3, EndReason::kMaxModelLen},
                           {1, 4, EndReason::kStop},
                           {2, 1, EndReason::kStop},
                           {2, 2, EndReason::kMaxModelLen},
                       }));
  EXPECT_EQ(sim.outputs[2].size(), 2u);
  EXPECT_EQ(sim.sched.num_ended(EndReason::kError), 1);
}

TEST(SchedulerTest, PlanGivesBlockTablesAndSlots) {
  Sim sim(config(4, 16, 64, 8, 64));
  sim.add_len(1, 6, 2);
  sim.add_len(2, 3, 2);
  const StepPlan plan = sim.step();
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(plan.num_batched_tokens, 9);
  EXPECT_EQ(std::vector<int32_t>(plan.seqs[0].block_table.begin(), plan.seqs[0].block_table.end()),
            (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(std::vector<int32_t>(plan.seqs[1].block_table.begin(), plan.seqs[1].block_table.end()),
            (std::vector<int32_t>{2}));
  EXPECT_EQ(kv_slot(plan.seqs[0].block_table, 4, 5), 5);
  EXPECT_EQ(kv_slot(plan.seqs[1].block_table, 4, 2), 10);
  sim.run_to_end();
}

TEST(SchedulerTest, BadInputIsRefused) {
  Scheduler s(config(4, 16, 64, 8, /*max_model_len=*/8));
  auto req = [](RequestId id, int len, int max_tokens) {
    NewRequest r;
    r.id = id;
    r.prompt = make_prompt(id, len);
    r.max_tokens = max_tokens;
    return r;
  };
  EXPECT_EQ(s.add(req(1, 0, 4)).code(), StatusCode::kInvalidArgument);
  const Status too_long = s.add(req(1, 9, 4));
  EXPECT_EQ(too_long.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.message().find("max_model_len 8"), std::string::npos) << too_long.message();
  EXPECT_EQ(s.add(req(1, 4, 0)).code(), StatusCode::kInvalidArgument);
  NewRequest neg = req(1, 4, 4);
  neg.prompt[2] = -1;
  EXPECT_EQ(s.add(neg).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(s.has_unfinished());  // nothing entered the queue
  EXPECT_TRUE(s.add(req(1, 8, 4)).ok());
  EXPECT_EQ(s.add(req(1, 2, 4)).code(), StatusCode::kInvalidArgument);  // duplicate id
  EXPECT_EQ(s.num_waiting(), 1);
  EXPECT_EQ(s.abort(99).code(), StatusCode::kNotFound);
  EXPECT_EQ(s.finish(99, EndReason::kStop).code(), StatusCode::kNotFound);

  EXPECT_TRUE(config(4, 16, 64, 8, 64).validate().ok());
  EXPECT_FALSE(config(0, 16, 64, 8, 64).validate().ok());
  EXPECT_FALSE(config(4, 16, 0, 8, 64).validate().ok());
  EXPECT_FALSE(config(4, 16, 64, 0, 64).validate().ok());
  const Status small = config(4, 15, 64, 8, 64).validate();  // 60 slots < 64
  EXPECT_NE(small.message().find("max_model_len 64"), std::string::npos) << small.message();
}

TEST(SchedulerDeathTest, MissingUpdateIsCaught) {
  Scheduler s(config(4, 16, 64, 8, 64));
  NewRequest r;
  r.id = 1;
  r.prompt = {1, 2, 3};
  ASSERT_TRUE(s.add(r).ok());
  const StepPlan plan = s.schedule();
  const StepPlan ahead = s.schedule();  // one lookahead plan is allowed (async scheduling)
  ASSERT_EQ(ahead.seqs.size(), 1u);
  EXPECT_TRUE(ahead.seqs[0].input_pending);
  EXPECT_DEATH(s.schedule(), "CHECK failed");         // but not a second
  EXPECT_DEATH(s.update(ahead, {}), "CHECK failed");  // nor updates out of order
  EXPECT_DEATH(s.update(plan, {}), "no sampled token");
}

}  // namespace
}  // namespace pagoda
