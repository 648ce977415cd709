// A Hugging Face model folder: config.json, model.safetensors or model.safetensors.index.json
// with its shards, optionally tokenizer.model, generation_config.json, tokenizer_config.json.
#pragma once

#include <string>

#include "core/status.h"
#include "models/weights.h"

namespace pagoda {

// Loads the folder. Special token ids: config.json first, then tokenizer_config.json fills ids
// config.json lacks, then generation_config.json overrides (its eos may be a list).
// NotFound names the folder or the file that is missing.
StatusOr<LoadedModel> load_hf_folder(const std::string& dir);

}  // namespace pagoda
