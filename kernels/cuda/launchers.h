// launchers.h: host entry points of the CUDA kernels, one per op family (<op>.cu defines
// <op>_cuda). Each validates its Args (dtypes, shapes, device == kCuda) before touching the
// device, returns InvalidArgument naming the op and the argument on bad input, queues the work
// on `stream` and checks the launch. Internal to kernels/cuda/ (CudaBackend calls these).
#pragma once

#include "core/status.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace pagoda::cuda {

// RmsNormArgs on the device: activations f32 or bf16, weight f32/f16/bf16, f32 math.
Status rms_norm_cuda(const RmsNormArgs& a, cudaStream_t stream);

}  // namespace pagoda::cuda
