// load_model end to end: the bundled stories260K Hugging Face folder (made by
// scripts/convert_llama2c.py from llama2.c's checkpoint) against the same model in GGUF, and the
// Hugging Face folder rules (missing pieces, special ids, tokenizer path).
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "models/weights.h"
#include "tests/unit/model_file_test_util.h"

namespace pagoda {
namespace {

using testing::safetensors_file;
using testing::TempDir;
using testing::write_file;

const std::string kSourceDir = PAGODA_SOURCE_DIR;
const std::string kHfFolder = kSourceDir + "/assets/models/stories260K";
const std::string kGguf = kSourceDir + "/tests/data/stories260K.gguf";

TEST(ModelLoad, Stories260KFolderAndGgufAgreeBitForBit) {
  auto hf = load_model(kHfFolder);
  ASSERT_TRUE(hf.ok()) << hf.status().to_string();
  auto gg = load_model(kGguf);
  ASSERT_TRUE(gg.ok()) << gg.status().to_string();

  for (const LoadedModel* m : {&*hf, &*gg}) {
    const ModelConfig& c = m->config;
    SCOPED_TRACE(m->source);
    EXPECT_EQ(c.architecture, "llama");
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.intermediate_size, 172);
    EXPECT_EQ(c.num_layers, 5);
    EXPECT_EQ(c.num_heads, 8);
    EXPECT_EQ(c.num_kv_heads, 4);
    EXPECT_EQ(c.head_dim, 8);
    EXPECT_EQ(c.vocab_size, 512);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
    EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
    EXPECT_EQ(c.dtype, DType::kF32);
  }
  EXPECT_EQ(hf->config.max_position_embeddings, 512);   // llama2.c's seq_len
  EXPECT_EQ(gg->config.max_position_embeddings, 2048);  // what the GGUF says (see SOURCES.md)
  EXPECT_EQ(hf->tokenizer_path, kHfFolder + "/tokenizer.model");
  EXPECT_EQ(gg->tokenizer_path, "");  // tests/data has no tokenizer.model

  const auto& a = hf->weights.tensors();
  const auto& b = gg->weights.tensors();
  // embed + 5 x (9 + fused qkv_proj and gate_up_proj) + norm; no lm_head (tied)
  EXPECT_EQ(a.size(), 57u);
  std::set<std::string> names_a, names_b;
  for (const auto& [name, t] : a) names_a.insert(name);
  for (const auto& [name, t] : b) names_b.insert(name);
  ASSERT_EQ(names_a, names_b);
  for (const auto& [name, ta] : a) {
    const TensorView& tb = b.at(name);
    SCOPED_TRACE(name);
    ASSERT_EQ(ta.describe(), tb.describe());
    EXPECT_EQ(std::memcmp(ta.data, tb.data, ta.nbytes()), 0);
  }
  // The shapes the forward pass asks for.
  const WeightStore& w = hf->weights;
  EXPECT_TRUE(w.get("model.embed_tokens.weight", {512, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.self_attn.q_proj.weight", {64, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.self_attn.k_proj.weight", {32, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.self_attn.v_proj.weight", {32, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.self_attn.o_proj.weight", {64, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.mlp.gate_proj.weight", {172, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.mlp.up_proj.weight", {172, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.mlp.down_proj.weight", {64, 172}).ok());
  EXPECT_TRUE(w.get("model.layers.4.self_attn.qkv_proj.weight", {128, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.mlp.gate_up_proj.weight", {344, 64}).ok());
  EXPECT_TRUE(w.get("model.norm.weight", {64}).ok());
}

// A minimal valid Hugging Face folder: config + one tiny tensor.
void write_folder(const TempDir& dir, const std::string& extra_config = "") {
  write_file(dir.file("config.json"), R"({"model_type": "llama", "vocab_size": 16,
    "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "max_position_embeddings": 32, "eos_token_id": 2)" +
                                          extra_config + "}");
  const std::vector<float> v(8, 1.0f);
  write_file(dir.file("model.safetensors"),
             safetensors_file({{"model.norm.weight", "F32", {8}, testing::bytes_of(v)}}));
}

void expect_error(const StatusOr<LoadedModel>& m, StatusCode code, const std::string& mention) {
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), code) << m.status().to_string();
  EXPECT_NE(m.status().message().find(mention), std::string::npos) << m.status().to_string();
}

TEST(ModelLoad, HfFolderSpecialIdsAndTokenizer) {
  TempDir dir;
  write_folder(dir);
  auto m = load_model(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->config.bos_token_id, -1);
  EXPECT_EQ(m->config.eos_token_ids, std::vector<int>{2});
  EXPECT_EQ(m->tokenizer_path, "");
  EXPECT_TRUE(m->weights.get("model.norm.weight", {8}).ok());

  // tokenizer_config.json fills what config.json lacks; generation_config.json overrides.
  write_file(dir.file("tokenizer_config.json"), R"({"bos_token": "<s>", "bos_token_id": 1,
      "eos_token_id": 9})");
  write_file(dir.file("generation_config.json"), R"({"eos_token_id": [2, 7]})");
  write_file(dir.file("tokenizer.model"), "x");
  m = load_model(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->config.bos_token_id, 1);
  EXPECT_EQ(m->config.eos_token_ids, (std::vector<int>{2, 7}));
  EXPECT_EQ(m->tokenizer_path, dir.file("tokenizer.model"));

  write_file(dir.file("generation_config.json"), R"({"eos_token_id": [2, 99]})");
  expect_error(load_model(dir.path()), StatusCode::kInvalidArgument, "eos_token_id 99");
  write_file(dir.file("generation_config.json"), R"({"eos_token_id": )");
  expect_error(load_model(dir.path()), StatusCode::kInvalidArgument,
               dir.file("generation_config.json"));
}

TEST(ModelLoad, MissingPiecesAreNotFound) {
  TempDir dir;
  expect_error(load_model(dir.file("absent")), StatusCode::kNotFound, dir.file("absent"));
  expect_error(load_model(dir.path()), StatusCode::kNotFound, dir.file("config.json"));
  write_folder(dir);
  std::filesystem::remove(dir.file("model.safetensors"));
  expect_error(load_model(dir.path()), StatusCode::kNotFound, "model.safetensors");
  // A broken config names the file.
  write_file(dir.file("config.json"), R"({"model_type": "llama"})");
  expect_error(load_model(dir.path()), StatusCode::kInvalidArgument, dir.file("config.json"));
  // A file that is neither GGUF nor a folder.
  write_file(dir.file("weights.bin"), "not a model");
  expect_error(load_model(dir.file("weights.bin")), StatusCode::kInvalidArgument,
               dir.file("weights.bin"));
}

TEST(ModelLoad, ShardedFolder) {
  TempDir dir;
  write_folder(dir);
  std::filesystem::remove(dir.file("model.safetensors"));
  const std::vector<float> v(8, 2.0f);
  write_file(dir.file("model-00001-of-00002.safetensors"),
             safetensors_file({{"model.norm.weight", "F32", {8}, testing::bytes_of(v)}}));
  write_file(
      dir.file("model-00002-of-00002.safetensors"),
      safetensors_file(
          {{"lm_head.weight", "F32", {16, 8}, testing::bytes_of(std::vector<float>(128, 3.0f))}}));
  write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": {
      "model.norm.weight": "model-00001-of-00002.safetensors",
      "lm_head.weight": "model-00002-of-00002.safetensors"}})");
  auto m = load_model(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->weights.tensors().size(), 2u);
  EXPECT_EQ(m->weights.get("lm_head.weight", {16, 8})->as<float>()[127], 3.0f);
}

}  // namespace
}  // namespace pagoda
