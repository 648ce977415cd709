// Randomized invariant runs of the scheduler: random arrivals, aborts, engine finishes,
// lengths, priorities and salts, tiny block pools that force preemption, prefix caching with
// many shared prefixes. A fake model keeps a real paged "KV cache": the value written at a
// position chains the previous position's value (read through the block table) with the token,
// and the sampled token is a function of the last value. So a request's output depends on
// every K/V it attends over; a wrong block table, a bad prefix-cache hit, an overwritten shared
// block or a resumed request that does not recompute exactly its tokens changes the output,
// which must equal the request's output when run alone, step for step.
//
// With Params::lookahead the driver runs as the engine's async scheduling does: it plans step
// N+1 while step N is "in flight" (computed, not yet updated), fills in the pending input of
// each lookahead decode once N's token is known, and drops the tokens of requests that the
// lookahead preempted while their step ran.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <random>
#include <set>

#include "engine/scheduler.h"

namespace pagoda {
namespace {

constexpr int32_t kVocab = 8;
constexpr int32_t kEos = 3;

uint64_t chain(uint64_t prev, int32_t token, int pos) {
  uint64_t x = prev * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(token) * 0xBF58476D1CE4E5B9ull +
               static_cast<uint64_t>(pos) + 1;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 29);
}
int32_t sample_from(uint64_t v) {
  return static_cast<int32_t>((v >> 17) % kVocab);
}

struct Spec {
  std::vector<int32_t> prompt;
  int max_tokens = 1;
  bool eos = false;  // the engine stops at kEos
};

struct Expected {
  std::vector<int32_t> output;
  EndReason reason;
};

// The request run alone, with no paging at all.
Expected run_alone(const Spec& s, int max_model_len) {
  std::vector<int32_t> tokens = s.prompt;
  uint64_t v = 0;
  size_t computed = 0;
  Expected e;
  for (;;) {
    for (; computed < tokens.size(); ++computed) v = chain(v, tokens[computed], computed);
    const int32_t t = sample_from(v);
    tokens.push_back(t);
    e.output.push_back(t);
    if (s.eos && t == kEos) return {e.output, EndReason::kStop};
    if (static_cast<int>(e.output.size()) >= s.max_tokens) return {e.output, EndReason::kMaxTokens};
    if (static_cast<int>(tokens.size()) >= max_model_len)
      return {e.output, EndReason::kMaxModelLen};
  }
}

struct Params {
  uint32_t seed;
  int block_size, num_blocks, budget, max_num_seqs, max_model_len;
  bool caching;
  SchedulingPolicy policy;
  int num_requests;
  uint64_t hash_mask = ~uint64_t{0};  // a few bits: hash collisions everywhere
  bool lookahead = false;             // plan one step ahead (async scheduling)
};

struct LookaheadCounts {
  int64_t pending_rows = 0;    // decodes planned before their input token was known
  int64_t wasted_rows = 0;     // rows of requests that had ended by the time their step ran
  int64_t dropped_tokens = 0;  // sampled for a request preempted while its step was in flight
};

// Adds the number of preemptions to *preemptions and the lookahead counts to *counts.
void run_random(const Params& p, int64_t* preemptions = nullptr,
                LookaheadCounts* counts = nullptr) {
  SCOPED_TRACE("seed " + std::to_string(p.seed));
  std::mt19937 rng(p.seed);
  auto uniform = [&](int lo, int hi) { return lo + static_cast<int>(rng() % (hi - lo + 1)); };
  SchedulerConfig c;
  c.block_size = p.block_size;
  c.num_blocks = p.num_blocks;
  c.max_num_batched_tokens = p.budget;
  c.max_num_seqs = p.max_num_seqs;
  c.max_model_len = p.max_model_len;
  c.enable_prefix_caching = p.caching;
  c.policy = p.policy;
  ASSERT_TRUE(c.validate().ok()) << c.validate().to_string();
  Scheduler sched(c);
  sched.set_prefix_hash_mask_for_testing(p.hash_mask);
  const int bs = p.block_size;

  // Paged fake KV: one value per slot, and whether a slot holds a written value.
  std::vector<uint64_t> kv(static_cast<size_t>(p.num_blocks) * bs, 0);
  std::vector<uint8_t> written(kv.size(), 0);
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> pre(uniform(0, std::min(3 * bs, p.max_model_len - 1)));
    for (auto& t : pre) t = static_cast<int32_t>(rng() % kVocab);
    prefixes.push_back(pre);
  }

  std::map<RequestId, Spec> specs;
  std::map<RequestId, std::vector<int32_t>> outputs;
  std::map<RequestId, EndReason> ended;  // each id at most once
  std::set<RequestId> aborted_by_us, live;
  RequestId next_id = 0;
  int64_t preempted_seen = 0;
  auto end_once = [&](RequestId id, EndReason r) {
    ASSERT_TRUE(ended.emplace(id, r).second) << "request " << id << " ended twice";
    ASSERT_EQ(live.erase(id), 1u);
  };

  struct InFlight {
    StepPlan plan;
    std::vector<SampledToken> sampled;  // computed when it "ran"; update() when it comes back
  };
  std::optional<InFlight> in_flight;
  LookaheadCounts lookahead;
  // A sampled token counts when its plan still computes for the request (as the engine
  // decides); a request preempted while its step ran samples it again after it resumes.
  const auto update = [&](const StepPlan& done, const std::vector<SampledToken>& sampled) {
    for (const SampledToken& t : sampled) {
      if (sched.planned_in(t.id, done.step)) {
        outputs[t.id].push_back(t.token);
      } else {
        ASSERT_TRUE(p.lookahead) << "request " << t.id << " lost its plan without a lookahead";
        ++lookahead.dropped_tokens;
      }
    }
    for (const EndedRequest& e : sched.update(done, sampled)) end_once(e.id, e.reason);
  };
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> views;  // ids, block table

  for (int step = 0; step < 100000; ++step) {
    if (next_id == p.num_requests && !sched.has_unfinished() && !in_flight) break;
    // Arrivals: quiet phases and bursts, so queues build up and drain.
    const int burst = (step / 50) % 3 == 1 ? 4 : 1;
    for (int k = uniform(0, burst); k > 0 && next_id < p.num_requests; --k) {
      Spec s;
      s.prompt = prefixes[rng() % prefixes.size()];
      const int room = p.max_model_len - static_cast<int>(s.prompt.size());
      for (int n = uniform(1, std::min(room, 3 * bs + 2)); n > 0; --n)
        s.prompt.push_back(static_cast<int32_t>(rng() % kVocab));
      s.max_tokens = uniform(1, 24);
      s.eos = rng() % 2;
      NewRequest r;
      r.id = next_id++;
      r.prompt = s.prompt;
      r.max_tokens = s.max_tokens;
      r.priority = uniform(0, 3);
      r.arrival = step;
      r.cache_salt = rng() % 5 == 0 ? "tenant-x" : "";
      ASSERT_TRUE(sched.add(std::move(r)).ok());
      specs[next_id - 1] = s;
      live.insert(next_id - 1);
    }
    // Cancellations and engine-side ends, at random times.
    if (!live.empty() && rng() % 25 == 0) {
      const RequestId id = *std::next(live.begin(), rng() % live.size());
      if (rng() % 3 == 0) {
        ASSERT_TRUE(sched.finish(id, EndReason::kError).ok());
        end_once(id, EndReason::kError);
      } else {
        ASSERT_TRUE(sched.abort(id).ok());
        aborted_by_us.insert(id);
      }
    }

    // Plan (with lookahead: while the previous step is still in flight).
    StepPlan plan = sched.schedule();
    preempted_seen += static_cast<int64_t>(plan.preempted.size());
    for (RequestId id : plan.aborted) {
      ASSERT_TRUE(aborted_by_us.contains(id));
      end_once(id, EndReason::kAborted);
    }
    // The plan's views last only until the next update(): keep copies, as the engine's model
    // runner does by building its batch before that update.
    views.resize(plan.seqs.size());
    for (size_t i = 0; i < plan.seqs.size(); ++i) {
      ScheduledSeq& q = plan.seqs[i];
      views[i].first.assign(q.token_ids.begin(), q.token_ids.end());
      views[i].second.assign(q.block_table.begin(), q.block_table.end());
      q.token_ids = views[i].first;
      q.block_table = views[i].second;
    }
    // The step in flight has "come back": update it before running the new plan.
    if (in_flight) {
      ASSERT_NO_FATAL_FAILURE(update(in_flight->plan, in_flight->sampled));
      in_flight.reset();
    }
    if (plan.empty()) {
      sched.check_invariants();
      if (::testing::Test::HasFatalFailure()) return;
      continue;
    }
    ASSERT_LE(plan.num_batched_tokens, p.budget);
    ASSERT_LE(static_cast<int>(plan.seqs.size()), p.max_num_seqs);
    int total = 0;
    std::set<RequestId> in_plan;
    std::vector<SampledToken> sampled;
    for (const ScheduledSeq& s : plan.seqs) {
      ASSERT_TRUE(in_plan.insert(s.id).second);
      ASSERT_GT(s.num_tokens, 0);
      total += s.num_tokens;
      // A lookahead row of a request that ended at the update above still runs (its blocks
      // are free now, and nobody else's until a later plan), and its token is dropped.
      const bool dead = ended.contains(s.id);
      if (dead) {
        // Only a stop, which the scheduler cannot foresee, wastes a row: a lookahead never
        // plans a request that its max_tokens or max_model_len is about to end.
        ASSERT_STREQ(end_reason_name(ended[s.id]), end_reason_name(EndReason::kStop))
            << "request " << s.id;
      }
      lookahead.wasted_rows += dead;
      const Spec& spec = specs[s.id];
      const auto& out = outputs[s.id];
      const int known = static_cast<int>(spec.prompt.size() + out.size());
      ASSERT_LE(s.start + s.num_tokens, known);
      ASSERT_EQ(s.sample, s.start + s.num_tokens == known);
      ASSERT_LT(s.start + s.num_tokens - 1, p.max_model_len);
      ASSERT_GE(static_cast<int>(s.block_table.size()) * bs, s.start + s.num_tokens);
      if (s.admitted) {
        ASSERT_EQ(s.num_cached_tokens, s.start);
      }
      if (s.input_pending) {
        ASSERT_TRUE(p.lookahead);
        ASSERT_EQ(s.num_tokens, 1);
        ASSERT_TRUE(s.token_ids.empty());
        ++lookahead.pending_rows;
      } else {
        ASSERT_EQ(static_cast<int>(s.token_ids.size()), s.num_tokens);
      }
      for (int j = 0; j < s.num_tokens; ++j) {
        const int pos = s.start + j;
        const int32_t want = pos < static_cast<int>(spec.prompt.size())
                                 ? spec.prompt[pos]
                                 : out[pos - spec.prompt.size()];
        // A pending input is the token the previous step sampled, known by now.
        const int32_t token = s.input_pending ? out.back() : s.token_ids[j];
        ASSERT_EQ(token, want) << "request " << s.id << " position " << pos;
        const int32_t block = s.block_table[pos / bs];
        if (!dead) {
          ASSERT_EQ(sched.kv().ref_count(block), 1) << "a write into a shared block";
          ASSERT_FALSE(sched.kv().is_cached(block)) << "a write into a cached block";
        }
        uint64_t prev = 0;
        if (pos > 0) {
          const int32_t ps = kv_slot(s.block_table, bs, pos - 1);
          ASSERT_TRUE(written[ps]) << "reading a slot never written";
          prev = kv[ps];
        }
        const int32_t slot = kv_slot(s.block_table, bs, pos);
        kv[slot] = chain(prev, token, pos);
        written[slot] = 1;
      }
      if (s.sample && !dead) {
        const int32_t t = sample_from(kv[kv_slot(s.block_table, bs, s.start + s.num_tokens - 1)]);
        sampled.push_back({s.id, t, spec.eos && t == kEos});
      }
    }
    ASSERT_EQ(total, plan.num_batched_tokens);
    // Sometimes a cancel lands while the model runs.
    if (rng() % 40 == 0) {
      const RequestId id = plan.seqs[rng() % plan.seqs.size()].id;
      if (live.contains(id)) {
        ASSERT_TRUE(sched.abort(id).ok());
        aborted_by_us.insert(id);
      }
    }
    if (p.lookahead) {
      in_flight = InFlight{std::move(plan), std::move(sampled)};
    } else {
      ASSERT_NO_FATAL_FAILURE(update(plan, sampled));
    }
    sched.check_invariants();
    if (::testing::Test::HasFatalFailure()) return;
  }

  ASSERT_FALSE(sched.has_unfinished()) << "did not drain";
  ASSERT_EQ(next_id, p.num_requests);
  EXPECT_EQ(static_cast<int>(ended.size()), p.num_requests);  // every request ended once
  EXPECT_TRUE(live.empty());
  EXPECT_EQ(sched.kv().num_free(), p.num_blocks);
  for (int b = 0; b < p.num_blocks; ++b) ASSERT_EQ(sched.kv().ref_count(b), 0);
  EXPECT_EQ(sched.num_preemptions(), preempted_seen);
  if (preemptions != nullptr) *preemptions += preempted_seen;
  if (counts != nullptr) {
    counts->pending_rows += lookahead.pending_rows;
    counts->wasted_rows += lookahead.wasted_rows;
    counts->dropped_tokens += lookahead.dropped_tokens;
  }
  for (const auto& [id, reason] : ended) {
    const Expected want = run_alone(specs[id], p.max_model_len);
    const auto& got = outputs[id];
    if (reason == EndReason::kAborted || reason == EndReason::kError) {
      ASSERT_LE(got.size(), want.output.size()) << "request " << id;
      ASSERT_TRUE(std::equal(got.begin(), got.end(), want.output.begin())) << "request " << id;
    } else {
      ASSERT_EQ(got, want.output) << "request " << id;
      ASSERT_EQ(end_reason_name(reason), end_reason_name(want.reason)) << "request " << id;
    }
  }
}

TEST(SchedulerRandomTest, InvariantsHoldUnderRandomTraffic) {
  const std::vector<Params> cases = {
      // seed, block, blocks, budget, seqs, max_len, caching, policy, requests
      {1, 4, 12, 16, 8, 48, true, SchedulingPolicy::kFcfs, 4 * 150},
      {2, 4, 12, 16, 8, 48, true, SchedulingPolicy::kPriority, 4 * 150},
      {3, 2, 16, 7, 16, 32, true, SchedulingPolicy::kFcfs, 4 * 150},
      {4, 1, 24, 5, 4, 24, true, SchedulingPolicy::kPriority, 4 * 120},
      {5, 4, 12, 16, 8, 48, false, SchedulingPolicy::kFcfs, 4 * 150},
      {6, 16, 3, 40, 3, 48, true, SchedulingPolicy::kFcfs, 4 * 100},
      {7, 3, 20, 64, 32, 60, true, SchedulingPolicy::kPriority, 4 * 200},
      {8, 2, 8, 1, 4, 16, true, SchedulingPolicy::kFcfs, 4 * 60},  // one token per step
      {9, 4, 64, 128, 64, 48, true, SchedulingPolicy::kFcfs, 4 * 300},
      {10, 5, 10, 9, 2, 50, false, SchedulingPolicy::kPriority, 4 * 100},
  };
  for (const Params& p : cases) {
    run_random(p);
    if (HasFatalFailure()) return;
  }
}

// With a hash of 1 to 4 bits almost every lookup collides: hits must still be exact.
TEST(SchedulerRandomTest, HashCollisionsNeverGiveWrongHits) {
  for (uint64_t bits = 0; bits <= 4; ++bits) {
    const uint32_t seed = 200 + static_cast<uint32_t>(bits);
    Params p = {seed, 2, 24, 16, 8, 24, true, SchedulingPolicy::kFcfs, 300};
    p.hash_mask = (uint64_t{1} << bits) - 1;
    run_random(p);
    if (HasFatalFailure()) return;
  }
}

// Tiny pools preempt a lot; check that they do, so the test exercises recompute.
TEST(SchedulerRandomTest, TinyPoolsPreemptAndStillMatchSoloRuns) {
  int64_t preemptions = 0;
  for (uint32_t seed = 100; seed < 110; ++seed) {
    run_random({seed, 2, 12, 24, 16, 24, seed % 2 == 0,
                seed % 3 == 0 ? SchedulingPolicy::kPriority : SchedulingPolicy::kFcfs, 300},
               &preemptions);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(preemptions, 50);
}

// Async scheduling: planning each step while the one before is in flight. Outputs must still
// equal the solo runs, with every block returned, and the runs must exercise what is new:
// pending inputs, rows wasted on requests that stopped, and preemptions of requests whose step
// is in flight (their token dropped, sampled again after they resume).
TEST(SchedulerRandomTest, LookaheadMatchesSoloRuns) {
  LookaheadCounts counts;
  int64_t preemptions = 0;
  for (uint32_t seed = 300; seed < 320; ++seed) {
    const int block = 1 + static_cast<int>(seed % 4);
    const int max_len = 24 + static_cast<int>(seed % 3) * 12;
    // Pools from barely one request (many preemptions, also of requests in flight) to roomy.
    const int blocks = (max_len + block - 1) / block + (seed % 2 == 0 ? 2 : 40);
    Params p = {seed,
                block,
                blocks,
                seed % 5 == 0 ? 3 : 24,
                seed % 3 == 0 ? 4 : 16,
                max_len,
                seed % 4 != 1,
                seed % 3 == 0 ? SchedulingPolicy::kPriority : SchedulingPolicy::kFcfs,
                200};
    p.lookahead = true;
    if (seed % 7 == 0) p.hash_mask = 3;
    run_random(p, &preemptions, &counts);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(counts.pending_rows, 1000);
  EXPECT_GT(counts.wasted_rows, 20);
  EXPECT_GT(counts.dropped_tokens, 20);
  EXPECT_GT(preemptions, 20);
}

}  // namespace
}  // namespace pagoda
