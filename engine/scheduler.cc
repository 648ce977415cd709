#include "engine/scheduler.h"

#include <algorithm>

#include "core/check.h"

namespace pagoda {

const char* end_reason_name(EndReason r) {
  switch (r) {
    case EndReason::kStop: return "stop";
    case EndReason::kMaxTokens: return "max_tokens";
    case EndReason::kMaxModelLen: return "max_model_len";
    case EndReason::kAborted: return "aborted";
    case EndReason::kError: return "error";
  }
  return "?";
}

Status SchedulerConfig::validate() const {
  auto positive = [](const char* name, int v) -> Status {
    if (v > 0) return OkStatus();
    return InvalidArgument(std::string("scheduler: ") + name + " must be positive, got " +
                           std::to_string(v));
  };
  PAGODA_RETURN_IF_ERROR(positive("block_size", block_size));
  PAGODA_RETURN_IF_ERROR(positive("num_blocks", num_blocks));
  PAGODA_RETURN_IF_ERROR(positive("max_num_batched_tokens", max_num_batched_tokens));
  PAGODA_RETURN_IF_ERROR(positive("max_num_seqs", max_num_seqs));
  PAGODA_RETURN_IF_ERROR(positive("max_model_len", max_model_len));
  if (int64_t{num_blocks} * block_size < max_model_len)
    return InvalidArgument("scheduler: the KV pool (num_blocks " + std::to_string(num_blocks) +
                           " x block_size " + std::to_string(block_size) +
                           " tokens) cannot hold one request of max_model_len " +
                           std::to_string(max_model_len) + " tokens");
  return OkStatus();
}

bool Scheduler::Order::operator()(const RequestState* a, const RequestState* b) const {
  if (policy == SchedulingPolicy::kPriority && a->priority != b->priority)
    return a->priority < b->priority;
  if (a->arrival != b->arrival) return a->arrival < b->arrival;
  return a->add_seq < b->add_seq;
}

namespace {

SchedulerConfig checked(const SchedulerConfig& c) {
  const Status s = c.validate();
  if (!s.ok()) internal::check_failed(__FILE__, __LINE__, "config.validate()", s.message());
  return c;
}

}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(checked(config)),
      kv_(config.num_blocks, config.block_size, config.enable_prefix_caching),
      order_{config.policy},
      waiting_(order_) {}

Status Scheduler::add(NewRequest req) {
  const auto id_str = [&] { return "request " + std::to_string(req.id) + ": "; };
  if (req.prompt.empty()) return InvalidArgument(id_str() + "the prompt is empty");
  if (static_cast<int64_t>(req.prompt.size()) > config_.max_model_len)
    return InvalidArgument(id_str() + "the prompt has " + std::to_string(req.prompt.size()) +
                           " tokens, more than max_model_len " +
                           std::to_string(config_.max_model_len));
  for (int32_t t : req.prompt)
    if (t < 0) return InvalidArgument(id_str() + "negative token id " + std::to_string(t));
  if (req.max_tokens < 1)
    return InvalidArgument(id_str() + "max_tokens must be at least 1, got " +
                           std::to_string(req.max_tokens));
  if (requests_.contains(req.id)) return InvalidArgument(id_str() + "the id is already in use");

  auto [it, inserted] = requests_.try_emplace(req.id);
  RequestState& r = it->second;
  r.id = req.id;
  r.prompt_len = static_cast<int>(req.prompt.size());
  r.tokens = std::move(req.prompt);
  r.max_tokens = req.max_tokens;
  r.priority = req.priority;
  r.arrival = req.arrival;
  r.add_seq = next_add_seq_++;
  r.kv = KvSequence(std::move(req.cache_salt));
  waiting_.insert(&r);
  return OkStatus();
}

Status Scheduler::abort(RequestId id) {
  RequestState* r = find_mutable(id);
  if (r == nullptr) return NotFound("request " + std::to_string(id) + " is not live");
  if (!r->abort_pending) {
    r->abort_pending = true;
    pending_aborts_.push_back(id);
  }
  return OkStatus();
}

bool Scheduler::planned_in(RequestId id, uint64_t step) const {
  const RequestState* r = find(id);
  return r != nullptr && r->running && step != 0 &&
         (r->planned_step == step || r->prev_planned_step == step);
}

const RequestState* Scheduler::find(RequestId id) const {
  const auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : &it->second;
}

RequestState* Scheduler::find_mutable(RequestId id) {
  const auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : &it->second;
}

ScheduledSeq Scheduler::plan_seq(RequestState* r, int n, uint64_t step, bool pending_input) {
  ScheduledSeq s;
  s.id = r->id;
  s.start = r->num_scheduled;
  s.num_tokens = n;
  const int known = static_cast<int>(r->tokens.size()) + (pending_input ? 1 : 0);
  s.sample = r->num_scheduled + n == known;
  s.input_pending = pending_input;
  if (!pending_input) s.token_ids = std::span<const int32_t>(r->tokens).subspan(s.start, n);
  s.block_table = r->kv.blocks;
  if (!awaiting_update_.empty() && r->planned_step == awaiting_update_.front()) {
    r->prev_planned_step = r->planned_step;  // lookahead: it is in the running plan too
    r->prev_sample_due = r->sample_due;
  }
  r->planned_step = step;
  r->sample_due = s.sample;
  r->pending_input = pending_input;
  r->num_scheduled += n;
  return s;
}

void Scheduler::preempt_last_running(StepPlan* plan) {
  RequestState* v = running_.back();
  running_.pop_back();
  kv_.free(&v->kv);
  v->num_computed = v->num_scheduled = 0;
  v->running = false;
  // In a lookahead the victim may be in the running plan: what that plan computes for it is
  // dropped (update() skips a request that is not running; planned_in() says so to the
  // caller), and it later recomputes its tokens and samples that token again. Its blocks may
  // go to this plan's requests, which write them only after the running step (one stream).
  v->planned_step = v->prev_planned_step = 0;
  v->sample_due = v->prev_sample_due = v->pending_input = false;
  ++v->num_preemptions;
  ++num_preemptions_;
  waiting_.insert(v);
  plan->preempted.push_back(v->id);
}

StepPlan Scheduler::schedule() {
  // update() was not called with the previous plan (a lookahead may run one plan ahead)
  PAGODA_CHECK_LE(awaiting_update_.size(), 1u);
  const bool lookahead = !awaiting_update_.empty();
  const uint64_t running_plan = lookahead ? awaiting_update_.front() : 0;
  StepPlan plan;
  plan.step = ++step_;

  for (RequestId id : pending_aborts_) {
    RequestState* r = find_mutable(id);
    if (r == nullptr || !r->abort_pending) continue;  // ended (or id reused) meanwhile
    end(r, EndReason::kAborted);
    plan.aborted.push_back(id);
  }
  pending_aborts_.clear();

  int budget = config_.max_num_batched_tokens;
  plan.seqs.reserve(std::min<size_t>(running_.size() + 8, config_.max_num_seqs));
  // Lookahead: a request sampling in the running plan decodes that token next, unless the
  // token surely ends it (max_tokens, max_model_len: update() will end it, and free its blocks,
  // before this plan runs).
  const auto pending_input = [&](const RequestState* r) {
    return lookahead && r->planned_step == running_plan && r->sample_due;
  };
  const auto surely_ends = [&](const RequestState* r) {
    return pending_input(r) && (r->num_output() + 1 >= r->max_tokens ||
                                static_cast<int>(r->tokens.size()) + 1 >= config_.max_model_len);
  };
  // Out of blocks while such a request holds some, a lookahead waits (its request is left out
  // of this plan, as is admitting anyone) rather than preempt: the next plan sees those blocks
  // free. A preemption costs a recompute of the victim's whole context; waiting costs a step.
  const bool blocks_coming = std::any_of(running_.begin(), running_.end(), [&](const auto* r) {
    return surely_ends(r) && !r->kv.blocks.empty();
  });
  bool waited = false;
  // Running requests, in policy order. Victims come from the back, so every request already
  // planned this step (in front of the current one) stays planned.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    RequestState* r = running_[i];
    const bool pending = pending_input(r);
    if (surely_ends(r)) continue;
    const int known = static_cast<int>(r->tokens.size()) + (pending ? 1 : 0);
    const int n = std::min(known - r->num_scheduled, budget);
    PAGODA_CHECK_GT(n, 0);
    // A victim may be in the running plan (lookahead): see preempt_last_running.
    bool preempted_self = false, wait = false;
    while (!kv_.allocate(&r->kv, r->num_scheduled + n)) {
      if ((wait = blocks_coming)) break;
      preempted_self = running_.back() == r;
      preempt_last_running(&plan);
      if (preempted_self) break;
    }
    if (preempted_self) break;  // it was the last one
    if (wait) {                 // later requests that need no new block still run
      waited = true;
      continue;
    }
    plan.seqs.push_back(plan_seq(r, n, plan.step, pending));
    budget -= n;
  }

  // Waiting requests, in policy order, while everything fits.
  while (!waited && plan.preempted.empty() && budget > 0 && !waiting_.empty() &&
         static_cast<int>(running_.size()) < config_.max_num_seqs) {
    RequestState* r = *waiting_.begin();
    const PrefixMatch match = kv_.match_prefix(&r->kv, r->tokens);
    const int cached = static_cast<int>(match.blocks.size()) * config_.block_size;
    const int n = std::min(static_cast<int>(r->tokens.size()) - cached, budget);
    if (!kv_.allocate(&r->kv, cached + n, match)) break;
    waiting_.erase(waiting_.begin());
    r->running = true;
    r->num_computed = r->num_scheduled = cached;
    if (r->num_cached_tokens < 0) r->num_cached_tokens = cached;
    running_.insert(std::upper_bound(running_.begin(), running_.end(), r, order_), r);
    ScheduledSeq s = plan_seq(r, n, plan.step, false);
    s.admitted = true;
    s.resumed = r->num_preemptions > 0;
    s.num_cached_tokens = cached;
    plan.seqs.push_back(s);
    budget -= n;
  }

  plan.num_batched_tokens = config_.max_num_batched_tokens - budget;
  if (!plan.seqs.empty()) awaiting_update_.push_back(plan.step);
  return plan;
}

std::vector<EndedRequest> Scheduler::update(const StepPlan& plan,
                                            std::span<const SampledToken> sampled) {
  std::vector<EndedRequest> ended;
  PAGODA_CHECK_LE(plan.step, step_);  // a plan from another scheduler
  if (plan.seqs.empty()) {
    PAGODA_CHECK(sampled.empty());
    return ended;
  }
  // Updates come once per plan, oldest first.
  PAGODA_CHECK(!awaiting_update_.empty());
  PAGODA_CHECK_EQ(plan.step, awaiting_update_.front());
  awaiting_update_.erase(awaiting_update_.begin());

  // A request finish()ed since schedule() is skipped (its id may even be live again). With a
  // lookahead plan after this one, the request's slot for this plan is the "prev" one.
  auto planned = [&](RequestId id) -> RequestState* {
    RequestState* r = find_mutable(id);
    return r != nullptr && r->running &&
                   (r->planned_step == plan.step || r->prev_planned_step == plan.step)
               ? r
               : nullptr;
  };
  auto due = [&](RequestState* r) -> bool& {
    return r->prev_planned_step == plan.step ? r->prev_sample_due : r->sample_due;
  };
  std::vector<RequestState*> reqs(plan.seqs.size());
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSeq& s = plan.seqs[i];
    RequestState* r = reqs[i] = planned(s.id);
    if (r == nullptr) continue;
    PAGODA_CHECK_EQ(r->num_computed, s.start);
    r->num_computed += s.num_tokens;
    PAGODA_CHECK_LE(r->num_computed, r->num_scheduled);
    PAGODA_CHECK_LE(r->num_computed, static_cast<int>(r->tokens.size()));
    r->stop = false;
  }
  for (const SampledToken& t : sampled) {
    RequestState* r = planned(t.id);
    if (r == nullptr) {
      const bool in_plan = std::any_of(plan.seqs.begin(), plan.seqs.end(),
                                       [&](const auto& s) { return s.id == t.id && s.sample; });
      if (!in_plan)
        internal::check_failed(__FILE__, __LINE__, "sampled token for a request not sampled",
                               std::to_string(t.id));
      continue;
    }
    if (!due(r))
      internal::check_failed(__FILE__, __LINE__, "one sampled token per sampled request",
                             std::to_string(t.id));
    PAGODA_CHECK_GE(t.token, 0);
    due(r) = false;
    r->tokens.push_back(t.token);
    r->pending_input = false;  // a lookahead decode of this token now has its input
    r->stop = t.stop;
  }

  bool any_done = false;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSeq& s = plan.seqs[i];
    RequestState* r = reqs[i];
    if (r == nullptr) continue;
    if (due(r))
      internal::check_failed(__FILE__, __LINE__, "no sampled token for a sampled request",
                             std::to_string(s.id));
    if (r->prev_planned_step == plan.step) r->prev_planned_step = 0;
    kv_.cache_computed(&r->kv, r->tokens, r->num_computed);
    if (!s.sample) continue;
    EndReason reason;
    if (r->stop) {
      reason = EndReason::kStop;
    } else if (r->num_output() >= r->max_tokens) {
      reason = EndReason::kMaxTokens;
    } else if (static_cast<int>(r->tokens.size()) >= config_.max_model_len) {
      reason = EndReason::kMaxModelLen;
    } else {
      continue;
    }
    ended.push_back({r->id, reason});
    r->running = false;  // marks it for removal below
    any_done = true;
  }
  if (!any_done) return ended;
  std::erase_if(running_, [](const RequestState* r) { return !r->running; });
  for (const EndedRequest& e : ended) {
    RequestState* r = find_mutable(e.id);
    kv_.free(&r->kv);
    ++ended_[static_cast<int>(e.reason)];
    requests_.erase(e.id);
  }
  return ended;
}

Status Scheduler::finish(RequestId id, EndReason reason) {
  RequestState* r = find_mutable(id);
  if (r == nullptr) return NotFound("request " + std::to_string(id) + " is not live");
  end(r, reason);
  return OkStatus();
}

void Scheduler::end(RequestState* r, EndReason reason) {
  if (r->running) {
    const auto it = std::find(running_.begin(), running_.end(), r);
    PAGODA_CHECK(it != running_.end());
    running_.erase(it);
  } else {
    PAGODA_CHECK_EQ(waiting_.erase(r), 1u);
  }
  kv_.free(&r->kv);
  ++ended_[static_cast<int>(reason)];
  requests_.erase(r->id);
}

void Scheduler::check_invariants() const {
  kv_.check_invariants();
  PAGODA_CHECK_EQ(running_.size() + waiting_.size(), requests_.size());
  PAGODA_CHECK_LE(static_cast<int>(running_.size()), config_.max_num_seqs);
  std::vector<int> refs(kv_.num_blocks(), 0);
  const auto awaiting = [&](uint64_t step) {
    return step != 0 && std::find(awaiting_update_.begin(), awaiting_update_.end(), step) !=
                            awaiting_update_.end();
  };
  for (size_t i = 0; i < running_.size(); ++i) {
    const RequestState* r = running_[i];
    PAGODA_CHECK(r->running);
    PAGODA_CHECK(find(r->id) == r);
    if (i > 0) PAGODA_CHECK(order_(running_[i - 1], r));
    const int known = static_cast<int>(r->tokens.size()) + (r->pending_input ? 1 : 0);
    PAGODA_CHECK_LE(r->num_computed, r->num_scheduled);
    PAGODA_CHECK_LE(r->num_scheduled, known);
    PAGODA_CHECK_EQ(static_cast<int>(r->kv.blocks.size()), kv_.blocks_for(r->num_scheduled));
    if (r->prev_planned_step != 0) PAGODA_CHECK(awaiting(r->prev_planned_step));
    if (r->pending_input) PAGODA_CHECK(awaiting(r->planned_step) && r->prev_planned_step != 0);
    if (!awaiting(r->planned_step)) {
      // Between steps: what it holds is computed, and it has a token left to compute.
      PAGODA_CHECK_EQ(r->num_scheduled, r->num_computed);
      PAGODA_CHECK_LT(r->num_computed, static_cast<int>(r->tokens.size()));
    }
    for (int32_t b : r->kv.blocks) ++refs[b];
  }
  for (const RequestState* r : waiting_) {
    PAGODA_CHECK(!r->running);
    PAGODA_CHECK(find(r->id) == r);
    PAGODA_CHECK(r->kv.blocks.empty());
    PAGODA_CHECK_EQ(r->num_computed, 0);
    PAGODA_CHECK_EQ(r->num_scheduled, 0);
  }
  for (const auto& [id, r] : requests_) {
    PAGODA_CHECK_EQ(id, r.id);
    PAGODA_CHECK_LE(static_cast<int>(r.tokens.size()), config_.max_model_len);
    PAGODA_CHECK_LT(r.num_output(), r.max_tokens);
  }
  for (int b = 0; b < kv_.num_blocks(); ++b) PAGODA_CHECK_EQ(refs[b], kv_.ref_count(b));
}

}  // namespace pagoda
