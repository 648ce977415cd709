// cuda_backend.h: the CUDA Backend's public face. Includes no CUDA header, so engine/, models/
// and tools may include it; the code behind it lives in pagoda_kernels_cuda, which exists only
// when the build has CUDA (it defines PAGODA_WITH_CUDA=1 for everything that links it).
#pragma once

#include <memory>

#include "core/status.h"
#include "kernels/ops.h"

namespace pagoda {

// True when the CUDA runtime sees at least one usable device. Never fails: no driver, no
// device or any runtime error gives false.
bool cuda_device_available();

// A Backend running on CUDA device `device_index` (activations bf16 by default, or f32 — the
// dtype the stories260K reference needs — with f32 accumulation either way) with its own stream. No
// device or no driver → FailedPrecondition "no CUDA device: ..."; an index out of range →
// InvalidArgument. Not thread-safe: one caller thread at a time (any thread; each call makes its
// device current).
StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device_index = 0,
                                                     DType activations = DType::kBF16);

}  // namespace pagoda
