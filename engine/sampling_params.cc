#include "engine/sampling_params.h"

#include <cmath>
#include <sstream>
#include <string>

namespace pagoda {
namespace {

template <typename T>
Status out_of_range(const char* field, const T& value, const char* expected) {
  std::ostringstream os;
  os << "sampling parameter " << field << " must be " << expected << ", got " << value;
  return InvalidArgument(os.str());
}

}  // namespace

Status SamplingParams::validate() const {
  // Comparisons are written so that NaN fails them.
  if (!(std::isfinite(temperature) && temperature >= 0.0f)) {
    return out_of_range("temperature", temperature, "finite and >= 0 (0 means greedy)");
  }
  if (top_k < 0) return out_of_range("top_k", top_k, ">= 0 (0 means off)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return out_of_range("top_p", top_p, "in (0, 1] (1 means off)");
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return out_of_range("min_p", min_p, "in [0, 1] (0 means off)");
  }
  if (!(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f)) {
    return out_of_range("repetition_penalty", repetition_penalty, "finite and > 0 (1 means off)");
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return out_of_range("presence_penalty", presence_penalty, "in [-2, 2]");
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return out_of_range("frequency_penalty", frequency_penalty, "in [-2, 2]");
  }
  if (max_tokens < 1) return out_of_range("max_tokens", max_tokens, ">= 1");
  if (!(logprobs >= 0 && logprobs <= kMaxLogprobs)) {
    return out_of_range("logprobs", logprobs, "in [0, 20] (0 means none)");
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0) {
      const std::string field = "stop_token_ids[" + std::to_string(i) + "]";
      return out_of_range(field.c_str(), stop_token_ids[i], ">= 0");
    }
  }
  return OkStatus();
}

}  // namespace pagoda
