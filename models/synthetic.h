// Synthetic models: random weights at the shape of a real model, for speed measurements (which
// do not depend on the values). Weights are small uniform values so activations stay finite.
#pragma once

#include <string>
#include <vector>

#include "models/weights.h"

namespace pagoda {

// Known shapes: "tinyllama-1.1b", "llama3-1b", "llama3-8b", "stories260K".
StatusOr<ModelConfig> synthetic_config(const std::string& shape);
std::vector<std::string> synthetic_shapes();

// Builds every tensor of `config` in `dtype` (f32, f16 or bf16) from a seeded generator.
StatusOr<LoadedModel> make_synthetic_model(const ModelConfig& config, DType dtype, uint64_t seed);

}  // namespace pagoda
