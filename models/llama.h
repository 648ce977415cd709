// LlamaModel: the Llama-family forward pass (llama, mistral, qwen2; tied or untied embeddings;
// GQA; llama3 RoPE scaling), written once against Backend. It does not know which device runs
// it and it does not schedule: it computes one flat ragged batch (DESIGN.md §2).
#pragma once

#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "models/kv_cache.h"
#include "models/step_inputs.h"
#include "models/weights.h"

namespace pagoda {

// One step's flat batch, on the host. T new tokens from B sequences; R rows to sample.
struct ForwardBatch {
  std::vector<int32_t> token_ids;     // [T]
  std::vector<int32_t> positions;     // [T]
  std::vector<int32_t> slot_mapping;  // [T] block * block_size + offset
  std::vector<int32_t> block_tables;  // [B, max_blocks_per_seq] row-major, unused entries 0
  int max_blocks_per_seq = 0;
  std::vector<int32_t> seq_lens;     // [B] context length after this step
  std::vector<int32_t> query_start;  // [B + 1]
  std::vector<int32_t> sample_rows;  // [R] rows of [0, T) whose logits are wanted; may be empty
  // The leading sample rows whose logits are copied back to the host (-1: all R). The others
  // are wanted only for their argmax (greedy rows): see forward().
  int num_logit_rows = -1;
  // Logprobs where the logits are (the logprobs op, kernels/ops.h LogprobsArgs) of the
  // num_logprob_rows sample rows right after the logit rows ([L, L + P)): the log-probability
  // of the token this step picks for each (so they need launch's want_ids) and of its
  // num_top_logprobs most likely tokens (clamped to the vocabulary), in descending logit order.
  // They copy back 1 + 2K numbers instead of their logits.
  int num_logprob_rows = 0;
  int num_top_logprobs = 0;  // in [0, kMaxTopLogprobs]
  // Sampling on the backend (the sample op, kernels/ops.h SampleArgs) of every sample row: one
  // SampleRowParams each, and their penalty tables (penalty_start [R + 1] into penalty_ids /
  // penalty_counts; all three may be empty when no row has penalties). The logits of rows
  // [0, L) are copied back before the op runs. Empty sample_params: every row gets its argmax
  // instead (the greedy choice).
  std::vector<SampleRowParams> sample_params;  // [R]
  std::vector<int32_t> penalty_start;          // [R + 1] or empty
  std::vector<int32_t> penalty_ids;            // [P] distinct within a row, in [0, vocab)
  std::vector<int32_t> penalty_counts;         // [P] >= 0: occurrences in the output

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_seqs() const { return static_cast<int>(seq_lens.size()); }
  // Checks sizes and ranges against each other; InvalidArgument naming the field.
  Status validate(int block_size, int num_blocks) const;
};

// A host copy of `src` (any float dtype) in dtype `to`, rounded to nearest even; `storage`
// owns the memory the result points into.
TensorView convert_tensor(const TensorView& src, DType to, HostBuffer* storage);

// What a step's logprobs op hands back (ForwardBatch::num_logprob_rows rows, K top entries
// each): row j is sample row L + j.
struct StepLogprobs {
  int rows = 0;
  int top = 0;                        // K: num_top_logprobs clamped to the vocabulary
  std::vector<float> token_logprobs;  // [rows]
  std::vector<int32_t> top_ids;       // [rows, K] in descending logit order (ties: id asc)
  std::vector<float> top_logprobs;    // [rows, K]
};

class LlamaModel {
 public:
  // Takes the weights from `loaded` (uploads them, or on the CPU uses them in place: then
  // `loaded` must outlive the model). `backend` must outlive the model. Each layer multiplies by
  // the fused self_attn.qkv_proj and mlp.gate_up_proj that the loaders make
  // (fuse_layer_weights): one GEMM for q/k/v and one for gate/up. For a LoadedModel that lacks
  // them they are assembled here from the parts: uploaded (the parts are not), or on the CPU
  // kept by the model beside the parts (the one case where a weight is held twice).
  static StatusOr<std::unique_ptr<LlamaModel>> create(const LoadedModel& loaded, Backend* backend);

  const ModelConfig& config() const { return config_; }
  Backend* backend() const { return backend_; }
  // The KV cache shape for `num_blocks` blocks of `block_size` tokens, in the activation dtype.
  KvCacheShape kv_cache_shape(int num_blocks, int block_size) const;

  // Runs the batch; writes logits [L, vocab] (f32, row-major) for the first L of
  // batch.sample_rows (L = num_logit_rows, or R when -1), and, when argmax_ids is given, [R]
  // ids computed where the logits are, so those rows copy back one id instead of a row of
  // floats: with batch.sample_params, every row's sampled token; without, every row's argmax
  // (ArgmaxArgs' rule: the sampler's greedy choice).
  // It is launch(batch, cache, argmax_ids != nullptr), then collect(logits, argmax_ids,
  // logprobs).
  Status forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>* logits,
                 std::vector<int32_t>* argmax_ids = nullptr, StepLogprobs* logprobs = nullptr);

  // forward() in two halves, so that an engine can queue step N + 1 on the device and do the
  // host work of step N while it runs (async scheduling). At most one step is in flight.
  //
  // launch() queues the step: validates the batch, uploads its inputs, runs the layers (or the
  // decode graph), queues the copy of the logits of the first L rows into page-locked host
  // memory, and, when want_ids and R > 0, runs the sample op if the batch has sample_params
  // and queues the copy of the R ids the same way (Backend::copy_to_host_async), then the
  // logprobs op on the logprob rows (on a copy of their logits made before the sample op,
  // which overwrites them) and the copy of its results. It returns
  // without waiting for the device. FailedPrecondition when a step is already in flight (that
  // step stays collectable); any failure leaves no step in flight.
  Status launch(const ForwardBatch& batch, KvCache& cache, bool want_ids);
  // Waits for the step in flight and writes its logits [L, vocab], R ids and the logprob
  // rows' results (each may be null: dropped); ids are empty when launched without want_ids or
  // R == 0, logprobs has 0 rows when the batch had none. FailedPrecondition when no step is in
  // flight. After it returns, ok or not, no step is in flight.
  Status collect(std::vector<float>* logits, std::vector<int32_t>* ids,
                 StepLogprobs* logprobs = nullptr);
  bool step_in_flight() const { return step_.in_flight; }

  // Grows the activation workspace and the step inputs to hold a step of up to `tokens` tokens
  // from `seqs` sequences with `block_entries` block-table entries in all, `sample_rows` rows
  // of logits, `penalties` penalty-table entries (at least 256 per sample row are kept) and
  // `logprob_rows` rows of the logprobs op (its copy of their logits, [rows, vocab] f32, and
  // its results).
  // forward() grows them on demand; a caller that reserves its largest step up front gets no
  // allocation inside a step (and sizes the KV cache from what is left). The page-locked host
  // buffers that a step's logits and ids come back into are sized here too (R rows; host
  // memory, not in workspace_bytes). FailedPrecondition
  // while a step is in flight (its buffers may not move under it).
  Status reserve(int tokens, int seqs, int block_entries, int sample_rows, int penalties = 0,
                 int logprob_rows = 0);
  // How many times the workspace has grown (every buffer of one reserve() counts once).
  int64_t workspace_grows() const { return ws_.grows; }
  size_t workspace_bytes() const;  // on the backend's device (not the host staging buffers)

  // Decode steps as replayed step graphs (CUDA graphs), when the backend has them (no-op
  // otherwise): a step whose B rows are all single-token decodes, B <= the largest bucket, runs
  // padded to the smallest bucket >= B (padding rows write no KV and are never copied back)
  // with block tables max_blocks_per_seq wide. A bucket's first step runs eagerly, then is
  // captured; later ones replay the graph: one launch instead of a few hundred. A graph is
  // recaptured when the KV cache or the workspace it recorded has moved; a bucket whose
  // capture fails stays eager. buckets: ascending, positive.
  Status enable_decode_graphs(std::vector<int> buckets, int max_blocks_per_seq);
  struct GraphStats {
    int64_t captures = 0, replays = 0, failures = 0;
  };
  GraphStats graph_stats() const { return graphs_.stats; }

 private:
  struct Layer {
    TensorView attn_norm;  // [hidden]
    TensorView w_qkv;      // [(H + 2 KV) hd, hidden]: q, k, v rows
    TensorView b_qkv;      // [(H + 2 KV) hd] or empty (qwen2 only)
    TensorView wo;         // [hidden, H hd]
    TensorView ffn_norm;   // [hidden]
    TensorView w_gate_up;  // [2 inter, hidden]: gate rows, then up rows
    TensorView w_down;     // [hidden, inter]
  };
  // Activation and index buffers, grown to the largest batch seen (never shrunk). Per layer:
  //   hidden   [T, hidden]  attention output projection, then the MLP output
  //   residual [T, hidden]  the residual stream
  //   normed   [T, max(hidden, H hd, inter)]: the norm output, then the rotated q
  //            [T, H, hd], then (after the MLP norm) swiglu's output [T, inter]
  //   wide     [T, max((H + 2 KV) hd, 2 inter)]: q|k|v, then the attention output [T, H hd],
  //            then gate|up
  // (a buffer is reused once what it held is consumed), so the fused GEMMs need no more memory
  // than separate q, k, v, attn, gate, up buffers did unless inter > hidden + (2 H + 2 KV) hd.
  struct Workspace {
    int capacity_tokens = 0;
    int capacity_sample_rows = 0;
    int capacity_logprob_rows = 0;
    int64_t grows = 0;                                   // also counts moves of the step inputs
    DeviceBuffer hidden, residual, normed, wide;         // [T, *]
    DeviceBuffer picked, picked_normed, logits, argmax;  // [R, *]
    // The logprob rows' logits, copied before the sample op overwrites them: [R, vocab] f32.
    DeviceBuffer logprob_logits;
    // The logprobs op's results, [R (1 + 2 kMaxTopLogprobs)] 32-bit words: for a step with P
    // rows and K top entries, token_logprobs [P] f32, top_ids [P, K] i32, top_logprobs [P, K]
    // f32, one after another (one copy back).
    DeviceBuffer logprobs;
    // Host staging memory (page-locked on a GPU) where a step's outputs come back.
    DeviceBuffer logits_host;       // [R, vocab] f32
    DeviceBuffer ids_host;          // [R] i32
    DeviceBuffer logprobs_host;     // as `logprobs`
    bool scratch_reserved = false;  // Backend::reserve_scratch() has run
  };

  // The step between launch() and collect().
  struct Step {
    bool in_flight = false;
    int64_t logit_rows = 0;  // rows of logits queued into ws_.logits_host
    int64_t ids = 0;         // rows whose ids are queued into ws_.ids_host (0: none)
    int64_t logprob_rows = 0, top_logprobs = 0;  // queued into ws_.logprobs_host
  };

  struct DecodeGraphs {
    std::vector<int> buckets;  // empty: off
    int max_blocks_per_seq = 0;
    std::vector<int> captured, failed;    // buckets
    std::vector<const void*> cache_seen;  // the K/V buffers the graphs write into
    std::vector<const void*> cache_now;   // this step's (reused: no allocation per step)
    int64_t workspace_grows = -1;         // ws_.grows when they were captured
    GraphStats stats;
    ForwardBatch padded;  // reused: no allocation once the sizes have been seen
  };

  LlamaModel() = default;
  // The device work of a step whose indices are uploaded: T tokens, B sequences, R sampled
  // rows, block tables max_blocks wide. Queues ops only (capturable).
  Status run_layers(KvCache& cache, int64_t T, int64_t B, int64_t R, int max_blocks, bool argmax);
  // launch() once the batch is checked: the eager step, or a decode graph's.
  Status launch_checked(const ForwardBatch& batch, KvCache& cache, bool want_ids);
  // Queues the copy of the first num_logit_rows (-1: real_rows) rows of logits, then, when
  // want_ids, runs the sample op on every row if the batch has sample_params (after that copy:
  // the op may overwrite the logits), and queues the copy of the first `real_rows` ids
  // (sampled, or argmax from run_layers); both into host staging, for collect().
  Status queue_outputs(const ForwardBatch& batch, int64_t real_rows, bool want_ids);
  // The bucket a batch runs in as a graph, or 0 when it runs eagerly.
  int decode_graph_bucket(const ForwardBatch& batch) const;
  Status launch_decode_graph(const ForwardBatch& batch, KvCache& cache, int bucket, bool want_ids);
  StatusOr<TensorView> place(const LoadedModel& loaded, const std::string& name,
                             std::initializer_list<int64_t> shape);
  // A host tensor on the backend: itself on the CPU, else converted (matrices to the activation
  // dtype) and uploaded.
  StatusOr<TensorView> place_host(TensorView host);
  // The fused tensor `fused`, [sum of part rows, cols] ([sum of part rows] when cols == 0), or,
  // when `loaded` lacks it, the parts (name, rows) fused here.
  StatusOr<TensorView> place_fused(const LoadedModel& loaded, const std::string& fused,
                                   const std::vector<std::pair<std::string, int64_t>>& parts,
                                   int64_t cols);
  // InvalidArgument unless every penalty id is in the vocabulary and distinct within its row
  // and every count >= 0 (a device would apply a repeat twice, and trusts the table).
  Status check_penalties(const ForwardBatch& batch);
  // The sample op on every sample row with the uploaded parameters, writing the ids into the
  // argmax buffer (after the logits a caller wants have been copied back).
  Status sample_on_device(const ForwardBatch& batch);
  // The logprobs op on the batch's logprob rows (tokens: the ids just computed), and the copy
  // of its results into staging. `stashed`: their logits were copied to ws_.logprob_logits.
  Status logprobs_on_device(const ForwardBatch& batch, int64_t first_row, bool stashed);
  TensorView act(const DeviceBuffer& b, int64_t rows, int64_t cols) const;

  ModelConfig config_;
  Backend* backend_ = nullptr;
  std::vector<DeviceBuffer> owned_weights_;  // uploads, when the backend is not the host
  std::vector<WeightStore> owned_host_;      // CPU: fused weights `loaded` lacked
  TensorView embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  std::vector<uint8_t> penalty_seen_;  // [vocab], all zero between calls: distinct-id check
  DeviceBuffer inv_freq_;
  Workspace ws_;
  StepInputs inputs_;  // the step's indices and sampling inputs, one upload per step
  Step step_;
  DecodeGraphs graphs_;
};

}  // namespace pagoda
