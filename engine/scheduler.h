// Scheduler: continuous batching over the paged KV cache. Pure logic over integers: it decides,
// step by step, which requests compute which tokens; it owns the KvBlockManager and every
// request's token ids. No model, no threads, no clock: the Engine (one loop thread) drives it.
//
// The step loop:
//   while (scheduler.has_unfinished()) {          // or: wait for work
//     (drain submissions and cancellations: add(), abort())
//     StepPlan plan = scheduler.schedule();        // aborted/preempted lists + what to compute
//     (report plan.aborted as cancelled; trace plan.preempted)
//     if (plan.empty()) continue;
//     (build the flat batch from plan.seqs — see step_plan.h — run the model, sample a token
//      for every seq with sample == true, check stop conditions on it)
//     for (EndedRequest e : scheduler.update(plan, sampled)) (send the final response)
//   }
//
// Lookahead (async scheduling): schedule() may also be called while one plan N awaits its
// update(), to plan step N+1 while step N runs on the device. Then:
// - A request that samples in plan N is planned a decode of the token it samples there
//   (ScheduledSeq::input_pending: its one input token is plan N's sampled token, which the
//   caller fills in once known; token_ids is empty), unless that token surely ends it
//   (max_tokens or max_model_len). A stop token (which only update() learns) ends it at
//   update(N); its row in plan N+1 is then computed for nothing and update(N+1) skips it.
// - A request in plan N on a partial prefill chunk gets its next chunk.
// - Preemption works as in a normal plan, and may take a request that plan N is computing:
//   what N computes for it is dropped (update(N) skips it; planned_in(id, N) turns false, so
//   the caller drops its token too), and it recomputes that token after it resumes (the same
//   token: sampling is keyed by seed and position). Its freed blocks may go to plan N+1's
//   requests, which write them after step N (one device stream; the engine launches N+1
//   only once N has come back).
// - update(N) must come before update(N+1), and before any further schedule(): at most two
//   plans await update at a time.
// Blocks freed while a plan runs (abort, finish, a stop at update(N)) may be handed out by the
// next plan: its writes must be ordered after the running step's (one device stream does so).
//
// Semantics (as a vLLM user expects them):
// - No prefill/decode phases. Every request has num_computed tokens catching up with its known
//   tokens (prompt + output). A step computes, per scheduled request, a contiguous range
//   [num_computed, num_computed + n); a request is sampled when that range reaches its last
//   known token. A decode is n = 1.
// - max_num_batched_tokens: the token budget of one step (sum of n). Running requests are
//   served first, in policy order, each taking min(remaining, budget) (chunked prefill; a
//   decode takes 1); then waiting requests are admitted in policy order while budget remains,
//   fewer than max_num_seqs requests run and the KV pool can hold the admitted chunk. An
//   admitted request's first chunk may be partial. Admission stops at the first waiting request
//   that does not fit (no skipping ahead, so nothing starves), and no request is admitted in a
//   step that preempted one.
// - max_num_seqs: the number of running requests (scheduled or not this step).
// - Policy fcfs: order by arrival (ties: add order); priority values are ignored. Policy
//   priority: lower priority value first (like vLLM), then arrival, then add order.
// - Prefix caching: an admitted request reuses the longest cached chain of full blocks of its
//   known tokens, but always computes at least its last token (kv_block_manager.h).
//   num_cached_tokens is reported on admission. Blocks enter the cache as they fill up.
// - Preemption by recompute: when a running request cannot get the blocks for its chunk, the
//   running request that comes last in policy order (fcfs: latest arrival; priority: lowest
//   priority, then latest arrival) is preempted — possibly the requester itself — until the
//   allocation fits. A preempted request frees its blocks (full ones stay in the prefix cache),
//   rejoins the waiting queue in policy order with num_computed = 0 and its output kept, and
//   later recomputes prompt + output (cheaply, through the prefix cache) and continues.
// - max_model_len: a prompt may be up to max_model_len tokens. A request ends (kMaxModelLen)
//   once prompt + output reaches max_model_len, so no position >= max_model_len is computed.
//   The pool must hold one request of max_model_len tokens (validate()), so the request first
//   in policy order always makes progress.
// - max_tokens: a request ends (kMaxTokens) once its output has max_tokens tokens.
//
// Who ends a request (each ends exactly once, and afterwards its id is unknown to the
// scheduler: abort()/finish() return NotFound, and add() may reuse the id):
// - update(): SampledToken::stop (the engine's EOS / stop ids / stop strings) -> kStop, checked
//   first; then max_tokens -> kMaxTokens; then max_model_len -> kMaxModelLen. Returned.
// - abort(id): cancel, deadline, disconnect, shutdown. Safe at any time, also between
//   schedule() and update(); takes effect at the next schedule(), which reports the id in
//   plan.aborted, unless update() ends the request first. Blocks are freed then.
// - finish(id, reason): the engine ends a live request right away (e.g. kError), blocks freed.
//   Between schedule() and update() it invalidates that request's spans in the plan; update()
//   then skips it.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "engine/kv_block_manager.h"
#include "engine/step_plan.h"

namespace pagoda {

enum class SchedulingPolicy { kFcfs, kPriority };

struct SchedulerConfig {
  int block_size = 16;
  int num_blocks = 0;                 // KV blocks in the pool
  int max_num_batched_tokens = 8192;  // token budget per step
  int max_num_seqs = 256;             // running requests at most
  int max_model_len = 4096;           // prompt + output tokens at most
  bool enable_prefix_caching = true;
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;

  // InvalidArgument naming the field: every number positive, and num_blocks * block_size >=
  // max_model_len (a request of max_model_len tokens must fit in the pool).
  Status validate() const;
};

struct NewRequest {
  RequestId id = 0;             // unique among live requests
  std::vector<int32_t> prompt;  // 1 .. max_model_len token ids, each >= 0
  int max_tokens = 16;          // >= 1; output tokens at most
  int priority = 0;             // policy priority: lower is more important
  int64_t arrival = 0;          // arrival time or sequence number; ties keep add order
  std::string cache_salt;       // prefix-cache sharing only among requests with equal salt
};

// A live request as the scheduler sees it. Read-only outside the scheduler.
struct RequestState {
  RequestId id = 0;
  std::vector<int32_t> tokens;  // prompt, then output
  int prompt_len = 0;
  int max_tokens = 0;
  int priority = 0;
  int64_t arrival = 0;
  uint64_t add_seq = 0;   // tie-break: order of add()
  int num_computed = 0;   // leading tokens whose K/V are in the cache
  int num_scheduled = 0;  // >= num_computed: also those planned by plans awaiting update()
  bool running = false;   // else waiting
  int num_preemptions = 0;
  int num_cached_tokens = -1;  // prefix-cache hit at first admission; -1 before it
  KvSequence kv;

  int num_output() const { return static_cast<int>(tokens.size()) - prompt_len; }

  // Bookkeeping.
  bool abort_pending = false;
  uint64_t planned_step = 0;  // last step that scheduled it
  bool sample_due = false;    // planned_step samples it and update() has not seen the token
  // Lookahead: an older plan awaiting update() that also scheduled it (0: none), and whether
  // it samples there; pending_input: planned_step's decode takes as input the token that
  // prev_planned_step samples, not yet in `tokens`.
  uint64_t prev_planned_step = 0;
  bool prev_sample_due = false;
  bool pending_input = false;
  bool stop = false;  // the engine flagged the last sampled token as a stop
};

class Scheduler {
 public:
  // config must be valid (validate(); CHECK-fails otherwise: check it where it comes in).
  explicit Scheduler(const SchedulerConfig& config);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request (waiting). InvalidArgument, and nothing queued, for an empty prompt, a
  // prompt longer than max_model_len, a negative token id, max_tokens < 1, or an id already live.
  Status add(NewRequest request);
  // Marks a live request for removal at the next schedule() (see above). NotFound if the id is
  // not live (never added, or already ended). Repeated aborts are harmless.
  Status abort(RequestId id);

  // Plans the next step. Call update() with the plan before the next schedule() (not needed
  // for an empty plan), or, for a lookahead (see above), at most one schedule() in between.
  StepPlan schedule();
  // After the model ran: advances num_computed of every scheduled request, appends the sampled
  // tokens (exactly one per seq with sample == true, in any order), caches newly filled
  // blocks, and ends requests (stop flag, max_tokens, max_model_len), freeing their blocks.
  // Returns those ended, in plan order.
  std::vector<EndedRequest> update(const StepPlan& plan, std::span<const SampledToken> sampled);
  // Ends a live request now and frees its blocks. NotFound if the id is not live.
  Status finish(RequestId id, EndReason reason);

  const RequestState* find(RequestId id) const;
  // Whether plan `step` still computes for this request: it is running and that plan (the
  // newest or, with a lookahead, the one before) scheduled it. False once it ended, was
  // preempted (its sampled token is then dropped) or was re-admitted since.
  bool planned_in(RequestId id, uint64_t step) const;
  const SchedulerConfig& config() const { return config_; }
  const KvBlockManager& kv() const { return kv_; }

  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  bool has_unfinished() const { return !requests_.empty(); }
  double kv_usage() const { return kv_.usage(); }
  int64_t num_preemptions() const { return num_preemptions_; }
  double prefix_hit_rate() const { return kv_.prefix_hit_rate(); }
  int64_t num_ended(EndReason r) const { return ended_[static_cast<int>(r)]; }
  uint64_t step() const { return step_; }
  // Tests only: weakens the prefix-cache hash to these bits (see KvBlockManager).
  void set_prefix_hash_mask_for_testing(uint64_t mask) { kv_.set_hash_mask_for_testing(mask); }

  // CHECK-fails unless the block manager's invariants hold and: block references equal the
  // running requests' block tables (waiting requests hold none), queues are in policy order
  // and consistent with the id map, running <= max_num_seqs, and (between steps) every running
  // request holds exactly the blocks for its computed tokens and has a token left to compute.
  void check_invariants() const;

 private:
  struct Order {
    SchedulingPolicy policy;
    bool operator()(const RequestState* a, const RequestState* b) const;
  };

  RequestState* find_mutable(RequestId id);
  ScheduledSeq plan_seq(RequestState* r, int n, uint64_t step, bool pending_input);
  void preempt_last_running(StepPlan* plan);
  void end(RequestState* r, EndReason reason);  // removes r from its queue, frees, erases

  SchedulerConfig config_;
  KvBlockManager kv_;
  Order order_;
  std::unordered_map<RequestId, RequestState> requests_;  // node-based: pointers stay valid
  std::vector<RequestState*> running_;                    // sorted by order_
  std::set<RequestState*, Order> waiting_;
  std::vector<RequestId> pending_aborts_;
  uint64_t step_ = 0;
  uint64_t next_add_seq_ = 0;
  std::vector<uint64_t> awaiting_update_;  // non-empty plans not yet updated, oldest first
  int64_t num_preemptions_ = 0;
  std::array<int64_t, 5> ended_{};
};

}  // namespace pagoda
