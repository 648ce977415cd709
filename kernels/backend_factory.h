// make_backend: the one place above kernels/ that turns a device name into a Backend.
#pragma once

#include <memory>
#include <string>

#include "kernels/ops.h"

namespace pagoda {

// device: "cpu", or "cuda[:N][/f32|/bf16]" (device index, activation dtype; default bf16).
// num_threads applies to the CPU (<= 0: all cores). A CUDA request in a build without CUDA, or on a
// machine without a device, is a clear error.
StatusOr<std::unique_ptr<Backend>> make_backend(const std::string& device, int num_threads);

// True when this build includes the CUDA backend.
bool built_with_cuda();

}  // namespace pagoda
