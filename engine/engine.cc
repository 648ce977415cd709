#include "engine/engine.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "engine/engine_live.h"

namespace pagoda {

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
  if (config.max_logprobs < 0 || config.max_logprobs > SamplingParams::kMaxLogprobs)
    return field_error("max_logprobs", "must be in [0, " +
                                           std::to_string(SamplingParams::kMaxLogprobs) +
                                           "], got " + std::to_string(config.max_logprobs));
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
    // Rows of the logprobs op, when logprobs are allowed.
    const int logprob_rows = config.max_logprobs > 0 ? seqs : 0;
    PAGODA_RETURN_IF_ERROR(model->reserve(sc.max_num_batched_tokens, seqs,
                                          static_cast<int>(entries), seqs, 0, logprob_rows));
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
  if (r.params.logprobs > config_.max_logprobs)
    return field_error("logprobs", std::to_string(r.params.logprobs) + " exceeds this engine's " +
                                       "max_logprobs of " + std::to_string(config_.max_logprobs));
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
        return stop_ || !inbox_.empty() || !cancels_.empty() || scheduler_.has_unfinished() ||
               in_flight_ != nullptr;
      });
      if (stop_) break;
    }
    step();
  }
  // Shutting down: wait for a step still on the device, so the model is idle again (the
  // destructor ends every request as cancelled).
  if (in_flight_ != nullptr) (void)runner_->collect(&in_flight_->sampled);
  in_flight_ = nullptr;
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

Engine::Live* Engine::find_live(RequestId id) {
  const auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second.get();
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
  stats_.lookahead_steps = lookahead_steps_;
  stats_.wasted_rows = wasted_rows_;
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
