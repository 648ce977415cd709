// parse_hf_config, ModelConfig::validate and rope_inv_freq.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>

#include "models/config.h"

namespace pagoda {
namespace {

constexpr char kSource[] = "/models/x/config.json";

// Llama 3.2 1B's config.json (abridged to the keys pagoda reads plus a few it ignores).
constexpr char kLlama32[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
  "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
  "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": true, "attention_bias": false, "hidden_act": "silu",
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"
})";

std::string llama_with(const std::string& key, const std::string& value) {
  // A small llama config whose `key` is set to the JSON text `value` (or removed when empty).
  std::string json = R"({"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-06)";
  const std::string needle = "\"" + key + "\": ";
  const size_t at = json.find(needle);
  if (at != std::string::npos) {
    const size_t end = json.find_first_of(",}", at);
    if (value.empty()) {
      json.erase(at, end + 1 - at);  // drop `"key": v,`
    } else {
      json.replace(at, end - at, needle + value);
    }
  } else if (!value.empty()) {
    json += ", " + needle + value;
  }
  return json + "}";
}

TEST(ModelConfig, ParsesLlama2WithDefaults) {
  auto c = parse_hf_config(llama_with("", ""), kSource);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->architecture, "llama");
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 11008);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 32);  // defaults to the head count
  EXPECT_EQ(c->head_dim, 128);     // hidden / heads
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->dtype, DType::kF32);
}

TEST(ModelConfig, ParsesLlama3WithScalingAndEosList) {
  auto c = parse_hf_config(kLlama32, kSource);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
  ASSERT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 32.0f);
  EXPECT_FLOAT_EQ(c->rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
}

TEST(ModelConfig, ParsesQwen2WithBias) {
  constexpr char kQwen[] = R"({"model_type": "qwen2", "vocab_size": 151936,
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
    "use_sliding_window": false, "tie_word_embeddings": true, "bos_token_id": 151643,
    "eos_token_id": 151643, "torch_dtype": "bfloat16", "rope_scaling": null})";
  auto c = parse_hf_config(kQwen, kSource);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->architecture, "qwen2");
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_FLOAT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{151643}));
}

TEST(ModelConfig, ParsesMistral) {
  constexpr char kMistral[] = R"({"model_type": "mistral", "vocab_size": 32768,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": null,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "sliding_window": null, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"})";
  auto c = parse_hf_config(kMistral, kSource);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->architecture, "mistral");
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->dtype, DType::kF16);
  EXPECT_EQ(c->bos_token_id, 1);
}

void expect_error(const std::string& json, StatusCode code, const std::string& mention) {
  auto c = parse_hf_config(json, kSource);
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), code) << c.status().to_string();
  EXPECT_NE(c.status().message().find(kSource), std::string::npos) << c.status().to_string();
  EXPECT_NE(c.status().message().find(mention), std::string::npos) << c.status().to_string();
}

TEST(ModelConfig, WrongTypesNameFileAndKey) {
  expect_error(llama_with("hidden_size", "\"4096\""), StatusCode::kInvalidArgument, "hidden_size");
  expect_error(llama_with("num_hidden_layers", "32.5"), StatusCode::kInvalidArgument,
               "num_hidden_layers");
  expect_error(llama_with("rms_norm_eps", "\"small\""), StatusCode::kInvalidArgument,
               "rms_norm_eps");
  expect_error(llama_with("tie_word_embeddings", "1"), StatusCode::kInvalidArgument,
               "tie_word_embeddings");
  expect_error(llama_with("eos_token_id", "[2, \"x\"]"), StatusCode::kInvalidArgument,
               "eos_token_id");
  expect_error(llama_with("vocab_size", "99999999999"), StatusCode::kInvalidArgument, "vocab_size");
  expect_error(llama_with("torch_dtype", "\"float64\""), StatusCode::kInvalidArgument, "float64");
}

TEST(ModelConfig, MissingKeysNameFileAndKey) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "max_position_embeddings"}) {
    expect_error(llama_with(key, ""), StatusCode::kInvalidArgument, key);
  }
  expect_error(R"({"vocab_size": 3})", StatusCode::kInvalidArgument, "model_type");
}

TEST(ModelConfig, UnsupportedArchitectureAndRope) {
  expect_error(llama_with("model_type", "\"gpt2\""), StatusCode::kUnimplemented, "gpt2");
  expect_error(llama_with("rope_scaling", R"({"rope_type": "yarn", "factor": 4.0})"),
               StatusCode::kUnimplemented, "yarn");
  expect_error(llama_with("rope_scaling", R"({"type": "linear", "factor": 2.0})"),
               StatusCode::kUnimplemented, "linear");
  expect_error(llama_with("attention_bias", "true"), StatusCode::kUnimplemented, "attention_bias");
  expect_error(llama_with("rope_scaling", R"({"rope_type": "llama3", "factor": 8.0})"),
               StatusCode::kInvalidArgument, "low_freq_factor");
}

TEST(ModelConfig, InvalidJsonAndBadNumbers) {
  expect_error("{\"model_type\": \"llama\",", StatusCode::kInvalidArgument, "invalid JSON");
  expect_error("[1, 2]", StatusCode::kInvalidArgument, "object");
  expect_error(llama_with("num_key_value_heads", "5"), StatusCode::kInvalidArgument,
               "num_key_value_heads");
  expect_error(llama_with("num_attention_heads", "0"), StatusCode::kInvalidArgument,
               "num_attention_heads");
  expect_error(llama_with("eos_token_id", "32000"), StatusCode::kInvalidArgument, "eos_token_id");
}

TEST(ModelConfig, RopeInvFreqDefault) {
  ModelConfig c;
  c.head_dim = 8;
  c.rope_theta = 10000.0f;
  const std::vector<float> f = rope_inv_freq(c);
  ASSERT_EQ(f.size(), 4u);
  // 10000^(-2i/8): 1, 0.1, 0.01, 0.001
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_FLOAT_EQ(f[1], 0.1f);
  EXPECT_FLOAT_EQ(f[2], 0.01f);
  EXPECT_FLOAT_EQ(f[3], 0.001f);
}

TEST(ModelConfig, RopeInvFreqLlama3MatchesHandComputation) {
  auto c = parse_hf_config(kLlama32, kSource);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  const std::vector<float> f = rope_inv_freq(*c);
  ASSERT_EQ(f.size(), 32u);
  // transformers' _compute_llama3_parameters written the torch.where way, in double:
  // wavelen > 8192/1 -> inv/32; wavelen < 8192/4 -> inv; otherwise
  // (1 - s) * inv / 32 + s * inv with s = (8192 / wavelen - 1) / (4 - 1).
  for (int i = 0; i < 32; ++i) {
    const double inv = 1.0 / std::pow(500000.0, (2.0 * i) / 64.0);
    const double wavelen = 2.0 * std::numbers::pi / inv;
    const double scaled = wavelen > 8192.0 ? inv / 32.0 : inv;
    const double s = (8192.0 / wavelen - 1.0) / 3.0;
    const double smoothed = (1.0 - s) * scaled / 32.0 + s * scaled;
    const bool medium = !(wavelen < 2048.0) && !(wavelen > 8192.0);
    const double want = medium ? smoothed : scaled;
    EXPECT_EQ(f[i], static_cast<float>(want)) << "i = " << i;
  }
  // By hand: i = 0 keeps 1; i = 16 has inv = 1/sqrt(500000) = 1.41421356e-3, wavelen 4442.88,
  // s = (8192/4442.88 - 1)/3 = 0.281285, so inv * (0.718715/32 + 0.281285) = 4.29557e-4;
  // i = 31 is a low frequency: 500000^(-62/64) / 32 = 9.41831e-8.
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_NEAR(f[16], 4.29557e-4f, 1e-9f);
  EXPECT_NEAR(f[31], 9.41831e-8f, 1e-12f);
  EXPECT_NEAR(f[5], std::pow(500000.0, -10.0 / 64.0), 1e-7);  // high frequency: untouched
}

}  // namespace
}  // namespace pagoda
