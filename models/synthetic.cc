#include "models/synthetic.h"

#include <cmath>

#include "core/thread_pool.h"

namespace pagoda {

namespace {

ModelConfig llama_like(int vocab, int hidden, int inter, int layers, int heads, int kv_heads,
                       int max_pos, float theta, bool tied) {
  ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.max_position_embeddings = max_pos;
  c.rope_theta = theta;
  c.tie_word_embeddings = tied;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

// splitmix64: a tiny, fast, seedable generator; each tensor chunk gets its own stream.
uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Status add_random(LoadedModel* m, const std::string& name, std::vector<int64_t> shape, DType dtype,
                  float scale, float offset, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  HostBuffer buf(static_cast<size_t>(n) * dtype_size(dtype));
  void* data = buf.data();
  ThreadPool::global().parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
    uint64_t state = seed * 0x632be59bd9b4e019ull + static_cast<uint64_t>(begin);
    for (int64_t i = begin; i < end; ++i) {
      const float u = static_cast<float>(splitmix64(&state) >> 40) * 0x1p-24f;  // [0, 1)
      store_from_f32(data, dtype, static_cast<size_t>(i), offset + scale * (2.0f * u - 1.0f));
    }
  });
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
  m->weights.keep_alive(std::move(buf));
  return m->weights.add(name, t);
}

}  // namespace

std::vector<std::string> synthetic_shapes() {
  return {"tinyllama-1.1b", "llama3-1b", "llama3-8b", "stories260K"};
}

StatusOr<ModelConfig> synthetic_config(const std::string& shape) {
  ModelConfig c;
  if (shape == "tinyllama-1.1b") {
    c = llama_like(32000, 2048, 5632, 22, 32, 4, 2048, 10000.0f, false);
  } else if (shape == "llama3-1b") {
    c = llama_like(128256, 2048, 8192, 16, 32, 8, 131072, 500000.0f, true);
    c.head_dim = 64;
    c.rope_scaling = {RopeScaling::Type::kLlama3, 32.0f, 1.0f, 4.0f, 8192};
  } else if (shape == "llama3-8b") {
    c = llama_like(128256, 4096, 14336, 32, 32, 8, 8192, 500000.0f, false);
  } else if (shape == "stories260K") {
    c = llama_like(512, 64, 172, 5, 8, 4, 512, 10000.0f, true);
  } else {
    std::string known;
    for (const auto& s : synthetic_shapes()) known += (known.empty() ? "" : ", ") + s;
    return InvalidArgument("unknown synthetic shape '" + shape + "' (known: " + known + ")");
  }
  return c;
}

StatusOr<LoadedModel> make_synthetic_model(const ModelConfig& c, DType dtype, uint64_t seed) {
  PAGODA_RETURN_IF_ERROR(c.validate("synthetic config"));
  if (dtype == DType::kI32) return InvalidArgument("synthetic model: weights cannot be i32");
  LoadedModel m;
  m.config = c;
  m.config.dtype = dtype;
  m.source = "synthetic";
  const int64_t d = c.hidden_size, q = int64_t{c.num_heads} * c.head_dim,
                kv = int64_t{c.num_kv_heads} * c.head_dim, inter = c.intermediate_size;
  // Uniform(-a, a) with a = sqrt(3 / fan_in) keeps activations at unit scale through a layer.
  auto w = [](int64_t fan_in) { return std::sqrt(1.0f / static_cast<float>(fan_in)); };
  uint64_t s = seed;
  PAGODA_RETURN_IF_ERROR(
      add_random(&m, "model.embed_tokens.weight", {c.vocab_size, d}, dtype, 1.0f, 0.0f, ++s));
  PAGODA_RETURN_IF_ERROR(add_random(&m, "model.norm.weight", {d}, dtype, 0.1f, 1.0f, ++s));
  if (!c.tie_word_embeddings)
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, "lm_head.weight", {c.vocab_size, d}, dtype, w(d), 0.0f, ++s));
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "input_layernorm.weight", {d}, dtype, 0.1f, 1.0f, ++s));
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "self_attn.q_proj.weight", {q, d}, dtype, w(d), 0.0f, ++s));
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "self_attn.k_proj.weight", {kv, d}, dtype, w(d), 0.0f, ++s));
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "self_attn.v_proj.weight", {kv, d}, dtype, w(d), 0.0f, ++s));
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "self_attn.o_proj.weight", {d, q}, dtype, w(q), 0.0f, ++s));
    if (c.attention_bias) {
      PAGODA_RETURN_IF_ERROR(
          add_random(&m, p + "self_attn.q_proj.bias", {q}, dtype, 0.02f, 0.0f, ++s));
      PAGODA_RETURN_IF_ERROR(
          add_random(&m, p + "self_attn.k_proj.bias", {kv}, dtype, 0.02f, 0.0f, ++s));
      PAGODA_RETURN_IF_ERROR(
          add_random(&m, p + "self_attn.v_proj.bias", {kv}, dtype, 0.02f, 0.0f, ++s));
    }
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "post_attention_layernorm.weight", {d}, dtype, 0.1f, 1.0f, ++s));
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "mlp.gate_proj.weight", {inter, d}, dtype, w(d), 0.0f, ++s));
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "mlp.up_proj.weight", {inter, d}, dtype, w(d), 0.0f, ++s));
    PAGODA_RETURN_IF_ERROR(
        add_random(&m, p + "mlp.down_proj.weight", {d, inter}, dtype, w(inter), 0.0f, ++s));
  }
  PAGODA_RETURN_IF_ERROR(fuse_layer_weights(&m));  // one GEMM for q/k/v, one for gate/up
  return m;
}

}  // namespace pagoda
