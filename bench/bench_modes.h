// The modes of pagoda-bench, one function each.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace pagoda {

Status run_model_bench(const std::vector<std::string>& args);
Status run_offline_bench(const std::vector<std::string>& args);
// GPU speed (decode/prefill against the card's measured ceilings); in builds without CUDA it
// fails with "this build has no CUDA" after checking its flags.
Status run_device_bench(const std::vector<std::string>& args);
// Only in builds with the server (PAGODA_SERVER).
Status run_serve_overhead_bench(const std::vector<std::string>& args);

}  // namespace pagoda
