// The forward pass against a straightforward double-precision Llama written here from the
// formulas (dense attention over the whole sequence, no paging, no batching), on small synthetic
// models that exercise every configuration path: GQA, QKV bias (qwen2), llama3 RoPE scaling,
// untied LM head, bf16 weights — and a paged, ragged, chunked batch on our side.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "models/synthetic.h"

namespace pagoda {
namespace {

using Vec = std::vector<double>;

struct RefModel {
  const LoadedModel* m;
  Vec w(const std::string& name) const {
    const TensorView t = m->weights.tensors().at(name);
    Vec v(t.numel());
    for (size_t i = 0; i < v.size(); ++i) v[i] = load_as_f32(t.data, t.dtype, i);
    return v;
  }
  bool has(const std::string& name) const { return m->weights.contains(name); }
};

// y[n] = sum_k W[n, k] x[k] (+ b[n])
Vec linear(const Vec& W, const Vec& x, size_t n_out, const Vec* b = nullptr) {
  Vec y(n_out, 0.0);
  const size_t k = x.size();
  for (size_t n = 0; n < n_out; ++n) {
    double s = b ? (*b)[n] : 0.0;
    for (size_t i = 0; i < k; ++i) s += W[n * k + i] * x[i];
    y[n] = s;
  }
  return y;
}

Vec rms_norm(const Vec& x, const Vec& g, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double r = 1.0 / std::sqrt(ss / x.size() + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * g[i];
  return y;
}

// Rotate-half RoPE of one head at position p.
void rope(double* h, int hd, int p, const std::vector<float>& inv_freq) {
  for (int i = 0; i < hd / 2; ++i) {
    const double a = static_cast<double>(p) * inv_freq[i];
    const double x0 = h[i], x1 = h[i + hd / 2];
    h[i] = x0 * std::cos(a) - x1 * std::sin(a);
    h[i + hd / 2] = x1 * std::cos(a) + x0 * std::sin(a);
  }
}

// Logits [len, vocab] of one whole sequence.
std::vector<Vec> reference_logits(const LoadedModel& lm, const std::vector<int>& tokens) {
  const ModelConfig& c = lm.config;
  RefModel r{&lm};
  const int T = static_cast<int>(tokens.size()), d = c.hidden_size, H = c.num_heads,
            KV = c.num_kv_heads, hd = c.head_dim;
  const auto inv_freq = rope_inv_freq(c);
  const Vec emb = r.w("model.embed_tokens.weight");
  std::vector<Vec> x(T, Vec(d));
  for (int t = 0; t < T; ++t)
    std::copy_n(emb.begin() + static_cast<size_t>(tokens[t]) * d, d, x[t].begin());
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const Vec g1 = r.w(p + "input_layernorm.weight"), wq = r.w(p + "self_attn.q_proj.weight"),
              wk = r.w(p + "self_attn.k_proj.weight"), wv = r.w(p + "self_attn.v_proj.weight"),
              wo = r.w(p + "self_attn.o_proj.weight"),
              g2 = r.w(p + "post_attention_layernorm.weight"), wg = r.w(p + "mlp.gate_proj.weight"),
              wu = r.w(p + "mlp.up_proj.weight"), wd = r.w(p + "mlp.down_proj.weight");
    Vec bq, bk, bv;
    if (c.attention_bias) {
      bq = r.w(p + "self_attn.q_proj.bias");
      bk = r.w(p + "self_attn.k_proj.bias");
      bv = r.w(p + "self_attn.v_proj.bias");
    }
    std::vector<Vec> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      const Vec h = rms_norm(x[t], g1, c.rms_norm_eps);
      q[t] = linear(wq, h, H * hd, c.attention_bias ? &bq : nullptr);
      k[t] = linear(wk, h, KV * hd, c.attention_bias ? &bk : nullptr);
      v[t] = linear(wv, h, KV * hd, c.attention_bias ? &bv : nullptr);
      for (int i = 0; i < H; ++i) rope(&q[t][i * hd], hd, t, inv_freq);
      for (int i = 0; i < KV; ++i) rope(&k[t][i * hd], hd, t, inv_freq);
    }
    for (int t = 0; t < T; ++t) {
      Vec att(H * hd, 0.0);
      for (int h = 0; h < H; ++h) {
        const int kvh = h / (H / KV);
        Vec s(t + 1);
        double mx = -1e300;
        for (int j = 0; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[t][h * hd + i] * k[j][kvh * hd + i];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i) att[h * hd + i] += s[j] / z * v[j][kvh * hd + i];
      }
      const Vec o = linear(wo, att, d);
      for (int i = 0; i < d; ++i) x[t][i] += o[i];
      const Vec h = rms_norm(x[t], g2, c.rms_norm_eps);
      Vec gate = linear(wg, h, c.intermediate_size);
      const Vec up = linear(wu, h, c.intermediate_size);
      for (size_t i = 0; i < gate.size(); ++i)
        gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const Vec down = linear(wd, gate, d);
      for (int i = 0; i < d; ++i) x[t][i] += down[i];
    }
  }
  const Vec gn = r.w("model.norm.weight");
  const Vec head = r.w(r.has("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight");
  std::vector<Vec> out;
  for (int t = 0; t < T; ++t)
    out.push_back(linear(head, rms_norm(x[t], gn, c.rms_norm_eps), c.vocab_size));
  return out;
}

ModelConfig small_config(bool qwen_like) {
  ModelConfig c;
  c.architecture = qwen_like ? "qwen2" : "llama";
  c.vocab_size = 97;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.num_layers = 2;
  c.num_heads = 6;
  c.num_kv_heads = qwen_like ? 2 : 3;
  c.head_dim = 8;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = qwen_like ? 1000000.0f : 500000.0f;
  c.attention_bias = qwen_like;
  c.tie_word_embeddings = !qwen_like;
  if (!qwen_like) c.rope_scaling = {RopeScaling::Type::kLlama3, 8.0f, 1.0f, 4.0f, 32};
  return c;
}

struct Case {
  bool qwen_like;
  DType dtype;
};

class LlamaReferenceTest : public ::testing::TestWithParam<Case> {};

// Two sequences (lengths 37 and 23) computed in three steps of ragged chunks over a shuffled,
// block size 4 cache; every row's logits must match the dense reference.
TEST_P(LlamaReferenceTest, PagedRaggedChunkedForwardMatchesDenseReference) {
  const Case cs = GetParam();
  auto loaded = make_synthetic_model(small_config(cs.qwen_like), cs.dtype, 99);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  auto backend = make_backend("cpu", 2);
  ASSERT_TRUE(backend.ok());
  auto model = LlamaModel::create(*loaded, backend->get());
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const int bs = 4, num_blocks = 32;
  auto cache = KvCache::create(backend->get(), (*model)->kv_cache_shape(num_blocks, bs));
  ASSERT_TRUE(cache.ok());

  std::mt19937 rng(3);
  std::vector<std::vector<int>> seqs = {std::vector<int>(37), std::vector<int>(23)};
  for (auto& s : seqs)
    for (int& t : s) t = static_cast<int>(rng() % 97);
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  const std::vector<std::vector<int32_t>> tables = {{pool.begin(), pool.begin() + 10},
                                                    {pool.begin() + 10, pool.begin() + 16}};
  const std::vector<std::vector<int>> chunk_ends = {{5, 30, 37}, {1, 2, 23}};  // per step

  std::vector<std::vector<float>> ours(2);
  int done[2] = {0, 0};
  for (int step = 0; step < 3; ++step) {
    ForwardBatch b;
    b.query_start = {0};
    b.max_blocks_per_seq = 10;
    b.block_tables.assign(2 * 10, 0);
    for (int s = 0; s < 2; ++s) {
      for (int p = done[s]; p < chunk_ends[s][step]; ++p) {
        b.token_ids.push_back(seqs[s][p]);
        b.positions.push_back(p);
        b.slot_mapping.push_back(tables[s][p / bs] * bs + p % bs);
        b.sample_rows.push_back(static_cast<int32_t>(b.token_ids.size()) - 1);
      }
      std::copy(tables[s].begin(), tables[s].end(), b.block_tables.begin() + s * 10);
      b.seq_lens.push_back(chunk_ends[s][step]);
      b.query_start.push_back(static_cast<int32_t>(b.token_ids.size()));
    }
    std::vector<float> logits;
    ASSERT_TRUE((*model)->forward(b, *cache, &logits).ok());
    size_t row = 0;
    for (int s = 0; s < 2; ++s) {
      const size_t n = chunk_ends[s][step] - done[s];
      ours[s].insert(ours[s].end(), logits.begin() + row * 97, logits.begin() + (row + n) * 97);
      row += n;
      done[s] = chunk_ends[s][step];
    }
  }
  for (int s = 0; s < 2; ++s) {
    const auto ref = reference_logits(*loaded, seqs[s]);
    ASSERT_EQ(ours[s].size(), ref.size() * 97);
    double max_err = 0;
    for (size_t t = 0; t < ref.size(); ++t)
      for (int v = 0; v < 97; ++v)
        max_err = std::max(max_err,
                           std::abs(ours[s][t * 97 + v] - ref[t][v]) / (1.0 + std::abs(ref[t][v])));
    EXPECT_LT(max_err, 2e-5) << "sequence " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, LlamaReferenceTest,
                         ::testing::Values(Case{false, DType::kF32}, Case{true, DType::kF32},
                                           Case{false, DType::kBF16}, Case{true, DType::kF16}),
                         [](const auto& info) {
                           return std::string(info.param.qwen_like ? "Qwen2Bias" : "Llama3Rope") +
                                  "_" + dtype_name(info.param.dtype);
                         });

}  // namespace
}  // namespace pagoda
