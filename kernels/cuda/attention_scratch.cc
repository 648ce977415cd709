// attention_scratch.cc: the split-K partials' scratch of the CUDA attention (attention.cu),
// host side only.
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

// The split CTAs' partials live in one kAttentionScratchBytes buffer per (device, stream),
// allocated on the first launch that wants it and kept until the stream's backend goes
// (attention_release_scratch), as matmul.cu keeps its cuBLASLt workspace: later steps allocate
// nothing, and a CUDA graph captured later may hold its address (it never moves while the
// backend lives). Launches on one stream are ordered, so they may share it.
struct ScratchState {
  std::mutex mu;
  std::map<std::pair<int, cudaStream_t>, float*> buffers;  // null: cudaMalloc ran out of memory
};

// Process-wide; intentionally leaked (never destroyed) so that no CUDA call runs during static
// destruction.
ScratchState& scratch_state() {
  static ScratchState* s = new ScratchState();
  return *s;
}

}  // namespace

StatusOr<float*> attention_split_scratch(cudaStream_t stream) {
  int device = -1;
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  ScratchState& s = scratch_state();
  std::lock_guard<std::mutex> lock(s.mu);
  const auto key = std::make_pair(device, stream);
  if (const auto it = s.buffers.find(key); it != s.buffers.end()) return it->second;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  PAGODA_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return static_cast<float*>(nullptr);
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, kAttentionScratchBytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it: the launch's cudaGetLastError() check must not see it
    ptr = nullptr;
  } else {
    PAGODA_CUDA_RETURN_IF_ERROR(err);
  }
  s.buffers.emplace(key, static_cast<float*>(ptr));
  return static_cast<float*>(ptr);
}

void attention_release_scratch(cudaStream_t stream) {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) return;
  ScratchState& s = scratch_state();
  std::lock_guard<std::mutex> lock(s.mu);
  const auto it = s.buffers.find({device, stream});
  if (it == s.buffers.end()) return;
  if (it->second != nullptr) (void)cudaFree(it->second);
  s.buffers.erase(it);
}

Status attention_reserve_scratch(cudaStream_t stream) {
  return attention_split_scratch(stream).status();
}

}  // namespace pagoda::cuda
