#include "models/llama.h"

#include <cmath>
#include <cstring>

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
    PAGODA_ASSIGN_OR_RETURN(L.wq,
                            m->place(loaded, layer_name(l, "self_attn.q_proj.weight"), {q_dim, d}));
    PAGODA_ASSIGN_OR_RETURN(
        L.wk, m->place(loaded, layer_name(l, "self_attn.k_proj.weight"), {kv_dim, d}));
    PAGODA_ASSIGN_OR_RETURN(
        L.wv, m->place(loaded, layer_name(l, "self_attn.v_proj.weight"), {kv_dim, d}));
    PAGODA_ASSIGN_OR_RETURN(L.wo,
                            m->place(loaded, layer_name(l, "self_attn.o_proj.weight"), {d, q_dim}));
    if (c.attention_bias) {
      PAGODA_ASSIGN_OR_RETURN(L.bq,
                              m->place(loaded, layer_name(l, "self_attn.q_proj.bias"), {q_dim}));
      PAGODA_ASSIGN_OR_RETURN(L.bk,
                              m->place(loaded, layer_name(l, "self_attn.k_proj.bias"), {kv_dim}));
      PAGODA_ASSIGN_OR_RETURN(L.bv,
                              m->place(loaded, layer_name(l, "self_attn.v_proj.bias"), {kv_dim}));
    }
    PAGODA_ASSIGN_OR_RETURN(
        L.ffn_norm, m->place(loaded, layer_name(l, "post_attention_layernorm.weight"), {d}));
    PAGODA_ASSIGN_OR_RETURN(L.w_gate,
                            m->place(loaded, layer_name(l, "mlp.gate_proj.weight"), {inter, d}));
    PAGODA_ASSIGN_OR_RETURN(L.w_up,
                            m->place(loaded, layer_name(l, "mlp.up_proj.weight"), {inter, d}));
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

Status LlamaModel::reserve(int tokens, int seqs, int block_entries, int sample_rows) {
  if (tokens < 0 || seqs < 0 || block_entries < 0 || sample_rows < 0)
    return InvalidArgument("reserve: negative size");
  Workspace& w = ws_;
  const size_t a = dtype_size(backend_->activation_dtype());
  const ModelConfig& c = config_;
  bool grew = false;
  auto grow = [&](DeviceBuffer* b, size_t bytes) -> Status {
    if (b->size() >= bytes) return OkStatus();
    *b = DeviceBuffer();  // free the old one first: device memory is tight at the largest step
    StatusOr<DeviceBuffer> made = backend_->allocate(bytes);
    if (!made.ok()) {
      // Some buffers may now be smaller than their group's capacity says: forget every
      // capacity, so the next reserve() checks each buffer's size again.
      w.capacity_tokens = w.capacity_seqs = w.capacity_block_entries = w.capacity_sample_rows = 0;
      return made.status();
    }
    *b = std::move(made).value();
    grew = true;
    return OkStatus();
  };
  if (tokens > w.capacity_tokens) {
    const size_t t = static_cast<size_t>(tokens);
    const size_t q_dim = size_t{1} * c.num_heads * c.head_dim,
                 kv_dim = size_t{1} * c.num_kv_heads * c.head_dim;
    PAGODA_RETURN_IF_ERROR(grow(&w.hidden, t * c.hidden_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.residual, t * c.hidden_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.normed, t * c.hidden_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.q, t * q_dim * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.k, t * kv_dim * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.v, t * kv_dim * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.attn, t * q_dim * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.gate, t * c.intermediate_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.up, t * c.intermediate_size * a));
    for (DeviceBuffer* b : {&w.token_ids, &w.positions, &w.slot_mapping})
      PAGODA_RETURN_IF_ERROR(grow(b, t * sizeof(int32_t)));
    w.capacity_tokens = tokens;
  }
  if (seqs > w.capacity_seqs) {
    PAGODA_RETURN_IF_ERROR(grow(&w.seq_lens, seqs * sizeof(int32_t)));
    PAGODA_RETURN_IF_ERROR(grow(&w.query_start, (seqs + 1) * sizeof(int32_t)));
    w.capacity_seqs = seqs;
  }
  if (block_entries > w.capacity_block_entries) {
    PAGODA_RETURN_IF_ERROR(grow(&w.block_tables, block_entries * sizeof(int32_t)));
    w.capacity_block_entries = block_entries;
  }
  // Logits are wanted for the sampled rows only (one per sequence in the engine), so these are
  // sized by R, not T: at 8192 tokens a [T, vocab] f32 buffer would be 1 GiB for vocab 32000.
  if (sample_rows > w.capacity_sample_rows) {
    const size_t r = static_cast<size_t>(sample_rows);
    PAGODA_RETURN_IF_ERROR(grow(&w.sample_rows, r * sizeof(int32_t)));
    PAGODA_RETURN_IF_ERROR(grow(&w.picked, r * c.hidden_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.picked_normed, r * c.hidden_size * a));
    PAGODA_RETURN_IF_ERROR(grow(&w.logits, r * c.vocab_size * sizeof(float)));
    PAGODA_RETURN_IF_ERROR(grow(&w.argmax, r * sizeof(int32_t)));
    w.capacity_sample_rows = sample_rows;
  }
  if (grew) ++w.grows;
  return OkStatus();
}

size_t LlamaModel::workspace_bytes() const {
  const Workspace& w = ws_;
  size_t n = 0;
  for (const DeviceBuffer* b :
       {&w.hidden,      &w.residual,     &w.normed,        &w.q,        &w.k,
        &w.v,           &w.attn,         &w.gate,          &w.up,       &w.token_ids,
        &w.positions,   &w.slot_mapping, &w.query_start,   &w.seq_lens, &w.block_tables,
        &w.sample_rows, &w.picked,       &w.picked_normed, &w.logits,   &w.argmax})
    n += b->size();
  return n;
}

TensorView LlamaModel::act(const DeviceBuffer& b, int64_t rows, int64_t cols) const {
  return TensorView(b.data(), backend_->activation_dtype(), {rows, cols}, backend_->device());
}

TensorView LlamaModel::idx(const DeviceBuffer& b, int64_t n) const {
  return TensorView(b.data(), DType::kI32, {n}, backend_->device());
}

Status LlamaModel::upload_indices(const ForwardBatch& batch) {
  auto up = [&](const DeviceBuffer& dst, const std::vector<int32_t>& src) {
    return backend_->copy_from_host(dst.data(), src.data(), src.size() * sizeof(int32_t));
  };
  PAGODA_RETURN_IF_ERROR(up(ws_.token_ids, batch.token_ids));
  PAGODA_RETURN_IF_ERROR(up(ws_.positions, batch.positions));
  PAGODA_RETURN_IF_ERROR(up(ws_.slot_mapping, batch.slot_mapping));
  PAGODA_RETURN_IF_ERROR(up(ws_.seq_lens, batch.seq_lens));
  PAGODA_RETURN_IF_ERROR(up(ws_.query_start, batch.query_start));
  PAGODA_RETURN_IF_ERROR(up(ws_.block_tables, batch.block_tables));
  PAGODA_RETURN_IF_ERROR(up(ws_.sample_rows, batch.sample_rows));
  return OkStatus();
}

Status LlamaModel::forward(const ForwardBatch& batch, KvCache& cache, std::vector<float>* logits,
                           std::vector<int32_t>* argmax_ids) {
  const KvCacheShape& cs = cache.shape();
  PAGODA_RETURN_IF_ERROR(batch.validate(cs.block_size, cs.num_blocks));
  if (batch.num_logit_rows < -1 ||
      batch.num_logit_rows > static_cast<int>(batch.sample_rows.size()))
    return InvalidArgument("forward: num_logit_rows " + std::to_string(batch.num_logit_rows) +
                           " is outside [-1, R = " + std::to_string(batch.sample_rows.size()) +
                           "]");
  if (cs.num_layers != config_.num_layers || cs.num_kv_heads != config_.num_kv_heads ||
      cs.head_dim != config_.head_dim) {
    return InvalidArgument("forward: the KV cache was made for another model shape");
  }
  if (const int bucket = decode_graph_bucket(batch); bucket > 0)
    return forward_decode_graph(batch, cache, bucket, logits, argmax_ids);
  const int64_t T = batch.num_tokens(), B = batch.num_seqs(),
                R = static_cast<int64_t>(batch.sample_rows.size());
  PAGODA_RETURN_IF_ERROR(reserve(static_cast<int>(T), static_cast<int>(B),
                                 static_cast<int>(batch.block_tables.size()), static_cast<int>(R)));
  PAGODA_RETURN_IF_ERROR(upload_indices(batch));
  PAGODA_RETURN_IF_ERROR(
      run_layers(cache, T, B, R, batch.max_blocks_per_seq, argmax_ids != nullptr && R > 0));
  return copy_outputs(batch.num_logit_rows, R, logits, argmax_ids);
}

Status LlamaModel::run_layers(KvCache& cache, int64_t T, int64_t B, int64_t R, int max_blocks,
                              bool argmax) {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
  Backend& be = *backend_;
  const Device dev = be.device();
  const DType at = be.activation_dtype();
  const TensorView hidden = act(ws_.hidden, T, d), residual = act(ws_.residual, T, d),
                   normed = act(ws_.normed, T, d);
  const TensorView q = act(ws_.q, T, H * hd), k = act(ws_.k, T, KV * hd),
                   v = act(ws_.v, T, KV * hd), attn = act(ws_.attn, T, H * hd);
  const TensorView gate = act(ws_.gate, T, c.intermediate_size),
                   up = act(ws_.up, T, c.intermediate_size);
  // Head-split views of the same memory: [T, heads, head_dim].
  const TensorView q3(ws_.q.data(), at, {T, H, hd}, dev), k3(ws_.k.data(), at, {T, KV, hd}, dev),
      v3(ws_.v.data(), at, {T, KV, hd}, dev), attn3(ws_.attn.data(), at, {T, H, hd}, dev);
  const TensorView positions = idx(ws_.positions, T);
  const TensorView inv_freq(inv_freq_.data(), DType::kF32, {hd / 2}, dev);
  const TensorView block_tables(ws_.block_tables.data(), DType::kI32, {B, max_blocks}, dev);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // The embeddings start the residual stream; every later layer adds its MLP output to it in
  // the fused add + norm that opens the next layer.
  PAGODA_RETURN_IF_ERROR(be.embedding({embed_, idx(ws_.token_ids, T), residual}));

  for (const Layer& L : layers_) {
    if (&L == layers_.data()) {
      PAGODA_RETURN_IF_ERROR(be.rms_norm({residual, {}, L.attn_norm, normed, c.rms_norm_eps}));
    } else {
      PAGODA_RETURN_IF_ERROR(be.rms_norm({hidden, residual, L.attn_norm, normed, c.rms_norm_eps}));
    }
    PAGODA_RETURN_IF_ERROR(be.matmul({normed, L.wq, L.bq, q}));
    PAGODA_RETURN_IF_ERROR(be.matmul({normed, L.wk, L.bk, k}));
    PAGODA_RETURN_IF_ERROR(be.matmul({normed, L.wv, L.bv, v}));
    PAGODA_RETURN_IF_ERROR(be.rope({q3, k3, positions, inv_freq}));
    const size_t li = static_cast<size_t>(&L - layers_.data());
    PAGODA_RETURN_IF_ERROR(
        be.kv_write({k3, v3, idx(ws_.slot_mapping, T), cache.k(li), cache.v(li)}));
    PAGODA_RETURN_IF_ERROR(
        be.attention({q3, cache.k(li), cache.v(li), block_tables, idx(ws_.seq_lens, B),
                      idx(ws_.query_start, B + 1), attn3, scale}));
    PAGODA_RETURN_IF_ERROR(be.matmul({attn, L.wo, {}, hidden}));
    PAGODA_RETURN_IF_ERROR(be.rms_norm({hidden, residual, L.ffn_norm, normed, c.rms_norm_eps}));
    PAGODA_RETURN_IF_ERROR(be.matmul({normed, L.w_gate, {}, gate}));
    PAGODA_RETURN_IF_ERROR(be.matmul({normed, L.w_up, {}, up}));
    PAGODA_RETURN_IF_ERROR(be.swiglu({gate, up, gate}));
    PAGODA_RETURN_IF_ERROR(be.matmul({gate, L.w_down, {}, hidden}));
  }
  // Only the sampled rows go through the final norm and the LM head.
  if (R == 0) return OkStatus();
  PAGODA_RETURN_IF_ERROR(be.add({residual, hidden}));
  const TensorView picked = act(ws_.picked, R, d), picked_normed = act(ws_.picked_normed, R, d);
  PAGODA_RETURN_IF_ERROR(be.gather_rows({residual, idx(ws_.sample_rows, R), picked}));
  PAGODA_RETURN_IF_ERROR(be.rms_norm({picked, {}, final_norm_, picked_normed, c.rms_norm_eps}));
  const TensorView out(ws_.logits.data(), DType::kF32, {R, c.vocab_size}, dev);
  PAGODA_RETURN_IF_ERROR(be.matmul({picked_normed, lm_head_, {}, out}));
  if (argmax) {
    PAGODA_RETURN_IF_ERROR(be.argmax({out, TensorView(ws_.argmax.data(), DType::kI32, {R}, dev)}));
  }
  return OkStatus();
}

Status LlamaModel::copy_outputs(int num_logit_rows, int64_t real_rows, std::vector<float>* logits,
                                std::vector<int32_t>* argmax_ids) {
  Backend& be = *backend_;
  if (argmax_ids != nullptr) {
    argmax_ids->resize(static_cast<size_t>(real_rows));
    if (real_rows > 0)
      PAGODA_RETURN_IF_ERROR(
          be.copy_to_host(argmax_ids->data(), ws_.argmax.data(), real_rows * sizeof(int32_t)));
  }
  const int64_t L = num_logit_rows < 0 ? real_rows : num_logit_rows;
  logits->resize(static_cast<size_t>(L * config_.vocab_size));
  if (L == 0) return be.synchronize();
  return be.copy_to_host(logits->data(), ws_.logits.data(), logits->size() * sizeof(float));
}

}  // namespace pagoda
