// `pagoda serve`: serves one model over gRPC until SIGTERM/SIGINT, then drains and exits 0.
#pragma once

#include <string>
#include <vector>

namespace pagoda {

// Returns the process exit code: 0 after a clean drain, 2 for bad flags or a model that does
// not load, 1 when the port cannot be bound.
int run_serve(const std::vector<std::string>& args, const std::string& default_model_dir);

}  // namespace pagoda
