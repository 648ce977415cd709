#include "models/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"

namespace pagoda {

namespace {

std::string layer_name(int l, const char* rest) {
  return "model.layers." + std::to_string(l) + "." + rest;
}

Status field_error(const char* field, const std::string& what) {
  return InvalidArgument(std::string("forward batch: ") + field + " " + what);
}

}  // namespace

Status ForwardBatch::validate(int block_size, int num_blocks) const {
  const size_t t = token_ids.size();
  const size_t b = seq_lens.size();
  if (t == 0) return field_error("token_ids", "is empty");
  if (positions.size() != t) return field_error("positions", "size differs from token_ids");
  if (slot_mapping.size() != t) return field_error("slot_mapping", "size differs from token_ids");
  if (query_start.size() != b + 1) return field_error("query_start", "must have B + 1 entries");
  if (max_blocks_per_seq <= 0 || block_tables.size() != b * static_cast<size_t>(max_blocks_per_seq))
    return field_error("block_tables", "must be [B, max_blocks_per_seq]");
  if (query_start[0] != 0 || query_start[b] != static_cast<int32_t>(t))
    return field_error("query_start", "must start at 0 and end at T");
  for (size_t i = 0; i < b; ++i) {
    const int q_len = query_start[i + 1] - query_start[i];
    if (q_len <= 0)
      return field_error("query_start", "gives sequence " + std::to_string(i) + " no tokens");
    if (seq_lens[i] < q_len) return field_error("seq_lens", "shorter than the new tokens");
    if ((seq_lens[i] + block_size - 1) / block_size > max_blocks_per_seq)
      return field_error("seq_lens", "needs more blocks than max_blocks_per_seq");
  }
  for (size_t i = 0; i < t; ++i) {
    if (slot_mapping[i] >= static_cast<int64_t>(num_blocks) * block_size)
      return field_error("slot_mapping", "points beyond the cache");
  }
  for (int32_t r : sample_rows)
    if (r < 0 || r >= static_cast<int32_t>(t)) return field_error("sample_rows", "out of range");
  if (!sample_params.empty()) {
    if (sample_params.size() != sample_rows.size())
      return field_error("sample_params", "must have one entry per sample row");
    if (!penalty_start.empty() && penalty_start.size() != sample_params.size() + 1)
      return field_error("penalty_start", "must have one entry per sampled row, plus one");
    const size_t P = penalty_start.empty() ? 0 : static_cast<size_t>(penalty_start.back());
    if (penalty_ids.size() != P || penalty_counts.size() != P)
      return field_error("penalty_ids", "and penalty_counts must have penalty_start's last entry");
  }
  return OkStatus();
}

TensorView convert_tensor(const TensorView& src, DType to, HostBuffer* storage) {
  const size_t n = static_cast<size_t>(src.numel());
  *storage = HostBuffer(n * dtype_size(to));
  for (size_t i = 0; i < n; ++i)
    store_from_f32(storage->data(), to, i, load_as_f32(src.data, src.dtype, i));
  TensorView out = src;
  out.data = storage->data();
  out.dtype = to;
  return out;
}

StatusOr<TensorView> LlamaModel::place(const LoadedModel& loaded, const std::string& name,
                                       std::initializer_list<int64_t> shape) {
  PAGODA_ASSIGN_OR_RETURN(TensorView host, loaded.weights.get(name, shape));
  return place_host(host);
}

StatusOr<TensorView> LlamaModel::place_fused(
    const LoadedModel& loaded, const std::string& fused,
    const std::vector<std::pair<std::string, int64_t>>& parts, int64_t cols) {
  int64_t rows = 0;
  for (const auto& part : parts) rows += part.second;
  if (loaded.weights.contains(fused))
    return cols > 0 ? place(loaded, fused, {rows, cols}) : place(loaded, fused, {rows});
  // Not fused by a loader: fuse views of the parts into a store of our own (fuse_rows copies
  // them; it frees nothing of `loaded`'s).
  WeightStore store;
  std::vector<std::string> names;
  for (const auto& [name, part_rows] : parts) {
    PAGODA_ASSIGN_OR_RETURN(TensorView t, cols > 0 ? loaded.weights.get(name, {part_rows, cols})
                                                   : loaded.weights.get(name, {part_rows}));
    PAGODA_RETURN_IF_ERROR(store.add(name, t));
    names.push_back(name);
  }
  PAGODA_RETURN_IF_ERROR(store.fuse_rows(names, fused));
  PAGODA_ASSIGN_OR_RETURN(TensorView host,
                          cols > 0 ? store.get(fused, {rows, cols}) : store.get(fused, {rows}));
  PAGODA_ASSIGN_OR_RETURN(TensorView placed, place_host(host));
  if (backend_->device() == Device::kCpu) owned_host_.push_back(std::move(store));
  return placed;  // on a device the host copy goes with `store`
}

StatusOr<TensorView> LlamaModel::place_host(TensorView host) {
  if (backend_->device() == Device::kCpu) return host;  // zero-copy: mmap'd or owned by `loaded`
  // Matrices travel in the activation dtype (the GPU GEMMs take one dtype for both operands);
  // vectors (norm weights, biases) keep theirs. Converted once, here, on the host.
  HostBuffer converted;
  if (host.ndim == 2 && host.dtype != backend_->activation_dtype())
    host = convert_tensor(host, backend_->activation_dtype(), &converted);
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer buf, backend_->allocate(host.nbytes()));
  PAGODA_RETURN_IF_ERROR(backend_->copy_from_host(buf.data(), host.data, host.nbytes()));
  TensorView dev = host;
  dev.data = buf.data();
  dev.device = backend_->device();
  owned_weights_.push_back(std::move(buf));
  return dev;
}

StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::create(const LoadedModel& loaded,
                                                         Backend* backend) {
  const ModelConfig& c = loaded.config;
  PAGODA_RETURN_IF_ERROR(c.validate(loaded.source));
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->config_ = c;
  m->backend_ = backend;
  const int64_t d = c.hidden_size, hd = c.head_dim, q_dim = int64_t{c.num_heads} * hd,
                kv_dim = int64_t{c.num_kv_heads} * hd, inter = c.intermediate_size;
  PAGODA_ASSIGN_OR_RETURN(m->embed_,
                          m->place(loaded, "model.embed_tokens.weight", {c.vocab_size, d}));
  PAGODA_ASSIGN_OR_RETURN(m->final_norm_, m->place(loaded, "model.norm.weight", {d}));
  if (c.tie_word_embeddings && !loaded.weights.contains("lm_head.weight")) {
    m->lm_head_ = m->embed_;
  } else {
    PAGODA_ASSIGN_OR_RETURN(m->lm_head_, m->place(loaded, "lm_head.weight", {c.vocab_size, d}));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    Layer L;
    PAGODA_ASSIGN_OR_RETURN(L.attn_norm,
                            m->place(loaded, layer_name(l, "input_layernorm.weight"), {d}));
    auto qkv_parts = [&](const char* suffix) {
      const std::string a = layer_name(l, "self_attn.");
      return std::vector<std::pair<std::string, int64_t>>{{a + "q_proj." + suffix, q_dim},
                                                          {a + "k_proj." + suffix, kv_dim},
                                                          {a + "v_proj." + suffix, kv_dim}};
    };
    PAGODA_ASSIGN_OR_RETURN(
        L.w_qkv,
        m->place_fused(loaded, layer_name(l, "self_attn.qkv_proj.weight"), qkv_parts("weight"), d));
    PAGODA_ASSIGN_OR_RETURN(L.wo,
                            m->place(loaded, layer_name(l, "self_attn.o_proj.weight"), {d, q_dim}));
    if (c.attention_bias) {
      PAGODA_ASSIGN_OR_RETURN(
          L.b_qkv,
          m->place_fused(loaded, layer_name(l, "self_attn.qkv_proj.bias"), qkv_parts("bias"), 0));
    }
    PAGODA_ASSIGN_OR_RETURN(
        L.ffn_norm, m->place(loaded, layer_name(l, "post_attention_layernorm.weight"), {d}));
    PAGODA_ASSIGN_OR_RETURN(L.w_gate_up,
                            m->place_fused(loaded, layer_name(l, "mlp.gate_up_proj.weight"),
                                           {{layer_name(l, "mlp.gate_proj.weight"), inter},
                                            {layer_name(l, "mlp.up_proj.weight"), inter}},
                                           d));
    PAGODA_ASSIGN_OR_RETURN(L.w_down,
                            m->place(loaded, layer_name(l, "mlp.down_proj.weight"), {d, inter}));
    m->layers_.push_back(L);
  }
  const std::vector<float> inv_freq = rope_inv_freq(c);
  PAGODA_ASSIGN_OR_RETURN(m->inv_freq_, backend->allocate(inv_freq.size() * sizeof(float)));
  PAGODA_RETURN_IF_ERROR(backend->copy_from_host(m->inv_freq_.data(), inv_freq.data(),
                                                 inv_freq.size() * sizeof(float)));
  return m;
}

KvCacheShape LlamaModel::kv_cache_shape(int num_blocks, int block_size) const {
  KvCacheShape s;
  s.num_layers = config_.num_layers;
  s.num_blocks = num_blocks;
  s.block_size = block_size;
  s.num_kv_heads = config_.num_kv_heads;
  s.head_dim = config_.head_dim;
  s.dtype = backend_->activation_dtype();
  return s;
}

Status LlamaModel::reserve(int tokens, int seqs, int block_entries, int sample_rows, int penalties,
                           int logprob_rows) {
  if (tokens < 0 || seqs < 0 || block_entries < 0 || sample_rows < 0 || penalties < 0 ||
      logprob_rows < 0)
    return InvalidArgument("reserve: negative size");
  if (step_.in_flight)
    return FailedPrecondition("reserve: a step is in flight; collect() it first");
  if (!ws_.scratch_reserved) {  // the ops' own scratch, once: counted before the KV cache
    PAGODA_RETURN_IF_ERROR(backend_->reserve_scratch());
    ws_.scratch_reserved = true;
  }
  Workspace& w = ws_;
  const size_t a = dtype_size(backend_->activation_dtype());
  const ModelConfig& c = config_;
  bool grew = false;
  auto grow = [&](DeviceBuffer* b, size_t bytes, bool host = false) -> Status {
    if (b->size() >= bytes) return OkStatus();
    *b = DeviceBuffer();  // free the old one first: device memory is tight at the largest step
    StatusOr<DeviceBuffer> made =
        host ? backend_->allocate_staging(bytes) : backend_->allocate(bytes);
    if (!made.ok()) {
      // Some buffers may now be smaller than their group's capacity says: forget every
      // capacity, so the next reserve() checks each buffer's size again.
      w.capacity_tokens = w.capacity_sample_rows = w.capacity_logprob_rows = 0;
      return made.status();
    }
    *b = std::move(made).value();
    grew = true;
    return OkStatus();
  };
  if (tokens > w.capacity_tokens) {
    const size_t t = static_cast<size_t>(tokens);
    const size_t d = c.hidden_size, q_dim = size_t{1} * c.num_heads * c.head_dim,
                 qkv_dim = q_dim + size_t{2} * c.num_kv_heads * c.head_dim,
                 inter = c.intermediate_size;
    // The roles of normed and wide through a layer: see Workspace in llama.h.
    PAGODA_RETURN_IF_ERROR(grow(&w.hidden, t * d * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.residual, t * d * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.normed, t * std::max({d, q_dim, inter}) * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.wide, t * std::max(qkv_dim, 2 * inter) * a));
    w.capacity_tokens = tokens;
  }
  // Logits are wanted for the sampled rows only (one per sequence in the engine), so these are
  // sized by R, not T: at 8192 tokens a [T, vocab] f32 buffer would be 1 GiB for vocab 32000.
  if (sample_rows > w.capacity_sample_rows) {
    const size_t r = static_cast<size_t>(sample_rows);
    PAGODA_RETURN_IF_ERROR(grow(&w.picked, r * c.hidden_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.picked_normed, r * c.hidden_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.logits, r * c.vocab_size * sizeof(float)));
    PAGODA_RETURN_IF_ERROR(grow(&w.argmax, r * sizeof(int32_t)));
    // Host memory a step's logits and ids are copied into asynchronously (launch/collect).
    PAGODA_RETURN_IF_ERROR(grow(&w.logits_host, r * c.vocab_size * sizeof(float), /*host=*/true));
    PAGODA_RETURN_IF_ERROR(grow(&w.ids_host, r * sizeof(int32_t), /*host=*/true));
    w.capacity_sample_rows = sample_rows;
  }
  // The logprobs op's rows: a copy of their logits (the sample op overwrites the logits) and
  // 1 + 2 kMaxTopLogprobs result words each, on the device and in staging. Only as many as a
  // caller may ask for (an engine that allows no logprobs reserves none).
  if (logprob_rows > w.capacity_logprob_rows) {
    const size_t r = static_cast<size_t>(logprob_rows);
    const size_t words = r * (1 + 2 * size_t{kMaxTopLogprobs});
    PAGODA_RETURN_IF_ERROR(grow(&w.logprob_logits, r * c.vocab_size * sizeof(float)));
    PAGODA_RETURN_IF_ERROR(grow(&w.logprobs, words * sizeof(int32_t)));
    PAGODA_RETURN_IF_ERROR(grow(&w.logprobs_host, words * sizeof(int32_t), /*host=*/true));
    w.capacity_logprob_rows = logprob_rows;
  }
  // The step's inputs (StepInputs); penalty tables: most requests have none, 256 distinct
  // tokens per row before any growth (penalties >= 0 asks for more).
  bool moved = false;
  PAGODA_RETURN_IF_ERROR(inputs_.reserve(
      backend_, {tokens, seqs, block_entries, sample_rows, std::max(penalties, 256 * sample_rows)},
      &moved));
  if (grew || moved) ++w.grows;
  return OkStatus();
}

size_t LlamaModel::workspace_bytes() const {
  const Workspace& w = ws_;
  size_t n = 0;
  for (const DeviceBuffer* b :
       {&w.hidden, &w.residual, &w.normed, &w.wide, &w.picked, &w.picked_normed, &w.logits,
        &w.argmax, &w.logprob_logits, &w.logprobs})
    n += b->size();
  return n + inputs_.device_bytes();
}

TensorView LlamaModel::act(const DeviceBuffer& b, int64_t rows, int64_t cols) const {
  return TensorView(b.data(), backend_->activation_dtype(), {rows, cols}, backend_->device());
}

Status LlamaModel::check_penalties(const ForwardBatch& batch) {
  if (batch.sample_params.empty() || batch.penalty_start.empty()) return OkStatus();
  const std::vector<int32_t>& start = batch.penalty_start;
  const int64_t S = static_cast<int64_t>(batch.sample_params.size());
  const int vocab = config_.vocab_size;
  if (start[0] != 0) return InvalidArgument("forward: penalty_start must start at 0");
  penalty_seen_.resize(static_cast<size_t>(vocab), 0);
  Status bad = OkStatus();
  for (int64_t r = 0; r < S && bad.ok(); ++r) {
    if (start[r + 1] < start[r]) {
      bad = InvalidArgument("forward: penalty_start decreases at sampled row " + std::to_string(r));
      break;
    }
    for (int32_t i = start[r]; i < start[r + 1]; ++i) {
      const int32_t id = batch.penalty_ids[i];
      if (id < 0 || id >= vocab || batch.penalty_counts[i] < 0 || penalty_seen_[id]) {
        bad = InvalidArgument("forward: penalty entry " + std::to_string(i) + " (id " +
                              std::to_string(id) + ", count " +
                              std::to_string(batch.penalty_counts[i]) +
                              ") is outside the vocabulary, negative or repeated in its row");
        break;
      }
      penalty_seen_[id] = 1;
    }
    for (int32_t i = start[r]; i < start[r + 1]; ++i) {
      const int32_t id = batch.penalty_ids[i];
      if (id >= 0 && id < vocab) penalty_seen_[id] = 0;
    }
  }
  return bad;
}

Status LlamaModel::forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>* logits,
                           std::vector<int32_t>* argmax_ids, StepLogprobs* logprobs) {
  PAGODA_RETURN_IF_ERROR(launch(batch, cache, argmax_ids != nullptr));
  return collect(logits, argmax_ids, logprobs);
}

Status LlamaModel::launch(const ForwardBatch& batch, KvCache& cache, bool want_ids) {
  if (step_.in_flight) return FailedPrecondition("launch: a step is in flight; collect() it first");
  const KvCacheShape& cs = cache.shape();
  PAGODA_RETURN_IF_ERROR(batch.validate(cs.block_size, cs.num_blocks));
  if (batch.num_logit_rows < -1 ||
      batch.num_logit_rows > static_cast<int>(batch.sample_rows.size()))
    return InvalidArgument("forward: num_logit_rows " + std::to_string(batch.num_logit_rows) +
                           " is outside [-1, R = " + std::to_string(batch.sample_rows.size()) +
                           "]");
  const int64_t R = static_cast<int64_t>(batch.sample_rows.size());
  const int64_t L = batch.num_logit_rows < 0 ? R : batch.num_logit_rows;
  if (batch.num_logprob_rows < 0 || L + batch.num_logprob_rows > R)
    return InvalidArgument("forward: num_logprob_rows " + std::to_string(batch.num_logprob_rows) +
                           " is outside [0, R - L = " + std::to_string(R - L) + "]");
  if (batch.num_top_logprobs < 0 || batch.num_top_logprobs > kMaxTopLogprobs)
    return InvalidArgument("forward: num_top_logprobs " + std::to_string(batch.num_top_logprobs) +
                           " is outside [0, " + std::to_string(kMaxTopLogprobs) + "]");
  if (batch.num_logprob_rows > 0 && !want_ids)
    return InvalidArgument("forward: logprob rows need their tokens (want_ids)");
  if (cs.num_layers != config_.num_layers || cs.num_kv_heads != config_.num_kv_heads ||
      cs.head_dim != config_.head_dim) {
    return InvalidArgument("forward: the KV cache was made for another model shape");
  }
  PAGODA_RETURN_IF_ERROR(check_penalties(batch));
  const Status launched = launch_checked(batch, cache, want_ids);
  if (launched.ok()) {
    step_.in_flight = true;
    return OkStatus();
  }
  // Failed part-way: nothing is collectable. Wait for what was queued (best effort), so the next
  // upload may rewrite the staging buffer at once; if that fails too, StepInputs still waits
  // before it does.
  step_ = Step{};
  if (backend_->synchronize().ok()) inputs_.mark_done();
  return launched;
}

Status LlamaModel::launch_checked(const ForwardBatch& batch, KvCache& cache, bool want_ids) {
  if (const int bucket = decode_graph_bucket(batch); bucket > 0)
    return launch_decode_graph(batch, cache, bucket, want_ids);
  const int64_t T = batch.num_tokens(), B = batch.num_seqs(),
                R = static_cast<int64_t>(batch.sample_rows.size());
  PAGODA_RETURN_IF_ERROR(reserve(
      static_cast<int>(T), static_cast<int>(B), static_cast<int>(batch.block_tables.size()),
      static_cast<int>(R), static_cast<int>(batch.penalty_ids.size()), batch.num_logprob_rows));
  PAGODA_RETURN_IF_ERROR(inputs_.upload(backend_, batch));
  const bool ids = want_ids && R > 0;
  PAGODA_RETURN_IF_ERROR(
      run_layers(cache, T, B, R, batch.max_blocks_per_seq, ids && batch.sample_params.empty()));
  return queue_outputs(batch, R, want_ids);
}

Status LlamaModel::collect(std::vector<float>* logits, std::vector<int32_t>* ids,
                           StepLogprobs* logprobs) {
  if (logits != nullptr) logits->clear();
  if (ids != nullptr) ids->clear();
  if (logprobs != nullptr) {  // cleared, not reassigned: the vectors keep their memory
    logprobs->rows = logprobs->top = 0;
    logprobs->token_logprobs.clear();
    logprobs->top_ids.clear();
    logprobs->top_logprobs.clear();
  }
  if (!step_.in_flight) return FailedPrecondition("collect: no step in flight");
  const Step step = step_;
  step_ = Step{};
  PAGODA_RETURN_IF_ERROR(backend_->synchronize());
  inputs_.mark_done();  // synchronized: the step's uploads are done
  // Only now does the staging memory hold the outputs: the copies were queued behind the step.
  if (logits != nullptr && step.logit_rows > 0) {
    const auto* staged = static_cast<const float*>(ws_.logits_host.data());
    logits->assign(staged, staged + step.logit_rows * config_.vocab_size);
  }
  if (ids != nullptr && step.ids > 0) {
    const auto* staged = static_cast<const int32_t*>(ws_.ids_host.data());
    ids->assign(staged, staged + step.ids);
  }
  if (logprobs != nullptr && step.logprob_rows > 0) {
    const int64_t P = step.logprob_rows, K = step.top_logprobs;
    const auto* words = static_cast<const int32_t*>(ws_.logprobs_host.data());
    const auto* floats = static_cast<const float*>(ws_.logprobs_host.data());
    logprobs->rows = static_cast<int>(P);
    logprobs->top = static_cast<int>(K);
    logprobs->token_logprobs.assign(floats, floats + P);
    logprobs->top_ids.assign(words + P, words + P + P * K);
    logprobs->top_logprobs.assign(floats + P + P * K, floats + P + 2 * P * K);
  }
  return OkStatus();
}

Status LlamaModel::logprobs_on_device(const ForwardBatch& batch, int64_t first_row, bool stashed) {
  const int64_t P = batch.num_logprob_rows, V = config_.vocab_size;
  const int64_t K = std::min<int64_t>(batch.num_top_logprobs, V);
  const Device dev = backend_->device();
  float* logits = stashed ? static_cast<float*>(ws_.logprob_logits.data())
                          : static_cast<float*>(ws_.logits.data()) + first_row * V;
  auto* out = static_cast<int32_t*>(ws_.logprobs.data());
  PAGODA_RETURN_IF_ERROR(backend_->logprobs(
      {TensorView(logits, DType::kF32, {P, V}, dev),
       TensorView(static_cast<int32_t*>(ws_.argmax.data()) + first_row, DType::kI32, {P}, dev),
       TensorView(out, DType::kF32, {P}, dev), TensorView(out + P, DType::kI32, {P, K}, dev),
       TensorView(out + P + P * K, DType::kF32, {P, K}, dev)}));
  const size_t bytes = static_cast<size_t>(P * (1 + 2 * K)) * sizeof(int32_t);
  PAGODA_CHECK_GE(ws_.logprobs_host.size(), bytes);  // reserve() sized it for the logprob rows
  PAGODA_RETURN_IF_ERROR(backend_->copy_to_host_async(ws_.logprobs_host.data(), out, bytes));
  step_.logprob_rows = P;
  step_.top_logprobs = K;
  return OkStatus();
}

Status LlamaModel::sample_on_device(const ForwardBatch& batch) {
  const int64_t R = static_cast<int64_t>(batch.sample_params.size());  // every sample row
  const int64_t P = static_cast<int64_t>(batch.penalty_ids.size());
  const Device dev = backend_->device();
  return backend_->sample({TensorView(ws_.logits.data(), DType::kF32, {R, config_.vocab_size}, dev),
                           inputs_.sample_params(R), inputs_.penalty_start(R + 1),
                           inputs_.penalty_ids(P), inputs_.penalty_counts(P),
                           TensorView(ws_.argmax.data(), DType::kI32, {R}, dev)});
}

Status LlamaModel::run_layers(KvCache& cache, int64_t T, int64_t B, int64_t R, int max_blocks,
                              bool argmax) {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
  Backend& be = *backend_;
  const Device dev = be.device();
  const DType at = be.activation_dtype();
  const int64_t inter = c.intermediate_size;
  // Each buffer's role at each point of a layer: see Workspace in llama.h.
  const TensorView hidden = act(ws_.hidden, T, d), residual = act(ws_.residual, T, d),
                   normed = act(ws_.normed, T, d);
  const TensorView qkv = act(ws_.wide, T, (H + 2 * KV) * hd);   // q|k|v per token
  const TensorView q3(ws_.normed.data(), at, {T, H, hd}, dev);  // rotated q
  const TensorView attn = act(ws_.wide, T, H * hd);             // attention output
  const TensorView attn3(ws_.wide.data(), at, {T, H, hd}, dev);
  const TensorView gate_up = act(ws_.wide, T, 2 * inter);  // gate|up per token
  const TensorView mlp = act(ws_.normed, T, inter);        // silu(gate) * up
  const TensorView positions = inputs_.positions(T);
  const TensorView inv_freq(inv_freq_.data(), DType::kF32, {hd / 2}, dev);
  const TensorView block_tables = inputs_.block_tables(B, max_blocks);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // The embeddings start the residual stream; every later layer adds its MLP output to it in
  // the fused add + norm that opens the next layer.
  PAGODA_RETURN_IF_ERROR(be.embedding({embed_, inputs_.token_ids(T), residual}));

  for (const Layer& L : layers_) {
    if (&L == layers_.data()) {
      PAGODA_RETURN_IF_ERROR(be.rms_norm({residual, {}, L.attn_norm, normed, c.rms_norm_eps}));
    } else {
      PAGODA_RETURN_IF_ERROR(be.rms_norm({hidden, residual, L.attn_norm, normed, c.rms_norm_eps}));
    }
    // One GEMM for q, k and v, then one pass that rotates q and k and writes K/V to the cache.
    PAGODA_RETURN_IF_ERROR(be.matmul({normed, L.w_qkv, L.b_qkv, qkv}));
    const size_t li = static_cast<size_t>(&L - layers_.data());
    PAGODA_RETURN_IF_ERROR(be.rope_kv_write(
        {qkv, positions, inv_freq, inputs_.slot_mapping(T), q3, cache.k(li), cache.v(li)}));
    PAGODA_RETURN_IF_ERROR(
        be.attention({q3, cache.k(li), cache.v(li), block_tables, inputs_.seq_lens(B),
                      inputs_.query_start(B + 1), attn3, scale}));
    PAGODA_RETURN_IF_ERROR(be.matmul({attn, L.wo, {}, hidden}));
    PAGODA_RETURN_IF_ERROR(be.rms_norm({hidden, residual, L.ffn_norm, normed, c.rms_norm_eps}));
    // One GEMM for gate and up; swiglu reads its [T, 2 inter] output.
    PAGODA_RETURN_IF_ERROR(be.matmul({normed, L.w_gate_up, {}, gate_up}));
    PAGODA_RETURN_IF_ERROR(be.swiglu({{}, {}, mlp, gate_up}));
    PAGODA_RETURN_IF_ERROR(be.matmul({mlp, L.w_down, {}, hidden}));
  }
  // Only the sampled rows go through the final norm and the LM head.
  if (R == 0) return OkStatus();
  PAGODA_RETURN_IF_ERROR(be.add({residual, hidden}));
  const TensorView picked = act(ws_.picked, R, d), picked_normed = act(ws_.picked_normed, R, d);
  PAGODA_RETURN_IF_ERROR(be.gather_rows({residual, inputs_.sample_rows(R), picked}));
  PAGODA_RETURN_IF_ERROR(be.rms_norm({picked, {}, final_norm_, picked_normed, c.rms_norm_eps}));
  const TensorView out(ws_.logits.data(), DType::kF32, {R, c.vocab_size}, dev);
  PAGODA_RETURN_IF_ERROR(be.matmul({picked_normed, lm_head_, {}, out}));
  if (argmax) {
    PAGODA_RETURN_IF_ERROR(be.argmax({out, TensorView(ws_.argmax.data(), DType::kI32, {R}, dev)}));
  }
  return OkStatus();
}

Status LlamaModel::queue_outputs(const ForwardBatch& batch, int64_t real_rows, bool want_ids) {
  Backend& be = *backend_;
  const int64_t L = batch.num_logit_rows < 0 ? real_rows : batch.num_logit_rows;
  // The logits first: the sample op may overwrite them (its scratch on a GPU), and the copy is
  // ordered before it on the stream.
  if (L > 0) {
    const size_t bytes = static_cast<size_t>(L) * config_.vocab_size * sizeof(float);
    PAGODA_CHECK_GE(ws_.logits_host.size(), bytes);  // reserve() sized it for the sample rows
    PAGODA_RETURN_IF_ERROR(be.copy_to_host_async(ws_.logits_host.data(), ws_.logits.data(), bytes));
    step_.logit_rows = L;
  }
  if (!want_ids || real_rows == 0) return OkStatus();
  const int64_t P = batch.num_logprob_rows, V = config_.vocab_size;
  const bool sample = !batch.sample_params.empty();
  // The sample op overwrites the logits: the logprob rows' are copied aside first (on the
  // device; far cheaper than bringing [P, vocab] floats to the host).
  if (P > 0 && sample) {
    PAGODA_CHECK_GE(ws_.logprob_logits.size(), static_cast<size_t>(P * V) * sizeof(float));
    PAGODA_RETURN_IF_ERROR(be.copy_on_device_async(ws_.logprob_logits.data(),
                                                   static_cast<float*>(ws_.logits.data()) + L * V,
                                                   static_cast<size_t>(P * V) * sizeof(float)));
  }
  if (sample) PAGODA_RETURN_IF_ERROR(sample_on_device(batch));
  const size_t bytes = static_cast<size_t>(real_rows) * sizeof(int32_t);
  PAGODA_CHECK_GE(ws_.ids_host.size(), bytes);  // reserve() sized it for the sample rows
  PAGODA_RETURN_IF_ERROR(be.copy_to_host_async(ws_.ids_host.data(), ws_.argmax.data(), bytes));
  step_.ids = real_rows;
  if (P > 0) PAGODA_RETURN_IF_ERROR(logprobs_on_device(batch, L, sample));
  return OkStatus();
}

}  // namespace pagoda
