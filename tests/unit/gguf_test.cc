// The GGUF loader on small files written here: a tiny llama (names, shapes, the q/k RoPE
// permutation, tying, F16) and broken files (magic, version, truncation, tensor types).
#include "models/loaders/gguf.h"

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "tests/unit/model_file_test_util.h"

namespace pagoda {
namespace {

using testing::GgufBuilder;
using testing::TempDir;
using testing::write_file;

constexpr uint32_t kF32 = 0, kF16 = 1, kBF16 = 30, kQ8_0 = 8;

// Row r of a [rows, cols] F32 matrix holds r * 100 + c.
std::string rows_f32(int rows, int cols) {
  std::vector<float> v;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) v.push_back(static_cast<float>(r * 100 + c));
  return testing::bytes_of(v);
}
std::string filled_f16(int n, float x) {
  return testing::bytes_of(std::vector<uint16_t>(n, f32_to_f16(x)));
}

// A one-layer llama: hidden 8, 2 heads of 4, 1 KV head, ffn 12, vocab 6.
GgufBuilder tiny_llama(bool with_output, const std::string& arch = "llama") {
  GgufBuilder b;
  b.kv_str("general.architecture", arch);
  b.kv_u32("llama.embedding_length", 8);
  b.kv_u32("llama.feed_forward_length", 12);
  b.kv_u32("llama.block_count", 1);
  b.kv_u32("llama.attention.head_count", 2);
  b.kv_u32("llama.attention.head_count_kv", 1);
  b.kv_u32("llama.context_length", 64);
  b.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.kv_f32("llama.rope.freq_base", 500000.0f);
  b.kv_str_array("tokenizer.ggml.tokens", 6);
  b.kv_u32("tokenizer.ggml.bos_token_id", 1);
  b.kv_u32("tokenizer.ggml.eos_token_id", 2);
  b.tensor("token_embd.weight", {8, 6}, kF32, rows_f32(6, 8));
  b.tensor("blk.0.attn_norm.weight", {8}, kF32, rows_f32(1, 8));
  b.tensor("blk.0.attn_q.weight", {8, 8}, kF32, rows_f32(8, 8));
  b.tensor("blk.0.attn_k.weight", {8, 4}, kF32, rows_f32(4, 8));
  b.tensor("blk.0.attn_v.weight", {8, 4}, kF16, filled_f16(32, 0.5f));
  b.tensor("blk.0.attn_output.weight", {8, 8}, kF32, rows_f32(8, 8));
  b.tensor("blk.0.ffn_norm.weight", {8}, kF32, rows_f32(1, 8));
  b.tensor("blk.0.ffn_gate.weight", {8, 12}, kBF16, filled_f16(96, 0.0f));
  b.tensor("blk.0.ffn_up.weight", {8, 12}, kF32, rows_f32(12, 8));
  b.tensor("blk.0.ffn_down.weight", {12, 8}, kF32, rows_f32(8, 12));
  b.tensor("output_norm.weight", {8}, kF32, rows_f32(1, 8));
  if (with_output) b.tensor("output.weight", {8, 6}, kF32, rows_f32(6, 8) /*same as embd*/);
  return b;
}

// Row r's first element says which source row it came from.
std::vector<int> row_sources(const TensorView& t) {
  std::vector<int> out;
  for (int64_t r = 0; r < t.shape[0]; ++r)
    out.push_back(static_cast<int>(t.as<float>()[r * t.shape[1]] / 100));
  return out;
}

TEST(Gguf, LoadsTinyLlama) {
  TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  write_file(path, tiny_llama(false).build());
  auto m = load_gguf(path);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.hidden_size, 8);
  EXPECT_EQ(c.intermediate_size, 12);
  EXPECT_EQ(c.num_layers, 1);
  EXPECT_EQ(c.num_heads, 2);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.vocab_size, 6);  // from the tokens array
  EXPECT_EQ(c.max_position_embeddings, 64);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
  EXPECT_TRUE(c.tie_word_embeddings);  // no output.weight
  EXPECT_EQ(m->tokenizer_path, "");
  EXPECT_EQ(m->source, path);

  const WeightStore& w = m->weights;
  EXPECT_EQ(w.tensors().size(), 11u);
  EXPECT_FALSE(w.contains("lm_head.weight"));
  // Shapes are row-major: GGUF ne [8, 6] is [6 rows (vocab), 8 cols].
  auto embd = w.get("model.embed_tokens.weight", {6, 8});
  ASSERT_TRUE(embd.ok()) << embd.status().to_string();
  EXPECT_EQ(row_sources(*embd), (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(embd->as<float>()[3 * 8 + 5], 305.0f);
  ASSERT_TRUE(w.get("model.layers.0.mlp.down_proj.weight", {8, 12}).ok());
  ASSERT_TRUE(w.get("model.layers.0.mlp.gate_proj.weight", {12, 8}).ok());
  EXPECT_EQ(w.get("model.layers.0.mlp.gate_proj.weight", {12, 8})->dtype, DType::kBF16);
  auto v = w.get("model.layers.0.self_attn.v_proj.weight", {4, 8});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->dtype, DType::kF16);
  EXPECT_EQ(load_as_f32(v->data, v->dtype, 31), 0.5f);
  for (const char* n : {"model.layers.0.input_layernorm.weight",
                        "model.layers.0.post_attention_layernorm.weight", "model.norm.weight"}) {
    EXPECT_TRUE(w.get(n, {8}).ok()) << n;
  }
  // q/k: per head of 4 rows, interleaved rows (0,1,2,3) become rotate-half rows (0,2,1,3).
  auto q = w.get("model.layers.0.self_attn.q_proj.weight", {8, 8});
  auto k = w.get("model.layers.0.self_attn.k_proj.weight", {4, 8});
  ASSERT_TRUE(q.ok() && k.ok());
  EXPECT_EQ(row_sources(*q), (std::vector<int>{0, 2, 1, 3, 4, 6, 5, 7}));
  EXPECT_EQ(row_sources(*k), (std::vector<int>{0, 2, 1, 3}));
  EXPECT_EQ(q->as<float>()[1 * 8 + 7], 207.0f);
  // o_proj is not permuted.
  EXPECT_EQ(row_sources(*w.get("model.layers.0.self_attn.o_proj.weight", {8, 8})),
            (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(Gguf, OutputWeightCopyOfEmbeddingIsTiedAndVersion2Works) {
  TempDir dir;
  const std::string path = dir.file("tied.gguf");
  write_file(path, tiny_llama(true).build(/*version=*/2));
  write_file(dir.file("tokenizer.model"), "x");
  auto m = load_gguf(path);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_TRUE(m->config.tie_word_embeddings);
  EXPECT_FALSE(m->weights.contains("lm_head.weight"));
  EXPECT_EQ(m->tokenizer_path, dir.file("tokenizer.model"));
}

TEST(Gguf, DistinctOutputWeightIsKept) {
  TempDir dir;
  const std::string path = dir.file("untied.gguf");
  GgufBuilder b = tiny_llama(false);
  std::string different = rows_f32(6, 8);
  different[0] = 1;
  b.tensor("output.weight", {8, 6}, kF32, different);
  write_file(path, b.build());
  auto m = load_gguf(path);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_FALSE(m->config.tie_word_embeddings);
  EXPECT_TRUE(m->weights.get("lm_head.weight", {6, 8}).ok());
}

void expect_error(const StatusOr<LoadedModel>& m, StatusCode code, const std::string& path,
                  std::initializer_list<std::string> mentions) {
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), code) << m.status().to_string();
  EXPECT_NE(m.status().message().find(path), std::string::npos) << m.status().to_string();
  for (const std::string& s : mentions) {
    EXPECT_NE(m.status().message().find(s), std::string::npos)
        << "'" << s << "' in " << m.status().to_string();
  }
}

TEST(Gguf, WrongMagic) {
  TempDir dir;
  const std::string path = dir.file("bad.gguf");
  std::string bytes = tiny_llama(false).build();
  bytes.replace(0, 4, "GGML");
  write_file(path, bytes);
  expect_error(load_gguf(path), StatusCode::kInvalidArgument, path, {"magic", "GGML"});
  // load_model dispatches .gguf files here too.
  expect_error(load_model(path), StatusCode::kInvalidArgument, path, {"magic"});
}

TEST(Gguf, WrongVersion) {
  TempDir dir;
  const std::string path = dir.file("v.gguf");
  for (uint32_t version : {1u, 4u, 0x03000000u}) {
    write_file(path, tiny_llama(false).build(version));
    expect_error(load_gguf(path), StatusCode::kInvalidArgument, path,
                 {"version " + std::to_string(version)});
  }
}

TEST(Gguf, Truncated) {
  TempDir dir;
  const std::string path = dir.file("cut.gguf");
  const std::string good = tiny_llama(false).build();
  write_file(path, good.substr(0, good.size() - 20));  // cuts into output_norm's data
  expect_error(load_gguf(path), StatusCode::kDataLoss, path, {"truncated", "output_norm.weight"});
  write_file(path, good.substr(0, 100));  // inside the metadata
  expect_error(load_gguf(path), StatusCode::kDataLoss, path, {"truncated"});
  // Every prefix fails with DataLoss, never a crash.
  for (size_t n = 0; n < good.size(); n += 7) {
    write_file(path, good.substr(0, n));
    auto m = load_gguf(path);
    ASSERT_FALSE(m.ok()) << n;
    EXPECT_EQ(m.status().code(), StatusCode::kDataLoss) << n << ": " << m.status().to_string();
  }
}

TEST(Gguf, BadTensorType) {
  TempDir dir;
  const std::string path = dir.file("type.gguf");
  GgufBuilder q = tiny_llama(false);
  q.tensor("output.weight", {32, 6}, kQ8_0, std::string(6 * 34, '\0'));
  write_file(path, q.build());
  expect_error(load_gguf(path), StatusCode::kUnimplemented, path, {"'output.weight'", "Q8_0"});
  GgufBuilder u = tiny_llama(false);
  u.tensor("output.weight", {8, 6}, 250, std::string(48, '\0'));
  write_file(path, u.build());
  expect_error(load_gguf(path), StatusCode::kInvalidArgument, path,
               {"'output.weight'", "unknown ggml type 250"});
}

TEST(Gguf, BadMetadataAndNames) {
  TempDir dir;
  const std::string path = dir.file("meta.gguf");
  write_file(path, tiny_llama(false, "gpt2").build());
  expect_error(load_gguf(path), StatusCode::kUnimplemented, path, {"gpt2"});

  GgufBuilder missing;
  missing.kv_str("general.architecture", "llama");
  write_file(path, missing.build());
  expect_error(load_gguf(path), StatusCode::kInvalidArgument, path, {"llama.embedding_length"});

  GgufBuilder extra = tiny_llama(false);
  extra.tensor("blk.7.attn_q.weight", {8, 8}, kF32, rows_f32(8, 8));  // layer 7 of 1
  write_file(path, extra.build());
  expect_error(load_gguf(path), StatusCode::kInvalidArgument, path, {"blk.7.attn_q.weight"});
}

}  // namespace
}  // namespace pagoda
