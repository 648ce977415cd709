// Weight fusion (WeightStore::fuse_rows, fuse_layer_weights): the fused tensor is the parts'
// rows in order, the part names become views of it (nothing held twice), parts back to back are
// fused without a copy, mixed dtypes are widened (fuse_rows) or left alone (fuse_layer_weights),
// bad parts are reported; and a model made from a LoadedModel without fused tensors (create()
// fuses them itself) computes bit for bit what the loader-fused one does.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/buffer.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "models/synthetic.h"
#include "models/weights.h"

namespace pagoda {
namespace {

// A store owning one buffer per tensor, filled with value(i) = base + i.
TensorView add_owned(WeightStore* s, const std::string& name, DType t, std::vector<int64_t> shape,
                     float base) {
  TensorView v;
  v.dtype = t;
  v.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) v.shape[i] = shape[i];
  HostBuffer buf(v.nbytes());
  for (int64_t i = 0; i < v.numel(); ++i) store_from_f32(buf.data(), t, i, base + i);
  v.data = buf.data();
  s->keep_alive(std::move(buf));
  EXPECT_TRUE(s->add(name, v).ok());
  return v;
}

bool inside(const TensorView& whole, const TensorView& part) {
  const char* w = static_cast<const char*>(whole.data);
  const char* p = static_cast<const char*>(part.data);
  return p >= w && p + part.nbytes() <= w + whole.nbytes();
}

TEST(FuseRows, ConcatenatesRowsAndRepointsThePartsIntoTheFusedTensor) {
  WeightStore s;
  add_owned(&s, "a", DType::kBF16, {3, 4}, 0.0f);
  add_owned(&s, "b", DType::kBF16, {1, 4}, 100.0f);
  add_owned(&s, "c", DType::kBF16, {2, 4}, 200.0f);
  ASSERT_TRUE(s.fuse_rows({"a", "b", "c"}, "abc").ok());
  auto f = s.get("abc", {6, 4});
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->dtype, DType::kBF16);
  const float want_row0[3] = {0.0f, 100.0f, 200.0f};  // rows 0, 3, 4 start the parts
  EXPECT_EQ(load_as_f32(f->data, f->dtype, 0), want_row0[0]);
  EXPECT_EQ(load_as_f32(f->data, f->dtype, 3 * 4), want_row0[1]);
  EXPECT_EQ(load_as_f32(f->data, f->dtype, 4 * 4 + 5), 205.0f);
  // Parts are views at their rows.
  auto a = s.get("a", {3, 4}), b = s.get("b", {1, 4}), c = s.get("c", {2, 4});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->data, f->data);
  EXPECT_EQ(b->data, static_cast<char*>(f->data) + 12 * 2);
  EXPECT_EQ(c->data, static_cast<char*>(f->data) + 16 * 2);
  for (const TensorView* p : {&*a, &*b, &*c}) EXPECT_TRUE(inside(*f, *p));
  EXPECT_EQ(load_as_f32(c->data, c->dtype, 7), 207.0f);
  // Twice is an error (the fused name exists); a missing part is NotFound.
  EXPECT_EQ(s.fuse_rows({"a", "b"}, "abc").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.fuse_rows({"a", "zz"}, "az").code(), StatusCode::kNotFound);
}

TEST(FuseRows, AdjacentPartsAreFusedWithoutACopy) {
  WeightStore s;
  HostBuffer buf(5 * 4 * sizeof(float));
  for (int i = 0; i < 20; ++i) buf.as<float>()[i] = static_cast<float>(i);
  ASSERT_TRUE(s.add("x", TensorView(buf.data(), DType::kF32, {2, 4})).ok());
  ASSERT_TRUE(s.add("y", TensorView(buf.as<float>() + 8, DType::kF32, {3, 4})).ok());
  void* const data = buf.data();
  s.keep_alive(std::move(buf));
  ASSERT_TRUE(s.fuse_rows({"x", "y"}, "xy").ok());
  auto f = s.get("xy", {5, 4});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->data, data);
  EXPECT_EQ(s.get("y", {3, 4})->data, static_cast<float*>(data) + 8);
}

TEST(FuseRows, WidensMixedDtypesExactlyAndRejectsMismatchedShapes) {
  WeightStore s;
  add_owned(&s, "h", DType::kF16, {2}, 1.5f);
  add_owned(&s, "g", DType::kBF16, {3}, -7.0f);
  ASSERT_TRUE(s.fuse_rows({"h", "g"}, "hg").ok());
  auto f = s.get("hg", {5});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->dtype, DType::kF32);
  const float want[5] = {1.5f, 2.5f, -7.0f, -6.0f, -5.0f};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f->as<float>()[i], want[i]) << i;
  EXPECT_EQ(s.get("g", {3})->dtype, DType::kF32);

  WeightStore bad;
  add_owned(&bad, "m", DType::kF32, {2, 4}, 0.0f);
  add_owned(&bad, "n", DType::kF32, {2, 5}, 0.0f);
  add_owned(&bad, "v", DType::kF32, {4}, 0.0f);
  const Status cols = bad.fuse_rows({"m", "n"}, "mn");
  EXPECT_EQ(cols.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(cols.message().find("'n'"), std::string::npos) << cols.message();
  EXPECT_EQ(bad.fuse_rows({"m", "v"}, "mv").code(), StatusCode::kInvalidArgument);
}

ModelConfig small_config(bool bias) {
  auto c = synthetic_config("stories260K");
  EXPECT_TRUE(c.ok());
  ModelConfig m = *c;
  m.num_layers = 2;
  m.attention_bias = bias;
  return m;
}

TEST(FuseLayerWeights, SyntheticModelsCarryFusedViewsOfTheirProjections) {
  for (bool bias : {false, true}) {
    const ModelConfig c = small_config(bias);
    auto m = make_synthetic_model(c, DType::kBF16, 7);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const WeightStore& w = m->weights;
    const int64_t d = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim,
                  inter = c.intermediate_size;
    EXPECT_EQ(w.tensors().size(), 1 + 1 + 2 * (9 + 2 + (bias ? 4 : 0))) << "bias " << bias;
    for (int l = 0; l < c.num_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto qkv = w.get(p + "self_attn.qkv_proj.weight", {q + 2 * kv, d});
      auto gate_up = w.get(p + "mlp.gate_up_proj.weight", {2 * inter, d});
      ASSERT_TRUE(qkv.ok() && gate_up.ok());
      const size_t row = d * 2;  // bf16
      EXPECT_EQ(w.get(p + "self_attn.q_proj.weight", {q, d})->data, qkv->data);
      EXPECT_EQ(w.get(p + "self_attn.k_proj.weight", {kv, d})->data,
                static_cast<char*>(qkv->data) + q * row);
      EXPECT_EQ(w.get(p + "self_attn.v_proj.weight", {kv, d})->data,
                static_cast<char*>(qkv->data) + (q + kv) * row);
      EXPECT_EQ(w.get(p + "mlp.gate_proj.weight", {inter, d})->data, gate_up->data);
      EXPECT_EQ(w.get(p + "mlp.up_proj.weight", {inter, d})->data,
                static_cast<char*>(gate_up->data) + inter * row);
      if (bias) {
        auto b = w.get(p + "self_attn.qkv_proj.bias", {q + 2 * kv});
        ASSERT_TRUE(b.ok());
        EXPECT_EQ(w.get(p + "self_attn.v_proj.bias", {kv})->data,
                  static_cast<char*>(b->data) + (q + kv) * 2);
      }
    }
    // Idempotent.
    const size_t n = w.tensors().size();
    ASSERT_TRUE(fuse_layer_weights(&*m).ok());
    EXPECT_EQ(m->weights.tensors().size(), n);
  }
}

// The parts are marked as views (is_view), so a sum over the other tensors counts every weight
// once: the model's parameter count from its shape (a benchmark's bytes per token and parameter
// count were 1.6x too high at llama3-8b's shape when they summed every name).
TEST(FuseLayerWeights, PartsAreViewsAndTheRestCountEveryWeightOnce) {
  for (bool bias : {false, true}) {
    const ModelConfig c = small_config(bias);
    auto m = make_synthetic_model(c, DType::kBF16, 7);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const int64_t d = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim,
                  inter = c.intermediate_size, vocab = c.vocab_size;
    const int64_t per_layer =
        d * (q + 2 * kv) + q * d + 3 * d * inter + 2 * d + (bias ? q + 2 * kv : 0);
    const int64_t want =
        c.num_layers * per_layer + d + vocab * d + (c.tie_word_embeddings ? 0 : vocab * d);
    int64_t counted = 0, views = 0;
    for (const auto& [name, t] : m->weights.tensors()) {
      if (m->weights.is_view(name)) {
        ++views;
        EXPECT_TRUE(name.find("_proj.") != std::string::npos) << name;
        continue;
      }
      counted += t.numel();
    }
    EXPECT_EQ(counted, want) << "bias " << bias;
    EXPECT_EQ(views, c.num_layers * (5 + (bias ? 3 : 0)));  // q, k, v, gate, up (+ 3 biases)
    EXPECT_FALSE(m->weights.is_view("model.layers.0.self_attn.qkv_proj.weight"));
  }
}

// The same synthetic weights as a LoadedModel holding only the parts (copies, so that the
// originals stay valid), in each part's own buffer.
LoadedModel unfused_copy(const LoadedModel& src) {
  LoadedModel out;
  out.config = src.config;
  out.source = src.source;
  for (const auto& [name, t] : src.weights.tensors()) {
    if (name.find("qkv_proj") != std::string::npos ||
        name.find("gate_up_proj") != std::string::npos)
      continue;
    HostBuffer buf(t.nbytes());
    std::memcpy(buf.data(), t.data, t.nbytes());
    TensorView v = t;
    v.data = buf.data();
    out.weights.keep_alive(std::move(buf));
    EXPECT_TRUE(out.weights.add(name, v).ok());
  }
  return out;
}

TEST(FuseLayerWeights, ModelFromUnfusedWeightsMatchesTheFusedOneBitForBit) {
  for (bool bias : {false, true}) {
    auto fused = make_synthetic_model(small_config(bias), DType::kF16, 11);
    ASSERT_TRUE(fused.ok());
    const LoadedModel parts = unfused_copy(*fused);
    ASSERT_FALSE(parts.weights.contains("model.layers.0.self_attn.qkv_proj.weight"));
    auto backend = make_backend("cpu", 2);
    ASSERT_TRUE(backend.ok());
    std::vector<std::vector<float>> logits;
    for (const LoadedModel* lm : {static_cast<const LoadedModel*>(&*fused), &parts}) {
      auto model = LlamaModel::create(*lm, backend->get());
      ASSERT_TRUE(model.ok()) << model.status().to_string();
      auto cache = KvCache::create(backend->get(), (*model)->kv_cache_shape(4, 4));
      ASSERT_TRUE(cache.ok());
      ForwardBatch b;
      b.token_ids = {5, 17, 300, 2, 9};
      b.positions = {0, 1, 2, 0, 1};
      b.slot_mapping = {0, 1, 2, 4, 5};
      b.max_blocks_per_seq = 1;
      b.block_tables = {0, 1};
      b.seq_lens = {3, 2};
      b.query_start = {0, 3, 5};
      b.sample_rows = {2, 4};
      std::vector<float> out;
      ASSERT_TRUE((*model)->forward(b, *cache, &out).ok());
      logits.push_back(out);
    }
    ASSERT_EQ(logits[0].size(), logits[1].size());
    EXPECT_EQ(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * sizeof(float)), 0);
  }
}

TEST(FuseLayerWeights, ModelReportsAMissingPartByName) {
  auto fused = make_synthetic_model(small_config(false), DType::kF32, 3);
  ASSERT_TRUE(fused.ok());
  LoadedModel parts = unfused_copy(*fused);
  LoadedModel broken;
  broken.config = parts.config;
  for (const auto& [name, t] : parts.weights.tensors()) {
    if (name == "model.layers.1.mlp.up_proj.weight") continue;
    ASSERT_TRUE(broken.weights.add(name, t).ok());
  }
  auto backend = make_backend("cpu", 1);
  ASSERT_TRUE(backend.ok());
  auto model = LlamaModel::create(broken, backend->get());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kNotFound);
  EXPECT_NE(model.status().message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos)
      << model.status().message();
}

}  // namespace
}  // namespace pagoda
