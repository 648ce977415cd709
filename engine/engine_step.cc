// The engine's step pipeline: plan → launch → collect → deliver (engine.h).
//
// Without async scheduling a step() runs the four in order. With it, a step() plans step N+1
// (a scheduler lookahead) before it collects step N, launches N+1 right after N's update, and
// delivers N while N+1 runs:
//
//   step():   plan N+1 │ collect N (wait, tokens, stop tokens, update) │ launch N+1 │ deliver N
//   device:  ──── N ──────────────────────┘                           └──── N+1 ────────────
//
// What must hold for that order:
// - The lookahead plan's rows whose input is step N's token (input_pending) read it from the
//   scheduler at launch, after update(N) appended it.
// - A request that update(N) ends may still have a row in step N+1: that row runs for nothing
//   and is skipped when N+1 comes back (its Live is gone by then). So is the row of a request
//   that the lookahead preempted while its step ran (Scheduler::planned_in).
// - Stop strings need the detokenizer, so they are matched in deliver, after update(N): such a
//   request is ended with Scheduler::finish() (its N+1 row, if any, is skipped likewise).
// - collect and deliver of one step happen in the same step() call, so nothing else (a
//   cancellation's final message) is emitted between a token's logprobs and the token.
#include <algorithm>

#include "engine/engine.h"
#include "engine/engine_live.h"

namespace pagoda {

// A request's logprobs fit in one row of the logprobs op.
static_assert(SamplingParams::kMaxLogprobs <= kMaxTopLogprobs);

void Engine::step() {
  drain_inbox();
  StepSlot* const running = in_flight_;
  StepSlot& next = slots_[running == &slots_[0] ? 1 : 0];
  const bool may_plan = running == nullptr || config_.async_scheduling;
  const bool planned = may_plan && scheduler_.has_unfinished() && plan_step(&next);
  lookahead_steps_ += planned && running != nullptr;
  bool collected = false;
  if (running != nullptr) {
    in_flight_ = nullptr;
    collected = collect_step(running);
  }
  Status launched = OkStatus();
  if (planned) {
    launched = launch_step(&next);
    if (launched.ok()) in_flight_ = &next;
  }
  if (collected) deliver_step(running);
  // A failed launch ends its requests only now, after step N's delivery: a request that N
  // ended (a stop token, whose next row was planned for nothing) keeps that ending, and one
  // that goes on gets N's token before the error.
  if (!launched.ok()) fail_step(&next, launched);
  if (!config_.async_scheduling && in_flight_ != nullptr) {
    StepSlot* const now = in_flight_;
    in_flight_ = nullptr;
    if (collect_step(now)) deliver_step(now);
  }
}

bool Engine::plan_step(StepSlot* slot) {
  StepPlan& plan = slot->plan;
  plan = scheduler_.schedule();
  for (RequestId id : plan.aborted) {
    Live* l = find_live(id);
    if (l == nullptr) continue;
    const FinishReason why = l->cancel_reason;
    finish(id, why == FinishReason::kNone ? FinishReason::kCancelled : why);
  }
  const auto now = slot->planned_at = EngineClock::now();
  for (RequestId id : plan.preempted) {
    Live& l = live(id, "preempted");
    ++l.preemptions;
    l.timeline.preempted_at.push_back(now);
  }
  if (plan.empty()) return false;
  // Rows are sampled where the logits are and copy back one id (device sampling: every row;
  // otherwise greedy rows without penalties, by argmax, and the rest copy back their logits for
  // the host sampler and the host's logprobs); those rows' logprobs come from the logprobs op,
  // 1 + 2k numbers each.
  slot->wants_logits.assign(plan.seqs.size(), 0);
  slot->top_logprobs.assign(plan.seqs.size(), 0);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSeq& s = plan.seqs[i];
    Live& l = live(s.id, "plan");
    if (s.admitted && !l.admitted) {
      l.admitted = true;
      l.timings.scheduled = now;
      l.usage.cached_tokens = s.num_cached_tokens;
    }
    if (!s.sample) continue;
    const SamplingParams& p = l.request.params;
    slot->wants_logits[i] = !config_.device_sampling && !greedy_on_backend(p);
    if (!slot->wants_logits[i]) slot->top_logprobs[i] = static_cast<uint8_t>(p.logprobs);
  }
  runner_->prepare(plan, slot->wants_logits, slot->top_logprobs);
  return true;
}

Status Engine::launch_step(StepSlot* slot) {
  const StepPlan& plan = slot->plan;
  const int vocab_size = model_->config().vocab_size;
  ModelRunner::RowSampling& rs = row_sampling_;
  rs.params.assign(plan.seqs.size(), SampleRowParams{});
  rs.penalty_ids.assign(plan.seqs.size(), {});
  rs.penalty_counts.assign(plan.seqs.size(), {});
  pending_tokens_.assign(plan.seqs.size(), 0);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSeq& s = plan.seqs[i];
    // Null when the update just made ended the request (its row runs for nothing).
    const RequestState* st = scheduler_.find(s.id);
    Live* l = find_live(s.id);
    if (s.input_pending && st != nullptr) pending_tokens_[i] = st->tokens.back();
    if (s.sample && config_.device_sampling && st != nullptr && l != nullptr) {
      const SamplingParams& p = l->request.params;
      rs.params[i] = sample_row_params(p, l->seed, static_cast<int64_t>(st->tokens.size()));
      if (has_penalties(p)) {
        // Kept up to date per request (O(new tokens)), not rebuilt from every token each step.
        l->penalties.update(
            {st->tokens.data(), static_cast<size_t>(st->prompt_len)},
            {st->tokens.data() + st->prompt_len, static_cast<size_t>(st->num_output())},
            vocab_size);
        // Views: the runner copies them into the batch (no table is touched until then).
        rs.penalty_ids[i] = l->penalties.ids();
        rs.penalty_counts[i] = l->penalties.counts();
      }
    }
  }
  return runner_->launch(config_.device_sampling ? &rs : nullptr, pending_tokens_, &slot->sampled);
}

void Engine::fail_step(StepSlot* slot, const Status& error) {
  for (const ScheduledSeq& s : slot->plan.seqs) {
    (void)scheduler_.finish(s.id, EndReason::kError);
    finish(s.id, FinishReason::kError, error);
  }
  (void)scheduler_.update(slot->plan, {});
}

bool Engine::collect_step(StepSlot* slot) {
  const StepPlan& plan = slot->plan;
  const Status run = runner_->collect(&slot->sampled);
  const auto computed = EngineClock::now();
  for (const ScheduledSeq& s : plan.seqs) {
    // A decode computes exactly the last sampled token of a running request; anything else
    // (re)computes a prefix. A resume whose prefix is all cached computes one token, but it
    // was admitted this step: a recompute.
    const RequestState* st = scheduler_.find(s.id);
    Live* l = find_live(s.id);
    if (st == nullptr || l == nullptr) continue;
    const bool decode = !s.admitted && s.num_tokens == 1 && s.start >= st->prompt_len &&
                        s.start == static_cast<int32_t>(st->tokens.size()) - 1;
    if (decode) continue;
    l->timeline.prefill_chunks.push_back(
        {slot->planned_at, computed, s.start, s.num_tokens, l->preemptions > 0});
  }
  if (!run.ok()) {
    fail_step(slot, run);
    return false;
  }
  host_row_work(slot, /*sample=*/true);
  const ModelConfig& mc = model_->config();
  std::vector<SampledToken> sampled;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const int token = slot->row_tokens[i];
    if (token < 0) continue;
    const ScheduledSeq& s = plan.seqs[i];
    Live& l = live(s.id, "sampled");
    const SamplingParams& p = l.request.params;
    const bool stop =
        (!p.ignore_eos && std::count(mc.eos_token_ids.begin(), mc.eos_token_ids.end(), token)) ||
        std::count(p.stop_token_ids.begin(), p.stop_token_ids.end(), token);
    if (stop) l.stop_reason = FinishReason::kStop;
    sampled.push_back({s.id, token, stop});
  }
  slot->ended = scheduler_.update(plan, sampled);
  return true;
}

void Engine::deliver_step(StepSlot* slot) {
  const StepPlan& plan = slot->plan;
  host_row_work(slot, /*sample=*/false);  // logprobs: nothing waits for them but the client
  int64_t generated = 0;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const int token = slot->row_tokens[i];
    if (token < 0) continue;
    const RequestId id = plan.seqs[i].id;
    Live* found = find_live(id);
    if (found == nullptr) continue;
    Live& l = *found;
    if (l.request.params.logprobs > 0) l.logprobs.push_back(std::move(slot->row_logprobs[i]));
    bool stop_string = false;
    if (l.detok) {
      const auto detok_start = EngineClock::now();
      l.text += l.detok->push(token);
      l.timeline.detokenize_busy += EngineClock::now() - detok_start;
      ++l.timeline.detokenized_tokens;
      for (const std::string& ss : l.request.stop_strings) {
        const size_t at = l.text.find(ss, l.emitted);
        if (at != std::string::npos) {
          l.text.resize(at);
          stop_string = true;
        }
      }
    }
    if (l.usage.completion_tokens == 0) l.timings.first_token = EngineClock::now();
    ++l.usage.completion_tokens;
    ++generated;
    if (!stop_string) continue;
    // A stop string ends the request whatever else this token did (as a stop token would).
    l.stop_reason = FinishReason::kStopSequence;
    const bool ended = std::any_of(slot->ended.begin(), slot->ended.end(),
                                   [&](const EndedRequest& e) { return e.id == id; });
    if (!ended && scheduler_.finish(id, EndReason::kStop).ok())
      slot->ended.push_back({id, EndReason::kStop});
  }
  // Publish the state first: a consumer that sees a final message also sees the engine
  // without that request (in stats() and in cancel()).
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const EndedRequest& e : slot->ended) known_.erase(e.id);
    publish_stats_locked();
    ++stats_.steps;
    stats_.computed_tokens += plan.num_batched_tokens;
    stats_.generated_tokens += generated;
  }
  // Each row's token goes out in its request's message, the final one for a request this step
  // ended (the ending_ map and the loop allocate nothing once warm: this runs every step).
  ending_.clear();
  for (const EndedRequest& e : slot->ended) ending_.emplace(e.id, e.reason);
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const int token = slot->row_tokens[i];
    const RequestId id = plan.seqs[i].id;
    const auto e = ending_.find(id);
    if (token < 0 && e == ending_.end()) continue;
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    Live& l = *it->second;
    std::vector<int> ids;
    if (token >= 0) ids.push_back(token);
    if (e == ending_.end()) {
      emit(l, std::move(ids), false, FinishReason::kNone, OkStatus());
      continue;
    }
    emit(l, std::move(ids), true, final_reason(l.stop_reason, e->second), OkStatus());
    live_.erase(it);
    ending_.erase(e);
  }
  for (const auto& [id, why] : ending_) {  // none expected: an ended request has its row here
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    emit(*it->second, {}, true, final_reason(it->second->stop_reason, why), OkStatus());
    live_.erase(it);
  }
}

void Engine::host_row_work(StepSlot* slot, bool sample) {
  const StepPlan& plan = slot->plan;
  const ModelRunner::Sampled& sampled = slot->sampled;
  const int vocab = model_->config().vocab_size;
  const bool on_backend = config_.device_sampling;
  if (sample) {
    slot->row_tokens.assign(plan.seqs.size(), -1);
    slot->row_logprobs.resize(plan.seqs.size());
  }
  host_rows_.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    if (!plan.seqs[i].sample) continue;
    // A request that ended while its row ran (an update or a stop string of the step before,
    // a cancellation), or that a lookahead preempted (it will sample this token again), gets
    // nothing. (By deliver, update() may have ended it since: its last token's logprobs are
    // still due.)
    const Live* l = find_live(plan.seqs[i].id);
    const RequestState* st = scheduler_.find(plan.seqs[i].id);
    if (l == nullptr || (sample && !scheduler_.planned_in(plan.seqs[i].id, plan.step))) {
      wasted_rows_ += sample;
      continue;
    }
    if (!sample && slot->row_tokens[i] < 0) continue;
    const int row = sampled.row_of_seq[i];
    if (sample && (on_backend || !slot->wants_logits[i])) slot->row_tokens[i] = sampled.ids[row];
    if (!sample && slot->top_logprobs[i] > 0) {  // computed by the backend
      const StepLogprobs& lp = sampled.logprobs;
      const int j = row - sampled.logit_rows;
      PAGODA_CHECK_GE(j, 0);
      PAGODA_CHECK_LT(j, lp.rows);
      TokenLogprobs& out = slot->row_logprobs[i];
      out.token_id = slot->row_tokens[i];
      out.logprob = lp.token_logprobs[j];
      out.top.clear();
      const int n = std::min<int>(slot->top_logprobs[i], lp.top);
      for (int k = 0; k < n; ++k)
        out.top.emplace_back(lp.top_ids[j * lp.top + k], lp.top_logprobs[j * lp.top + k]);
      sort_top_logprobs(out.top);
      continue;
    }
    if (!slot->wants_logits[i]) continue;  // no logits here (and no logprobs, or the backend's)
    if (sample ? on_backend : l->request.params.logprobs == 0 || slot->row_tokens[i] < 0) continue;
    host_rows_.push_back({i, sampled.logits.data() + static_cast<size_t>(row) * vocab,
                          &l->request.params, st, l->seed});
  }
  // Each row's result depends on that row alone, so rows go to the pool's threads in any split
  // (logprobs cost O(vocab) each: ~0.2 ms at 128K on one core, and a step may have many).
  std::vector<int>& row_tokens = slot->row_tokens;
  std::vector<TokenLogprobs>& row_logprobs = slot->row_logprobs;
  const auto work = [&](int64_t begin, int64_t end) {
    thread_local Sampler sampler;
    for (int64_t k = begin; k < end; ++k) {
      const HostRow& h = host_rows_[k];
      const std::span<const float> logits(h.logits, vocab);
      if (sample) {
        const RequestState* st = h.state;
        row_tokens[h.seq] = sampler.sample(
            logits, *h.params, {st->tokens.data(), static_cast<size_t>(st->prompt_len)},
            {st->tokens.data() + st->prompt_len, static_cast<size_t>(st->num_output())}, h.seed,
            static_cast<int64_t>(st->tokens.size()));
      } else {
        row_logprobs[h.seq] = sampler.logprobs(logits, row_tokens[h.seq], h.params->logprobs);
      }
    }
  };
  const int64_t n = static_cast<int64_t>(host_rows_.size());
  if (n >= 2 && config_.host_threads != 1) {
    if (!host_pool_) {
      const int hw = static_cast<int>(std::thread::hardware_concurrency());
      host_pool_ = std::make_unique<ThreadPool>(config_.host_threads > 0 ? config_.host_threads
                                                                         : std::clamp(hw, 1, 8));
    }
    host_pool_->parallel_for(n, 1, work);
  } else {
    work(0, n);
  }
}

}  // namespace pagoda
