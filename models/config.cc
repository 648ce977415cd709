// config.json -> ModelConfig, ModelConfig::validate, and the RoPE inverse frequencies.
#include "models/config.h"

#include <cmath>
#include <numbers>

#include "models/loaders/json_util.h"

namespace pagoda {

using json_util::Json;
using json_util::Need;

namespace {

Status parse_rope_scaling(const Json& root, const std::string& source, RopeScaling* out) {
  auto it = root.find("rope_scaling");
  if (it == root.end() || it->is_null()) return OkStatus();
  if (!it->is_object()) {
    return InvalidArgument(source + ": key 'rope_scaling' must be an object or null, got " +
                           std::string(it->type_name()));
  }
  const Json& rs = *it;
  std::string type;
  PAGODA_RETURN_IF_ERROR(json_util::read_string(rs, "rope_type", source, Need::kOptional, &type));
  if (type.empty()) {
    PAGODA_RETURN_IF_ERROR(json_util::read_string(rs, "type", source, Need::kOptional, &type));
  }
  if (type.empty() || type == "default") return OkStatus();
  if (type != "llama3") {
    return Unimplemented(source + ": rope_scaling type '" + type +
                         "' is not supported (pagoda supports 'llama3')");
  }
  RopeScaling s;
  s.type = RopeScaling::Type::kLlama3;
  const std::string where = source + " (rope_scaling)";
  PAGODA_RETURN_IF_ERROR(json_util::read_float(rs, "factor", where, Need::kRequired, &s.factor));
  PAGODA_RETURN_IF_ERROR(
      json_util::read_float(rs, "low_freq_factor", where, Need::kRequired, &s.low_freq_factor));
  PAGODA_RETURN_IF_ERROR(
      json_util::read_float(rs, "high_freq_factor", where, Need::kRequired, &s.high_freq_factor));
  PAGODA_RETURN_IF_ERROR(json_util::read_int(rs, "original_max_position_embeddings", where,
                                             Need::kRequired, &s.original_max_position_embeddings));
  *out = s;
  return OkStatus();
}

}  // namespace

StatusOr<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& source) {
  PAGODA_ASSIGN_OR_RETURN(Json root, json_util::parse_object(json_text, source));
  ModelConfig c;
  PAGODA_RETURN_IF_ERROR(
      json_util::read_string(root, "model_type", source, Need::kRequired, &c.architecture));
  if (c.architecture != "llama" && c.architecture != "mistral" && c.architecture != "qwen2") {
    return Unimplemented(source + ": model_type '" + c.architecture +
                         "' is not supported (pagoda supports llama, mistral, qwen2)");
  }
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "vocab_size", source, Need::kRequired, &c.vocab_size));
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "hidden_size", source, Need::kRequired, &c.hidden_size));
  PAGODA_RETURN_IF_ERROR(json_util::read_int(root, "intermediate_size", source, Need::kRequired,
                                             &c.intermediate_size));
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "num_hidden_layers", source, Need::kRequired, &c.num_layers));
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "num_attention_heads", source, Need::kRequired, &c.num_heads));
  c.num_kv_heads = c.num_heads;
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "num_key_value_heads", source, Need::kOptional, &c.num_kv_heads));
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "head_dim", source, Need::kOptional, &c.head_dim));
  PAGODA_RETURN_IF_ERROR(json_util::read_int(root, "max_position_embeddings", source,
                                             Need::kRequired, &c.max_position_embeddings));
  c.rms_norm_eps = 1e-6f;  // transformers' default for llama, mistral and qwen2
  PAGODA_RETURN_IF_ERROR(
      json_util::read_float(root, "rms_norm_eps", source, Need::kOptional, &c.rms_norm_eps));
  c.rope_theta = 10000.0f;
  PAGODA_RETURN_IF_ERROR(
      json_util::read_float(root, "rope_theta", source, Need::kOptional, &c.rope_theta));
  PAGODA_RETURN_IF_ERROR(parse_rope_scaling(root, source, &c.rope_scaling));
  PAGODA_RETURN_IF_ERROR(json_util::read_bool(root, "tie_word_embeddings", source, Need::kOptional,
                                              &c.tie_word_embeddings));
  if (c.architecture == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases (and none on o_proj)
  } else {
    bool bias = false;
    PAGODA_RETURN_IF_ERROR(
        json_util::read_bool(root, "attention_bias", source, Need::kOptional, &bias));
    if (bias) {
      // transformers' LlamaAttention then also has an o_proj bias, which pagoda does not model.
      return Unimplemented(source + ": attention_bias = true is not supported for model_type '" +
                           c.architecture + "'");
    }
  }
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "bos_token_id", source, Need::kOptional, &c.bos_token_id));
  PAGODA_RETURN_IF_ERROR(json_util::read_token_ids(root, "eos_token_id", source, &c.eos_token_ids));
  std::string dtype;
  PAGODA_RETURN_IF_ERROR(
      json_util::read_string(root, "torch_dtype", source, Need::kOptional, &dtype));
  if (dtype.empty()) {  // newer transformers write "dtype"
    PAGODA_RETURN_IF_ERROR(json_util::read_string(root, "dtype", source, Need::kOptional, &dtype));
  }
  if (!dtype.empty() && !parse_dtype(dtype, &c.dtype)) {
    return InvalidArgument(source + ": torch_dtype '" + dtype +
                           "' is not supported (float32, float16, bfloat16)");
  }
  PAGODA_RETURN_IF_ERROR(c.validate(source));
  return c;
}

Status ModelConfig::validate(const std::string& source) const {
  auto bad = [&](const std::string& what) { return InvalidArgument(source + ": " + what); };
  auto positive = [&](const char* name, int v) -> Status {
    if (v <= 0) return bad(std::string(name) + " must be positive, got " + std::to_string(v));
    return OkStatus();
  };
  PAGODA_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  PAGODA_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  PAGODA_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size));
  PAGODA_RETURN_IF_ERROR(positive("num_hidden_layers", num_layers));
  PAGODA_RETURN_IF_ERROR(positive("num_attention_heads", num_heads));
  PAGODA_RETURN_IF_ERROR(positive("num_key_value_heads", num_kv_heads));
  PAGODA_RETURN_IF_ERROR(positive("head_dim", head_dim));
  PAGODA_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  if (num_heads % num_kv_heads != 0) {
    return bad("num_attention_heads (" + std::to_string(num_heads) +
               ") is not a multiple of num_key_value_heads (" + std::to_string(num_kv_heads) + ")");
  }
  if (head_dim % 2 != 0)
    return bad("head_dim must be even for RoPE, got " + std::to_string(head_dim));
  if (!(rms_norm_eps > 0.0f) || !std::isfinite(rms_norm_eps)) {
    return bad("rms_norm_eps must be positive, got " + std::to_string(rms_norm_eps));
  }
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) {
    return bad("rope_theta must be positive, got " + std::to_string(rope_theta));
  }
  if (rope_scaling.type == RopeScaling::Type::kLlama3) {
    const RopeScaling& s = rope_scaling;
    if (!(s.factor > 0.0f)) return bad("rope_scaling.factor must be positive");
    if (!(s.low_freq_factor > 0.0f) || !(s.high_freq_factor > s.low_freq_factor)) {
      return bad("rope_scaling needs 0 < low_freq_factor < high_freq_factor");
    }
    if (s.original_max_position_embeddings <= 0) {
      return bad("rope_scaling.original_max_position_embeddings must be positive");
    }
  }
  if (bos_token_id < -1 || bos_token_id >= vocab_size) {
    return bad("bos_token_id " + std::to_string(bos_token_id) + " is outside the vocabulary (" +
               std::to_string(vocab_size) + ")");
  }
  for (int id : eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return bad("eos_token_id " + std::to_string(id) + " is outside the vocabulary (" +
                 std::to_string(vocab_size) + ")");
    }
  }
  if (dtype == DType::kI32) return bad("weights cannot have dtype i32");
  return OkStatus();
}

std::vector<float> rope_inv_freq(const ModelConfig& config) {
  const int half = config.head_dim / 2;
  std::vector<float> out(half);
  const double theta = config.rope_theta;
  const RopeScaling& s = config.rope_scaling;
  // Mirrors transformers' _compute_default_rope_parameters / _compute_llama3_parameters.
  const double factor = s.factor;
  const double low = s.low_freq_factor;
  const double high = s.high_freq_factor;
  const double old_ctx = s.original_max_position_embeddings;
  const double low_freq_wavelen = old_ctx / low;
  const double high_freq_wavelen = old_ctx / high;
  for (int i = 0; i < half; ++i) {
    const double inv = 1.0 / std::pow(theta, static_cast<double>(2 * i) / config.head_dim);
    double v = inv;
    if (s.type == RopeScaling::Type::kLlama3) {
      const double wavelen = 2.0 * std::numbers::pi / inv;
      if (wavelen > low_freq_wavelen) {
        v = inv / factor;  // low frequencies: fully scaled
      } else if (wavelen < high_freq_wavelen) {
        v = inv;  // high frequencies: untouched
      } else {    // in between: smooth interpolation
        const double smooth = (old_ctx / wavelen - low) / (high - low);
        v = (1.0 - smooth) * inv / factor + smooth * inv;
      }
    }
    out[i] = static_cast<float>(v);
  }
  return out;
}

}  // namespace pagoda
