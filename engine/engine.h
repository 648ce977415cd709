// Engine: continuous batching of many requests over one model. submit() and cancel() are
// thread-safe; one engine loop thread runs the steps (DESIGN.md §2):
//   drain submissions and cancels → deadlines → Scheduler::schedule() → ModelRunner (flat
//   batch, forward, sampling) → stop tokens → Scheduler::update() → detokenizer and stop
//   strings → each request's OutputChannel.
// With async scheduling the loop keeps the device busy: while step N runs it plans and
// prepares step N+1 (a scheduler lookahead); when N's tokens come back it updates the
// scheduler, launches N+1 at once, and only then detokenizes and delivers N's tokens. A step
// may then still be in flight after a request's final message (the row of a request that
// just stopped): give the model to another user (a second engine, forward()) only once this
// engine is destroyed.
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
  // The most logprobs a request may ask for (SamplingParams::logprobs), in [0, 20]; more is
  // refused at submit. The engine reserves the logprobs op's buffers for every sequence of a
  // step ([max_num_seqs, vocab] f32 for its copy of their logits: 125 MiB
  // at 256 sequences and a 128K vocabulary); 0 reserves none.
  int max_logprobs = SamplingParams::kMaxLogprobs;
  // Decode steps replayed as step graphs (CUDA graphs) on backends that have them, in batch
  // buckets 1, 2, 4, ... up to the largest step (LlamaModel::enable_decode_graphs). Off by
  // default until a GPU run has checked it (scripts/device-check.sh compares both).
  bool decode_graphs = false;
  // Sampling on the backend (the sample op: the sampler's rule, where the logits are) for every
  // row, and the logprobs of rows that ask for them (the logprobs op), so that a step copies
  // back one id per row (and 1 + 2k numbers per row with k logprobs). Off: only
  // greedy rows without penalties take the backend's argmax (and logprobs); the others copy
  // their logits to the host sampler, which also computes their logprobs. The tokens are the same
  // either way (up to the rounding of double sums that kernels/ops.h SampleArgs describes).
  bool device_sampling = true;
  // Threads for the per-row host work of a step (logprobs; the host sampler's rows), which
  // runs in parallel across rows: 0 picks min(8, hardware threads); 1 runs it on the engine
  // thread. Results do not depend on it.
  int host_threads = 0;
  // Async scheduling (see above): the host's per-step work (planning the next step, building
  // its batch, detokenizing, stop strings, delivering) overlaps the device's step instead of
  // sitting between steps. The tokens are the same; a request that a stop token or stop string
  // ends has one more decode row computed for nothing, and so has one that a lookahead preempts
  // while its step runs (it samples that token again after it resumes). Off by default until
  // a GPU run has measured it (scripts/device-check.sh compares both).
  bool async_scheduling = false;
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
  // Async scheduling: steps planned while the step before ran, and sampled rows computed for
  // requests that had ended by the time their step came back (a stop one step earlier).
  int64_t lookahead_steps = 0, wasted_rows = 0;
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
  // One step from its plan to its delivery. Two alternate, so that step N's results are
  // delivered while step N+1 runs.
  struct StepSlot {
    StepPlan plan;
    EngineClock::time_point planned_at;
    std::vector<uint8_t> wants_logits;  // per plan.seqs entry
    std::vector<uint8_t> top_logprobs;  // per plan.seqs entry: logprobs from the backend
    ModelRunner::Sampled sampled;
    // Per plan.seqs entry, set by collect_step(): the sampled token (-1: none, or the request
    // ended before its row came back) and its logprobs when asked for.
    std::vector<int> row_tokens;
    std::vector<TokenLogprobs> row_logprobs;
    std::vector<EndedRequest> ended;  // by the scheduler's update() of this plan
  };

  void loop();
  void step();
  void drain_inbox();
  // schedule(), report aborts and preemptions, and prepare the batch; false when the plan is
  // empty.
  bool plan_step(StepSlot* slot);
  // Row sampling and pending input tokens (from the scheduler, updated with the step before),
  // then queue the step. On failure the caller ends its requests (fail_step), after it has
  // delivered the step before.
  Status launch_step(StepSlot* slot);
  // Wait for the step, take its tokens (host sampling and logprobs where asked), flag stop
  // tokens, Scheduler::update(). On failure its requests end with the error.
  bool collect_step(StepSlot* slot);
  // Detokenize, match stop strings (ending those requests), publish stats, emit.
  void deliver_step(StepSlot* slot);
  void fail_step(StepSlot* slot, const Status& error);
  void publish_stats_locked();                  // mu_ held
  Live& live(RequestId id, const char* where);  // CHECK-fails for an unknown id
  Live* find_live(RequestId id);                // null when it has ended
  // The per-row host work of the plan's sampled rows of live requests, in parallel across
  // rows. sample (collect_step): slot->row_tokens, from the backend's ids or, for rows whose
  // logits came back without device sampling, the host sampler. Else (deliver_step, off the
  // critical path): slot->row_logprobs of the rows that ask for logprobs.
  void host_row_work(StepSlot* slot, bool sample);
  void finish(RequestId id, FinishReason reason, const Status& error = OkStatus());
  void emit(Live& live, std::vector<int> new_ids, bool finished, FinishReason reason,
            const Status& error);

  LlamaModel* model_;
  const Tokenizer* tokenizer_;
  EngineConfig config_;
  SchedulerConfig sched_config_;
  std::unique_ptr<ModelRunner> runner_;
  Scheduler scheduler_;                    // engine thread only
  ModelRunner::RowSampling row_sampling_;  // reused across steps
  std::vector<int32_t> pending_tokens_;    // reused across steps
  StepSlot slots_[2];
  StepSlot* in_flight_ = nullptr;                    // launched, not yet collected
  int64_t lookahead_steps_ = 0, wasted_rows_ = 0;    // published in stats_
  std::unordered_map<RequestId, EndReason> ending_;  // deliver_step's (reused across steps)
  // host_row_work's rows (reused across steps).
  struct HostRow {
    size_t seq;           // plan.seqs index
    const float* logits;  // [vocab]
    const SamplingParams* params;
    const RequestState* state;
    uint64_t seed;
  };
  std::vector<HostRow> host_rows_;
  std::unique_ptr<ThreadPool> host_pool_;  // made on the first step with 2+ host rows
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
