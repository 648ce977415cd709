#include "engine/engine.h"

#include <algorithm>
#include <cstdio>
#include <random>

namespace pagoda {

struct Engine::Live {
  RequestId id = 0;
  Request request;
  std::shared_ptr<OutputChannel> channel;
  uint64_t seed = 0;
  std::unique_ptr<IncrementalDetokenizer> detok;
  std::string text;     // detokenized output so far (cut at a stop string once matched)
  size_t emitted = 0;   // bytes of text already sent
  size_t holdback = 0;  // longest stop string - 1: bytes that may still start a match
  FinishReason stop_reason = FinishReason::kNone;    // set by our stop conditions
  FinishReason cancel_reason = FinishReason::kNone;  // set when we asked for an abort
  Usage usage;
  RequestTimings timings;
  int preemptions = 0;
  RequestTimeline timeline;
  bool admitted = false;
  std::vector<TokenLogprobs> logprobs;  // of sampled tokens not yet emitted (params.logprobs > 0)
};

namespace {

Status field_error(const std::string& field, const std::string& what) {
  return InvalidArgument(field + ": " + what);
}

// Bytes [0, n) of s end on a UTF-8 character boundary after moving n back over continuation
// bytes.
size_t utf8_boundary(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

// The sampler's greedy path with nothing that needs the logits on the host: no penalties, no
// logprobs. Then its choice is exactly the backend's argmax (kernels/ops.h ArgmaxArgs).
bool greedy_on_backend(const SamplingParams& p) {
  return (!(p.temperature > 0.0f) || p.top_k == 1) && p.repetition_penalty == 1.0f &&
         p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f && p.logprobs == 0;
}

FinishReason from_end_reason(EndReason r, FinishReason stop_reason) {
  switch (r) {
    case EndReason::kStop:
      return stop_reason == FinishReason::kNone ? FinishReason::kStop : stop_reason;
    case EndReason::kMaxTokens:
    case EndReason::kMaxModelLen: return FinishReason::kLength;
    case EndReason::kAborted: return FinishReason::kCancelled;
    case EndReason::kError: return FinishReason::kError;
  }
  return FinishReason::kError;
}

}  // namespace

StatusOr<std::unique_ptr<Engine>> Engine::create(LlamaModel* model, const Tokenizer* tokenizer,
                                                 const EngineConfig& config) {
  const ModelConfig& mc = model->config();
  SchedulerConfig sc;
  sc.block_size = config.block_size;
  sc.max_num_batched_tokens = config.max_num_batched_tokens;
  sc.max_num_seqs = config.max_num_seqs;
  sc.max_model_len = config.max_model_len > 0 ? config.max_model_len : mc.max_position_embeddings;
  if (sc.max_model_len > mc.max_position_embeddings)
    return field_error("max_model_len", std::to_string(sc.max_model_len) + " exceeds the model's " +
                                            std::to_string(mc.max_position_embeddings) +
                                            " positions");
  sc.enable_prefix_caching = config.enable_prefix_caching;
  sc.policy = config.policy;
  if (config.block_size <= 0) return field_error("block_size", "must be positive");
  if (sc.max_num_batched_tokens <= 0)
    return field_error("max_num_batched_tokens", "must be positive");
  if (sc.max_num_seqs <= 0) return field_error("max_num_seqs", "must be positive");
  if (config.host_threads < 0 || config.host_threads > 1024)
    return field_error("host_threads", "must be in [0, 1024]");
  // The workspace for the largest step, before the KV cache takes its share of what is left:
  // no step allocates (on a GPU a cudaMalloc mid-serving would synchronize, or fail once the
  // cache has taken the memory).
  {
    const int seqs = std::min(sc.max_num_seqs, sc.max_num_batched_tokens);
    const int64_t blocks_per_seq = (sc.max_model_len + config.block_size - 1) / config.block_size;
    const int64_t entries = int64_t{seqs} * blocks_per_seq;
    if (entries > (int64_t{1} << 30))
      return field_error("max_num_seqs", "times max_model_len / block_size is too large");
    PAGODA_RETURN_IF_ERROR(
        model->reserve(sc.max_num_batched_tokens, seqs, static_cast<int>(entries), seqs));
    if (config.decode_graphs) {
      std::vector<int> buckets;
      for (int b = 1; b < seqs; b *= 2) buckets.push_back(b);
      buckets.push_back(seqs);
      PAGODA_RETURN_IF_ERROR(
          model->enable_decode_graphs(std::move(buckets), static_cast<int>(blocks_per_seq)));
    }
  }
  sc.num_blocks = config.num_blocks;
  if (sc.num_blocks <= 0) {
    size_t kv_bytes = config.kv_cache_bytes;
    std::string source = "kv_cache_bytes";
    if (config.kv_cache_memory_fraction != 0) {
      if (!(config.kv_cache_memory_fraction > 0 && config.kv_cache_memory_fraction <= 1))
        return field_error(
            "kv_cache_memory_fraction",
            "must be in (0, 1], got " + std::to_string(config.kv_cache_memory_fraction));
      PAGODA_ASSIGN_OR_RETURN(const size_t available, model->backend()->available_memory_bytes());
      kv_bytes =
          static_cast<size_t>(config.kv_cache_memory_fraction * static_cast<double>(available));
      source = "kv_cache_memory_fraction";
    }
    const size_t per_block = model->kv_cache_shape(1, config.block_size).bytes_per_block();
    sc.num_blocks = static_cast<int>(std::min<size_t>(kv_bytes / per_block, 1 << 30));
    if (static_cast<int64_t>(sc.num_blocks) * sc.block_size < sc.max_model_len)
      return field_error(source, std::to_string(kv_bytes) + " bytes hold " +
                                     std::to_string(sc.num_blocks) +
                                     " blocks, fewer than one request of max_model_len " +
                                     std::to_string(sc.max_model_len) + " needs");
  }
  PAGODA_RETURN_IF_ERROR(sc.validate());
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<ModelRunner> runner,
                          ModelRunner::create(model, sc.num_blocks, sc.block_size));
  std::unique_ptr<Engine> e(new Engine(model, tokenizer, config, sc, std::move(runner)));
  e->thread_ = std::thread([p = e.get()] { p->loop(); });
  return e;
}

Engine::Engine(LlamaModel* model, const Tokenizer* tokenizer, const EngineConfig& config,
               const SchedulerConfig& sched_config, std::unique_ptr<ModelRunner> runner)
    : model_(model),
      tokenizer_(tokenizer),
      config_(config),
      sched_config_(sched_config),
      runner_(std::move(runner)),
      scheduler_(sched_config) {}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The loop has stopped: whatever is left ends as cancelled.
  for (auto& l : inbox_) live_[l->id] = std::move(l);
  inbox_.clear();
  std::vector<RequestId> ids;
  for (const auto& [id, l] : live_) ids.push_back(id);
  for (RequestId id : ids) finish(id, FinishReason::kCancelled);
}

StatusOr<RequestHandle> Engine::submit(Request r) {
  const ModelConfig& mc = model_->config();
  const int prompt_len = static_cast<int>(r.prompt_ids.size());
  if (prompt_len == 0) return field_error("prompt", "is empty");
  for (int id : r.prompt_ids)
    if (id < 0 || id >= mc.vocab_size)
      return field_error("prompt_ids", "token id " + std::to_string(id) +
                                           " is outside the vocabulary [0, " +
                                           std::to_string(mc.vocab_size) + ")");
  if (prompt_len >= sched_config_.max_model_len)
    return field_error("prompt", std::to_string(prompt_len) +
                                     " tokens leave no room in the context of " +
                                     std::to_string(sched_config_.max_model_len));
  PAGODA_RETURN_IF_ERROR(r.params.validate());
  for (int id : r.params.stop_token_ids)
    if (id >= mc.vocab_size)
      return field_error("stop_token_ids", "id " + std::to_string(id) +
                                               " is outside the vocabulary [0, " +
                                               std::to_string(mc.vocab_size) + ")");
  if (prompt_len + static_cast<int64_t>(r.params.max_tokens) > sched_config_.max_model_len)
    return field_error("max_tokens", std::to_string(r.params.max_tokens) + " with a prompt of " +
                                         std::to_string(prompt_len) +
                                         " tokens exceeds the context of " +
                                         std::to_string(sched_config_.max_model_len));
  if (r.priority < -config_.max_priority || r.priority > config_.max_priority)
    return field_error("priority", std::to_string(r.priority) + " is outside [-" +
                                       std::to_string(config_.max_priority) + ", " +
                                       std::to_string(config_.max_priority) + "]");
  size_t longest_stop = 0;
  for (const std::string& s : r.stop_strings) {
    if (s.empty()) return field_error("stop", "stop strings must not be empty");
    longest_stop = std::max(longest_stop, s.size());
  }
  if (!r.stop_strings.empty() && tokenizer_ == nullptr)
    return field_error("stop", "stop strings need a tokenizer; this engine has none");

  auto live = std::make_unique<Live>();
  live->channel = std::make_shared<OutputChannel>();
  live->seed = r.params.seed
                   ? *r.params.seed
                   : std::random_device{}() * 0x9e3779b97f4a7c15ull + std::random_device{}();
  if (tokenizer_) {
    // Primed with the prompt, so the output continues its text (a leading space stays).
    live->detok = std::make_unique<IncrementalDetokenizer>(tokenizer_);
    for (int id : r.prompt_ids) (void)live->detok->push(id);
  }
  live->holdback = longest_stop > 0 ? longest_stop - 1 : 0;
  live->usage.prompt_tokens = prompt_len;
  live->timings.queued = EngineClock::now();
  live->request = std::move(r);
  RequestHandle handle;
  handle.outputs = live->channel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return Unavailable("engine is shutting down");
    live->id = handle.id = next_id_++;
    known_[live->id] = true;
    inbox_.push_back(std::move(live));
  }
  wake_.notify_all();
  return handle;
}

Status Engine::cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!known_.count(id)) return NotFound("request " + std::to_string(id) + " is not running");
    cancels_.push_back(id);
  }
  wake_.notify_all();
  return OkStatus();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stop_ || !inbox_.empty() || !cancels_.empty() || scheduler_.has_unfinished();
      });
      if (stop_) return;
    }
    step();
  }
}

void Engine::drain_inbox() {
  std::vector<std::unique_ptr<Live>> arrivals;
  std::vector<RequestId> cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    arrivals.swap(inbox_);
    cancels.swap(cancels_);
  }
  for (auto& l : arrivals) {
    NewRequest nr;
    nr.id = l->id;
    nr.prompt.assign(l->request.prompt_ids.begin(), l->request.prompt_ids.end());
    nr.max_tokens = l->request.params.max_tokens;
    nr.priority = l->request.priority;
    nr.arrival = l->request.arrival.value_or(l->timings.queued).time_since_epoch().count();
    nr.cache_salt = l->request.cache_salt;
    const RequestId id = l->id;
    live_[id] = std::move(l);
    const Status s = scheduler_.add(std::move(nr));
    if (!s.ok()) finish(id, FinishReason::kError, s);
  }
  for (RequestId id : cancels) {
    auto it = live_.find(id);
    if (it == live_.end() || it->second->cancel_reason != FinishReason::kNone) continue;
    it->second->cancel_reason = FinishReason::kCancelled;
    (void)scheduler_.abort(id);
  }
  const auto now = EngineClock::now();
  for (auto& [id, l] : live_) {
    if (l->cancel_reason == FinishReason::kNone && l->request.deadline &&
        now >= *l->request.deadline) {
      l->cancel_reason = FinishReason::kTimeLimit;
      (void)scheduler_.abort(id);
    }
  }
}

void Engine::step() {
  drain_inbox();
  if (!scheduler_.has_unfinished()) return;
  StepPlan plan = scheduler_.schedule();
  for (RequestId id : plan.aborted) {
    auto it = live_.find(id);
    if (it == live_.end()) continue;
    const FinishReason why = it->second->cancel_reason;
    finish(id, why == FinishReason::kNone ? FinishReason::kCancelled : why);
  }
  const auto now = EngineClock::now();
  for (RequestId id : plan.preempted) {
    Live& l = live(id, "preempted");
    ++l.preemptions;
    l.timeline.preempted_at.push_back(now);
  }
  if (plan.empty()) return;

  for (const ScheduledSeq& s : plan.seqs) {
    Live& l = live(s.id, "admitted");
    if (s.admitted && !l.admitted) {
      l.admitted = true;
      l.timings.scheduled = now;
      l.usage.cached_tokens = s.num_cached_tokens;
    }
  }
  // Rows are sampled where the logits are and copy back one id (device sampling: every row,
  // and rows that ask for logprobs also copy back their logits for the host's logprobs;
  // otherwise greedy rows without penalties, by argmax, and the rest copy back their logits
  // for the host sampler).
  const int vocab_size = model_->config().vocab_size;
  wants_logits_.assign(plan.seqs.size(), 0);
  ModelRunner::RowSampling& rs = row_sampling_;
  rs.params.assign(plan.seqs.size(), SampleRowParams{});
  rs.penalty_start.assign(1, 0);
  rs.penalty_ids.clear();
  rs.penalty_counts.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    if (plan.seqs[i].sample) {
      const Live& l = live(plan.seqs[i].id, "plan");
      const SamplingParams& p = l.request.params;
      wants_logits_[i] = config_.device_sampling ? p.logprobs > 0 : !greedy_on_backend(p);
      if (config_.device_sampling) {
        const RequestState* st = scheduler_.find(plan.seqs[i].id);
        rs.params[i] = sample_row_params(p, l.seed, static_cast<int64_t>(st->tokens.size()));
        sampler_.penalty_table(
            p, {st->tokens.data(), static_cast<size_t>(st->prompt_len)},
            {st->tokens.data() + st->prompt_len, static_cast<size_t>(st->num_output())}, vocab_size,
            &rs.penalty_ids, &rs.penalty_counts);
      }
    }
    rs.penalty_start.push_back(static_cast<int32_t>(rs.penalty_ids.size()));
  }
  const Status run =
      runner_->execute(plan, wants_logits_, config_.device_sampling ? &rs : nullptr, &sampled_);
  const auto computed = EngineClock::now();
  for (const ScheduledSeq& s : plan.seqs) {
    // A decode computes exactly the last sampled token of a running request; anything else
    // (re)computes a prefix. A resume whose prefix is all cached computes one token, but it
    // was admitted this step: a recompute.
    const RequestState* st = scheduler_.find(s.id);
    const bool decode = !s.admitted && s.num_tokens == 1 && s.start >= st->prompt_len &&
                        s.start == static_cast<int32_t>(st->tokens.size()) - 1;
    if (decode) continue;
    Live& l = live(s.id, "prefill");
    l.timeline.prefill_chunks.push_back({now, computed, s.start, s.num_tokens, l.preemptions > 0});
  }
  if (!run.ok()) {
    for (const ScheduledSeq& s : plan.seqs) {
      (void)scheduler_.finish(s.id, EndReason::kError);
      finish(s.id, FinishReason::kError, run);
    }
    (void)scheduler_.update(plan, {});
    return;
  }

  const ModelConfig& mc = model_->config();
  host_row_work(plan);
  std::vector<SampledToken> sampled;
  std::unordered_map<RequestId, int> new_token;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const ScheduledSeq& s = plan.seqs[i];
    if (!s.sample) continue;
    Live& l = live(s.id, "sampled");
    const SamplingParams& p = l.request.params;
    const int token = row_tokens_[i];
    if (p.logprobs > 0) l.logprobs.push_back(std::move(row_logprobs_[i]));
    bool stop = false;
    if ((!p.ignore_eos && std::count(mc.eos_token_ids.begin(), mc.eos_token_ids.end(), token)) ||
        std::count(p.stop_token_ids.begin(), p.stop_token_ids.end(), token)) {
      stop = true;
      l.stop_reason = FinishReason::kStop;
    }
    if (l.detok) {
      const auto detok_start = EngineClock::now();
      l.text += l.detok->push(token);
      l.timeline.detokenize_busy += EngineClock::now() - detok_start;
      ++l.timeline.detokenized_tokens;
      for (const std::string& ss : l.request.stop_strings) {
        const size_t from = l.emitted;
        const size_t at = l.text.find(ss, from);
        if (at != std::string::npos) {
          l.text.resize(at);
          stop = true;
          l.stop_reason = FinishReason::kStopSequence;
        }
      }
    }
    if (l.usage.completion_tokens == 0) l.timings.first_token = EngineClock::now();
    ++l.usage.completion_tokens;
    sampled.push_back({s.id, token, stop});
    new_token[s.id] = token;
  }
  const std::vector<EndedRequest> ended = scheduler_.update(plan, sampled);
  // Publish the state first: a consumer that sees a final message also sees the engine
  // without that request (in stats() and in cancel()).
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const EndedRequest& e : ended) known_.erase(e.id);
    publish_stats_locked();
    ++stats_.steps;
    stats_.computed_tokens += plan.num_batched_tokens;
    stats_.generated_tokens += static_cast<int64_t>(sampled.size());
  }
  for (const EndedRequest& e : ended) {
    auto it = live_.find(e.id);
    if (it == live_.end()) continue;
    std::vector<int> ids;
    if (auto t = new_token.find(e.id); t != new_token.end()) {
      ids.push_back(t->second);
      new_token.erase(t);
    }
    Live& l = *it->second;
    emit(l, std::move(ids), true, from_end_reason(e.reason, l.stop_reason), OkStatus());
    live_.erase(it);
  }
  for (const auto& [id, token] : new_token)
    emit(live(id, "emit"), {token}, false, FinishReason::kNone, OkStatus());
}

void Engine::host_row_work(const StepPlan& plan) {
  const int vocab = model_->config().vocab_size;
  const bool on_backend = config_.device_sampling;
  row_tokens_.assign(plan.seqs.size(), -1);
  row_logprobs_.resize(plan.seqs.size());
  host_rows_.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    if (!plan.seqs[i].sample) continue;
    const int row = sampled_.row_of_seq[i];
    if (!wants_logits_[i]) {
      row_tokens_[i] = sampled_.ids[row];
      continue;
    }
    if (on_backend) row_tokens_[i] = sampled_.ids[row];
    const Live& l = live(plan.seqs[i].id, "host row");
    host_rows_.push_back({i, sampled_.logits.data() + static_cast<size_t>(row) * vocab,
                          &l.request.params, scheduler_.find(plan.seqs[i].id), l.seed});
  }
  // Each row's result depends on that row alone, so rows go to the pool's threads in any split
  // (logprobs cost O(vocab) each: ~0.2 ms at 128K on one core, and a step may have many).
  const auto work = [&](int64_t begin, int64_t end) {
    thread_local Sampler sampler;
    for (int64_t k = begin; k < end; ++k) {
      const HostRow& h = host_rows_[k];
      const std::span<const float> logits(h.logits, vocab);
      int& token = row_tokens_[h.seq];
      if (!on_backend) {
        const RequestState* st = h.state;
        token = sampler.sample(
            logits, *h.params, {st->tokens.data(), static_cast<size_t>(st->prompt_len)},
            {st->tokens.data() + st->prompt_len, static_cast<size_t>(st->num_output())}, h.seed,
            static_cast<int64_t>(st->tokens.size()));
      }
      if (h.params->logprobs > 0)
        row_logprobs_[h.seq] = sampler.logprobs(logits, token, h.params->logprobs);
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

Engine::Live& Engine::live(RequestId id, const char* where) {
  auto it = live_.find(id);
  if (it == live_.end()) {
    std::fprintf(stderr, "engine: request %lld unknown at %s\n", static_cast<long long>(id), where);
    PAGODA_CHECK(it != live_.end());
  }
  return *it->second;
}

void Engine::emit(Live& l, std::vector<int> new_ids, bool finished, FinishReason reason,
                  const Status& error) {
  RequestOutput out;
  out.id = l.id;
  out.new_token_ids = std::move(new_ids);
  out.logprobs = std::move(l.logprobs);
  l.logprobs.clear();
  if (finished && l.detok && reason != FinishReason::kStopSequence) l.text += l.detok->flush();
  size_t upto = l.text.size();
  if (!finished)
    upto = utf8_boundary(l.text, l.text.size() > l.holdback ? l.text.size() - l.holdback : 0);
  if (upto > l.emitted) {
    out.text = l.text.substr(l.emitted, upto - l.emitted);
    l.emitted = upto;
  }
  out.finished = finished;
  out.finish_reason = reason;
  out.usage = l.usage;
  if (finished) {
    l.timings.finished = EngineClock::now();
    out.timeline = std::make_shared<const RequestTimeline>(std::move(l.timeline));
  }
  out.timings = l.timings;
  out.num_preemptions = l.preemptions;
  out.error = error;
  l.channel->push(std::move(out));
}

void Engine::publish_stats_locked() {
  stats_.running = scheduler_.num_running();
  stats_.waiting = scheduler_.num_waiting();
  stats_.kv_usage = scheduler_.kv_usage();
  stats_.preemptions = scheduler_.num_preemptions();
  stats_.prefix_hit_rate = scheduler_.prefix_hit_rate();
  stats_.prefix_queries = scheduler_.kv().prefix_queries();
  stats_.prefix_hits = scheduler_.kv().prefix_hits();
  const LlamaModel::GraphStats g = model_->graph_stats();  // the loop thread's own counters
  stats_.graph_captures = g.captures;
  stats_.graph_replays = g.replays;
  stats_.graph_failures = g.failures;
}

void Engine::finish(RequestId id, FinishReason reason, const Status& error) {
  auto it = live_.find(id);
  if (it == live_.end()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    known_.erase(id);
    publish_stats_locked();
  }
  emit(*it->second, {}, true, reason, error);
  live_.erase(it);
}

}  // namespace pagoda
