// SyntheticRig: a synthetic model at a named shape on a backend, as every pagoda-bench mode
// builds it from the same flags (--shape, --dtype, --threads, --device).
#pragma once

#include <memory>
#include <string>

#include "core/flags.h"
#include "kernels/ops.h"
#include "models/llama.h"

namespace pagoda {

struct SyntheticRig {
  std::string shape;
  DType dtype = DType::kF32;
  int threads = 2;
  LoadedModel loaded;  // the weights the model uses in place on the CPU: keep it alive
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
};

// context_needed tokens must fit the shape's context; `what` names the flags that asked for them.
StatusOr<std::unique_ptr<SyntheticRig>> build_synthetic_rig(const Flags& flags,
                                                            const std::string& default_shape,
                                                            const std::string& default_dtype,
                                                            int64_t context_needed,
                                                            const std::string& what);

}  // namespace pagoda
