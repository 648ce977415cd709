// ModelRunner: turns a StepPlan into the model's flat ragged batch (DESIGN.md §2), runs the
// forward pass and hands back the logits of the rows to sample. It owns the KV cache memory;
// which blocks belong to whom is the scheduler's business.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "engine/step_plan.h"
#include "models/llama.h"

namespace pagoda {

class ModelRunner {
 public:
  static StatusOr<std::unique_ptr<ModelRunner>> create(LlamaModel* model, int num_blocks,
                                                       int block_size);

  // What a step hands back for the sequences it samples.
  struct Sampled {
    std::vector<float> logits;  // [L, vocab]: the rows of sequences that want logits
    // [R]: the token of every sampled row chosen on the backend: with RowSampling every row's
    // (the sample op; rows that want logits too), else the argmax of rows that do not want
    // logits (entries of the others are not to be used).
    std::vector<int32_t> ids;
    // Per plan.seqs entry: its sampled row (index into ids; < L into logits when it
    // wants logits), or -1 when it samples nothing this step.
    std::vector<int> row_of_seq;
    // Of the rows that want logprobs from the backend: row L + j is logprobs' row j.
    StepLogprobs logprobs;
    int logit_rows = 0;  // L
  };

  // How the backend samples every sampled row, per plan.seqs entry (entries of rows that sample
  // nothing are ignored): the sample op's row parameters and penalty tables. The tables are
  // views of the caller's (the engine's per-request PenaltyTable), valid until launch()
  // returns: launch() copies them once, into the batch in sample-row order.
  struct RowSampling {
    std::vector<SampleRowParams> params;                   // [plan.seqs.size()]
    std::vector<std::span<const int32_t>> penalty_ids;     // [plan.seqs.size()]; may be empty
    std::vector<std::span<const int32_t>> penalty_counts;  // [plan.seqs.size()], ids' sizes
  };

  // Runs the plan: prepare(), launch(), collect(). wants_logits (per plan.seqs entry; empty:
  // all) says which sampled sequences need their logits on the host (for logprobs, or the host
  // sampler). With `sampling` every sampled row also gets its token from the sample op (after
  // its logits were copied back); without, rows that do not want logits get their argmax (the
  // greedy choice). The plan must have no input_pending rows.
  // top_logprobs (per plan.seqs entry; empty: none) > 0 asks the backend for the logprobs of
  // that sequence's sampled token and of its top_logprobs most likely tokens (the logprobs op;
  // rows that want logits get theirs on the host instead).
  Status execute(const StepPlan& plan, std::span<const uint8_t> wants_logits,
                 const RowSampling* sampling, Sampled* out,
                 std::span<const uint8_t> top_logprobs = {});

  // The same in three parts, so that a caller can plan and prepare step N+1 while step N runs
  // and deliver step N's tokens while step N+1 runs (async scheduling; engine.h).
  // prepare() builds the flat batch, reading the plan's views now (the scheduler may update()
  // before launch()); a row with input_pending gets its token at launch().
  void prepare(const StepPlan& plan, std::span<const uint8_t> wants_logits,
               std::span<const uint8_t> top_logprobs = {});
  // Queues the prepared step and returns without waiting for the device. pending_tokens[i] is
  // the input token of plan.seqs[i] when it has input_pending (empty when none has). Sets
  // out->row_of_seq; the logits and ids come with collect(). At most one step is in flight.
  Status launch(const RowSampling* sampling, std::span<const int32_t> pending_tokens, Sampled* out);
  // Waits for the launched step and sets out->ids.
  Status collect(Sampled* out);

 private:
  ModelRunner(LlamaModel* model, KvCache cache, int block_size)
      : model_(model), cache_(std::move(cache)), block_size_(block_size) {}

  LlamaModel* model_;
  KvCache cache_;
  int block_size_;
  ForwardBatch batch_;  // reused across steps: no allocation once the sizes have been seen
  // Of the prepared plan (reused across steps):
  size_t num_seqs_ = 0;
  std::vector<int> sample_order_;  // plan.seqs index of each sample row, in row order
  std::vector<int> row_of_seq_;    // [plan.seqs.size()] sample row, or -1
  std::vector<std::pair<int32_t, int32_t>> pending_;  // (token index, plan.seqs index)
  bool any_argmax_row_ = false;                       // a sample row that does not want logits
};

}  // namespace pagoda
