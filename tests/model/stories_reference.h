// llama2.c's greedy generations of stories260K (tests/data/stories260K_greedy.json, made by
// run.c: an independent implementation) and the sampling parameters that reproduce them.
// Shared by the CPU (tests/model) and GPU (tests/cuda) reference tests.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/sampling_params.h"

namespace pagoda::testing_reference {

struct ReferenceCase {
  std::string prompt;
  int steps = 0;
  std::vector<int> prompt_ids, generated_ids;
};

inline std::vector<ReferenceCase> load_stories_reference() {
  std::ifstream in(std::string(PAGODA_SOURCE_DIR) + "/tests/data/stories260K_greedy.json");
  const auto j = nlohmann::json::parse(in);
  std::vector<ReferenceCase> cases;
  for (const auto& c : j.at("cases")) {
    cases.push_back({c.at("prompt").get<std::string>(), c.at("steps").get<int>(),
                     c.at("prompt_ids").get<std::vector<int>>(),
                     c.at("generated_ids").get<std::vector<int>>()});
  }
  return cases;
}

// run.c computes positions 0..steps-1 and stops early when it samples BOS (1).
inline SamplingParams reference_params(const ReferenceCase& c) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.ignore_eos = true;
  p.stop_token_ids = {1};
  p.max_tokens = c.steps - static_cast<int>(c.prompt_ids.size()) + 1;
  return p;
}

}  // namespace pagoda::testing_reference
