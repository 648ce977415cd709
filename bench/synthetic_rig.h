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
// default_threads / default_device: --threads / --device when not given (threads: host threads
// for the CPU backend and for making the random weights).
StatusOr<std::unique_ptr<SyntheticRig>> build_synthetic_rig(
    const Flags& flags, const std::string& default_shape, const std::string& default_dtype,
    int64_t context_needed, const std::string& what, int default_threads = 2,
    const std::string& default_device = "cpu");

// Bytes a decode step streams from memory per token at batch 1: every weight matrix and vector
// once, plus one embedding row (and the whole embedding again when it doubles as the LM head).
double weight_bytes_per_token(const LoadedModel& m);

}  // namespace pagoda
