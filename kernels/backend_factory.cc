#include "kernels/backend_factory.h"

#include <cstdlib>

#include "kernels/cpu/cpu_backend.h"
#ifdef PAGODA_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace pagoda {

bool built_with_cuda() {
#ifdef PAGODA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

StatusOr<std::unique_ptr<Backend>> make_backend(const std::string& device, int num_threads) {
  if (device == "cpu") return make_cpu_backend(num_threads);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0 || device.rfind("cuda/", 0) == 0) {
    // "cuda[:N][/f32|/bf16]": device index and activation dtype (default bf16).
    std::string spec = device;
    DType activations = DType::kBF16;
    if (const size_t slash = spec.find('/'); slash != std::string::npos) {
      if (!parse_dtype(spec.substr(slash + 1), &activations) ||
          (activations != DType::kF32 && activations != DType::kBF16))
        return InvalidArgument("device '" + device + "': activations must be f32 or bf16");
      spec = spec.substr(0, slash);
    }
    int index = 0;
    if (spec.size() > 5) {
      char* end = nullptr;
      index = static_cast<int>(std::strtol(spec.c_str() + 5, &end, 10));
      if (*end != '\0' || index < 0)
        return InvalidArgument("device '" + device + "': bad device index");
    }
#ifdef PAGODA_WITH_CUDA
    return make_cuda_backend(index, activations);
#else
    (void)activations;
    return FailedPrecondition(
        "device '" + device +
        "': this build has no CUDA backend (configure with PAGODA_CUDA=ON where nvcc exists)");
#endif
  }
  return InvalidArgument("unknown device '" + device +
                         "' (expected cpu, cuda, cuda:N, cuda:N/f32)");
}

}  // namespace pagoda
