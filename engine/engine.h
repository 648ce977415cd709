// Engine: continuous batching of many requests over one model. submit() and cancel() are
// thread-safe; one engine loop thread runs the steps (DESIGN.md §2):
//   drain submissions and cancels → deadlines → Scheduler::schedule() → ModelRunner (flat
//   batch, forward) → Sampler per sampled row → stop conditions → Scheduler::update() →
//   each request's OutputChannel.
// A request's outputs carry new token ids, a text delta (when the engine has a tokenizer),
// usage and timings; the last message says why it finished.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/thread_pool.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {

struct EngineConfig {
  int block_size = 16;
  // KV cache size, first that applies: num_blocks; kv_cache_memory_fraction of the memory the
  // backend has available when the engine starts; kv_cache_bytes.
  int num_blocks = 0;
  double kv_cache_memory_fraction = 0;
  size_t kv_cache_bytes = size_t{256} << 20;
  int max_num_batched_tokens = 2048;
  int max_num_seqs = 256;
  int max_model_len = 0;  // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
  int max_priority = 1000;  // priorities outside [-max, max] are refused
  // Decode steps replayed as step graphs (CUDA graphs) on backends that have them, in batch
  // buckets 1, 2, 4, ... up to the largest step (LlamaModel::enable_decode_graphs). Off by
  // default until a GPU run has checked it (scripts/device-check.sh compares both).
  bool decode_graphs = false;
  // Sampling on the backend (the sample op: the sampler's rule, where the logits are) for every
  // row that does not ask for logprobs, so that a step copies back one id per row. Off: only
  // greedy rows without penalties take the backend's argmax; the others copy their logits to
  // the host sampler. The tokens are the same either way (up to the rounding of double sums
  // that kernels/ops.h SampleArgs describes).
  bool device_sampling = true;
  // Threads for the per-row host work of a step (logprobs; the host sampler's rows), which
  // runs in parallel across rows: 0 picks min(8, hardware threads); 1 runs it on the engine
  // thread. Results do not depend on it.
  int host_threads = 0;
};

struct RequestHandle {
  RequestId id = 0;
  std::shared_ptr<OutputChannel> outputs;
};

struct EngineStats {
  int running = 0, waiting = 0;
  double kv_usage = 0;
  int64_t preemptions = 0, steps = 0, computed_tokens = 0, generated_tokens = 0;
  double prefix_hit_rate = 0;
  int64_t prefix_queries = 0, prefix_hits = 0;                        // in tokens
  int64_t graph_captures = 0, graph_replays = 0, graph_failures = 0;  // decode step graphs
};

class Engine {
 public:
  // model (and tokenizer, which may be null: then requests are token ids only and stop
  // strings are refused) must outlive the engine. Starts the loop thread.
  static StatusOr<std::unique_ptr<Engine>> create(LlamaModel* model, const Tokenizer* tokenizer,
                                                  const EngineConfig& config);
  ~Engine();  // cancels what is left (CANCELLED) and joins the loop
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues. Bad input → InvalidArgument naming the field; nothing is queued.
  StatusOr<RequestHandle> submit(Request request);
  // Ends the request at the next step (CANCELLED); its blocks are freed then. NotFound if the
  // id is unknown or already finished.
  Status cancel(RequestId id);
  EngineStats stats() const;
  const SchedulerConfig& scheduler_config() const { return sched_config_; }

 private:
  struct Live;  // per-request engine state (channel, detokenizer, stop strings, timings)

  Engine(LlamaModel* model, const Tokenizer* tokenizer, const EngineConfig& config,
         const SchedulerConfig& sched_config, std::unique_ptr<ModelRunner> runner);
  void loop();
  void step();
  void drain_inbox();
  void publish_stats_locked();                  // mu_ held
  Live& live(RequestId id, const char* where);  // CHECK-fails for an unknown id
  // Fills row_tokens_ and row_logprobs_ for the plan's sampled rows: ids from the backend, the
  // host sampler and logprobs for rows that copied their logits back, in parallel across rows.
  void host_row_work(const StepPlan& plan);
  void finish(RequestId id, FinishReason reason, const Status& error = OkStatus());
  void emit(Live& live, std::vector<int> new_ids, bool finished, FinishReason reason,
            const Status& error);

  LlamaModel* model_;
  const Tokenizer* tokenizer_;
  EngineConfig config_;
  SchedulerConfig sched_config_;
  std::unique_ptr<ModelRunner> runner_;
  Scheduler scheduler_;                    // engine thread only
  Sampler sampler_;                        // engine thread only
  ModelRunner::Sampled sampled_;           // reused across steps
  ModelRunner::RowSampling row_sampling_;  // reused across steps
  std::vector<uint8_t> wants_logits_;
  // host_row_work's rows and results, per plan.seqs entry (reused across steps).
  struct HostRow {
    size_t seq;           // plan.seqs index
    const float* logits;  // [vocab]
    const SamplingParams* params;
    const RequestState* state;
    uint64_t seed;
  };
  std::vector<HostRow> host_rows_;
  std::vector<int> row_tokens_;
  std::vector<TokenLogprobs> row_logprobs_;
  std::unique_ptr<ThreadPool> host_pool_;  // made on the first step with 2+ host rows // per
                                           // plan.seqs entry
  std::unordered_map<RequestId, std::unique_ptr<Live>> live_;  // engine thread only

  // Shared with submit()/cancel().
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Live>> inbox_;
  std::vector<RequestId> cancels_;
  std::unordered_map<RequestId, bool> known_;  // submitted and not yet finished
  RequestId next_id_ = 1;
  bool stop_ = false;
  EngineStats stats_;  // published after each step
  std::thread thread_;
};

}  // namespace pagoda
