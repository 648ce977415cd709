// ModelConfig: what the forward pass needs to know about a Llama-family model, read from a
// Hugging Face config.json or from GGUF metadata.
#pragma once

#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace pagoda {

struct RopeScaling {
  enum class Type { kNone, kLlama3 };
  Type type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // model_type: "llama", "mistral" or "qwen2"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // hidden_size / num_heads unless the config says otherwise
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (qwen2)
  int bos_token_id = -1;        // -1: none
  std::vector<int> eos_token_ids;
  DType dtype = DType::kF32;  // torch_dtype / storage dtype of the weights

  // Checks that the numbers make sense together (heads divide, positive sizes, ...).
  Status validate(const std::string& source) const;
};

// Parses a Hugging Face config.json. `source` names the file in error messages.
StatusOr<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& source);

// inv_freq[i] = theta^(-2i / head_dim) for i < head_dim / 2, with llama3 scaling applied when
// configured (as in transformers' _compute_llama3_parameters).
std::vector<float> rope_inv_freq(const ModelConfig& config);

}  // namespace pagoda
