#include "models/loaders/gguf.h"

#include <cstring>

#include "models/loaders/loader_util.h"

namespace pagoda {
namespace {

class Metadata {
 public:
  Metadata(const GgufFile& g, const std::string& path) : g_(g), path_(path) {}

  const GgufValue* find(const std::string& key) const {
    auto it = g_.metadata.find(key);
    return it == g_.metadata.end() ? nullptr : &it->second;
  }
  // Reads an integer key into *out; absent keys are an error only when `required`.
  Status get_int(const std::string& key, bool required, int* out) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return required ? missing(key) : OkStatus();
    int64_t x = 0;
    if (!v->as_int64(&x) || x < INT32_MIN || x > INT32_MAX) {
      return InvalidArgument(path_ + ": metadata key '" + key + "' must be a 32-bit integer");
    }
    *out = static_cast<int>(x);
    return OkStatus();
  }
  Status get_float(const std::string& key, bool required, float* out) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return required ? missing(key) : OkStatus();
    if (v->type != GgufType::kF32 && v->type != GgufType::kF64) {
      return InvalidArgument(path_ + ": metadata key '" + key + "' must be a float");
    }
    *out = static_cast<float>(v->f);
    return OkStatus();
  }
  Status get_string(const std::string& key, bool required, std::string* out) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return required ? missing(key) : OkStatus();
    if (v->type != GgufType::kString) {
      return InvalidArgument(path_ + ": metadata key '" + key + "' must be a string");
    }
    *out = v->s;
    return OkStatus();
  }

 private:
  Status missing(const std::string& key) const {
    return InvalidArgument(path_ + ": required metadata key '" + key + "' is missing");
  }
  const GgufFile& g_;
  const std::string& path_;
};

Status read_config(const GgufFile& g, const std::string& path, ModelConfig* c) {
  Metadata md(g, path);
  PAGODA_RETURN_IF_ERROR(md.get_string("general.architecture", true, &c->architecture));
  if (c->architecture != "llama") {
    return Unimplemented(path + ": general.architecture '" + c->architecture +
                         "' is not supported (pagoda reads 'llama' GGUF files)");
  }
  PAGODA_RETURN_IF_ERROR(md.get_int("llama.embedding_length", true, &c->hidden_size));
  PAGODA_RETURN_IF_ERROR(md.get_int("llama.feed_forward_length", true, &c->intermediate_size));
  PAGODA_RETURN_IF_ERROR(md.get_int("llama.block_count", true, &c->num_layers));
  PAGODA_RETURN_IF_ERROR(md.get_int("llama.attention.head_count", true, &c->num_heads));
  c->num_kv_heads = c->num_heads;
  PAGODA_RETURN_IF_ERROR(md.get_int("llama.attention.head_count_kv", false, &c->num_kv_heads));
  c->head_dim = c->num_heads > 0 ? c->hidden_size / c->num_heads : 0;
  PAGODA_RETURN_IF_ERROR(md.get_int("llama.attention.key_length", false, &c->head_dim));
  PAGODA_RETURN_IF_ERROR(md.get_int("llama.context_length", true, &c->max_position_embeddings));
  PAGODA_RETURN_IF_ERROR(
      md.get_float("llama.attention.layer_norm_rms_epsilon", true, &c->rms_norm_eps));
  c->rope_theta = 10000.0f;
  PAGODA_RETURN_IF_ERROR(md.get_float("llama.rope.freq_base", false, &c->rope_theta));
  std::string scaling;
  PAGODA_RETURN_IF_ERROR(md.get_string("llama.rope.scaling.type", false, &scaling));
  if (!scaling.empty() && scaling != "none") {
    return Unimplemented(path + ": llama.rope.scaling.type '" + scaling + "' is not supported");
  }
  if (md.find("llama.vocab_size") != nullptr) {
    PAGODA_RETURN_IF_ERROR(md.get_int("llama.vocab_size", true, &c->vocab_size));
  } else if (const GgufValue* tokens = md.find("tokenizer.ggml.tokens");
             tokens != nullptr && tokens->type == GgufType::kArray) {
    c->vocab_size = static_cast<int>(tokens->array_len);
  } else {
    return InvalidArgument(path +
                           ": neither llama.vocab_size nor tokenizer.ggml.tokens is present");
  }
  // 0xFFFFFFFF (or anything outside the vocabulary) means "none" in GGUF files.
  int bos = -1, eos = -1;
  const GgufValue* v = md.find("tokenizer.ggml.bos_token_id");
  int64_t x = 0;
  if (v != nullptr && v->as_int64(&x) && x >= 0 && x < c->vocab_size) bos = static_cast<int>(x);
  v = md.find("tokenizer.ggml.eos_token_id");
  if (v != nullptr && v->as_int64(&x) && x >= 0 && x < c->vocab_size) eos = static_cast<int>(x);
  c->bos_token_id = bos;
  if (eos >= 0) c->eos_token_ids = {eos};
  c->rope_scaling = RopeScaling{};
  c->attention_bias = false;
  return OkStatus();
}

// GGUF name -> Hugging Face name; *rope_heads > 0 when the rows need the RoPE permutation.
bool map_name(const std::string& name, const ModelConfig& c, std::string* hf, int* rope_heads) {
  *rope_heads = 0;
  if (name == "token_embd.weight")
    *hf = "model.embed_tokens.weight";
  else if (name == "output_norm.weight")
    *hf = "model.norm.weight";
  else if (name == "output.weight")
    *hf = "lm_head.weight";
  else {
    int layer = -1, used = 0;
    char rest[64] = {};
    if (name.size() > 60 || std::sscanf(name.c_str(), "blk.%d.%63s%n", &layer, rest, &used) != 2 ||
        used != static_cast<int>(name.size()) || layer < 0 || layer >= c.num_layers) {
      return false;
    }
    static const std::pair<const char*, const char*> kLayer[] = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"}};
    const std::string r = rest;
    bool found = false;
    for (const auto& [from, to] : kLayer) {
      if (r == from) {
        *hf = "model.layers." + std::to_string(layer) + "." + to;
        found = true;
      }
    }
    if (!found) return false;
    if (r == "attn_q.weight") *rope_heads = c.num_heads;
    if (r == "attn_k.weight") *rope_heads = c.num_kv_heads;
  }
  return true;
}

// Copies a [heads*hd, cols] matrix from the interleaved-pair layout into the rotate-half layout.
Status add_permuted(WeightStore* store, const std::string& hf_name, const GgufFile& g,
                    const GgufTensorInfo& t, int heads, const std::string& path) {
  const std::vector<int64_t> shape = t.shape();  // [rows = heads * hd, cols]
  if (shape.size() != 2 || heads <= 0 || shape[0] % heads != 0 || (shape[0] / heads) % 2 != 0) {
    return InvalidArgument(path + ": tensor '" + t.name + "' of shape " +
                           loader_util::shape_string(shape) + " cannot be split into " +
                           std::to_string(heads) + " heads of even size");
  }
  const int64_t hd = shape[0] / heads;
  const size_t row_bytes = static_cast<size_t>(shape[1]) * dtype_size(t.dtype);
  HostBuffer buf(t.nbytes);
  const uint8_t* src = g.tensor_data(t);
  uint8_t* dst = buf.as<uint8_t>();
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      std::memcpy(dst + (h * hd + i) * row_bytes, src + (h * hd + 2 * i) * row_bytes, row_bytes);
      std::memcpy(dst + (h * hd + hd / 2 + i) * row_bytes, src + (h * hd + 2 * i + 1) * row_bytes,
                  row_bytes);
    }
  }
  const uint8_t* data = buf.as<uint8_t>();
  store->keep_alive(std::move(buf));  // the heap block does not move with the HostBuffer
  return loader_util::add_tensor(store, hf_name, data, t.dtype, shape, path);
}

}  // namespace

StatusOr<LoadedModel> load_gguf(const std::string& path) {
  PAGODA_ASSIGN_OR_RETURN(GgufFile g, read_gguf(path));
  LoadedModel model;
  model.source = path;
  ModelConfig& c = model.config;
  PAGODA_RETURN_IF_ERROR(read_config(g, path, &c));
  PAGODA_RETURN_IF_ERROR(c.validate(path));

  const GgufTensorInfo* embd = nullptr;
  const GgufTensorInfo* output = nullptr;
  const GgufTensorInfo* first_q = nullptr;
  for (const GgufTensorInfo& t : g.tensors) {
    if (t.name == "token_embd.weight") embd = &t;
    if (t.name == "output.weight") output = &t;
    if (t.name == "blk.0.attn_q.weight") first_q = &t;
  }
  if (embd == nullptr) return InvalidArgument(path + ": tensor 'token_embd.weight' is missing");
  c.dtype = (first_q != nullptr ? first_q : embd)->dtype;
  // Converters write the tied embedding out twice; keep one copy.
  const bool output_is_copy =
      output != nullptr && output->ggml_type == embd->ggml_type && output->ne == embd->ne &&
      std::memcmp(g.tensor_data(*output), g.tensor_data(*embd), embd->nbytes) == 0;
  c.tie_word_embeddings = output == nullptr || output_is_copy;

  for (const GgufTensorInfo& t : g.tensors) {
    if (&t == output && output_is_copy) continue;
    if (t.name == "rope_freqs.weight") {
      return Unimplemented(path +
                           ": tensor 'rope_freqs.weight' (llama3 RoPE scaling in GGUF) is "
                           "not supported yet");
    }
    std::string hf;
    int rope_heads = 0;
    if (!map_name(t.name, c, &hf, &rope_heads)) {
      return InvalidArgument(path + ": unexpected tensor '" + t.name + "' for a " +
                             std::to_string(c.num_layers) + "-layer llama model");
    }
    if (rope_heads > 0) {
      PAGODA_RETURN_IF_ERROR(add_permuted(&model.weights, hf, g, t, rope_heads, path));
    } else {
      PAGODA_RETURN_IF_ERROR(
          loader_util::add_tensor(&model.weights, hf, g.tensor_data(t), t.dtype, t.shape(), path));
    }
  }
  model.weights.keep_alive(std::move(g.file));
  PAGODA_RETURN_IF_ERROR(fuse_layer_weights(&model));  // one GEMM for q/k/v, one for gate/up
  const std::string tokenizer =
      loader_util::join_path(loader_util::dir_name(path), "tokenizer.model");
  if (loader_util::is_regular_file(tokenizer)) model.tokenizer_path = tokenizer;
  return model;
}

}  // namespace pagoda
