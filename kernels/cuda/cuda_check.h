// cuda_check.h: turns cudaError_t / cublasStatus_t into pagoda::Status with file:line, the
// failing expression and the library's own error name and text. This is the one header in
// kernels/cuda/ that includes CUDA headers for host code; headers seen outside kernels/cuda/
// (cuda_backend.h) must never include it.
//
//   PAGODA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));    // returns a Status on failure
//   PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(...));
//   Status s = PAGODA_CUDA_STATUS(cudaStreamSynchronize(stream));
//
// Code mapping: out of memory → ResourceExhausted; no device / no or old driver / bad device
// index → FailedPrecondition; invalid value → InvalidArgument; not supported → Unimplemented;
// everything else → Internal.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string>

#include "core/status.h"

namespace pagoda::cuda {

inline StatusCode status_code_for(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return StatusCode::kOk;
    case cudaErrorMemoryAllocation: return StatusCode::kResourceExhausted;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice: return StatusCode::kFailedPrecondition;
    case cudaErrorInvalidValue: return StatusCode::kInvalidArgument;
    case cudaErrorNotSupported: return StatusCode::kUnimplemented;
    default: return StatusCode::kInternal;
  }
}

inline StatusCode status_code_for(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_SUCCESS: return StatusCode::kOk;
    case CUBLAS_STATUS_ALLOC_FAILED: return StatusCode::kResourceExhausted;
    case CUBLAS_STATUS_NOT_INITIALIZED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return StatusCode::kFailedPrecondition;
    case CUBLAS_STATUS_INVALID_VALUE: return StatusCode::kInvalidArgument;
    case CUBLAS_STATUS_NOT_SUPPORTED: return StatusCode::kUnimplemented;
    default: return StatusCode::kInternal;
  }
}

// "kernels/cuda/rms_norm.cu:120: cudaGetLastError(): cudaErrorInvalidConfiguration (invalid
// configuration argument)". OK when err is cudaSuccess.
// The error is also cleared from the thread's last-error state (a sticky error stays anyway):
// handed back here, it must not resurface in the next launch's cudaGetLastError() check as
// that op's failure (e.g. after a failed graph capture, whose step then runs eagerly).
inline Status cuda_status(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return OkStatus();
  (void)cudaGetLastError();
  return Status(status_code_for(err), std::string(file) + ":" + std::to_string(line) + ": " + expr +
                                          ": " + cudaGetErrorName(err) + " (" +
                                          cudaGetErrorString(err) + ")");
}

inline Status cublas_status(cublasStatus_t st, const char* expr, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return OkStatus();
  return Status(status_code_for(st), std::string(file) + ":" + std::to_string(line) + ": " + expr +
                                         ": " + cublasLtGetStatusName(st) + " (" +
                                         cublasLtGetStatusString(st) + ")");
}

}  // namespace pagoda::cuda

#define PAGODA_CUDA_STATUS(expr) ::pagoda::cuda::cuda_status((expr), #expr, __FILE__, __LINE__)
#define PAGODA_CUBLAS_STATUS(expr) ::pagoda::cuda::cublas_status((expr), #expr, __FILE__, __LINE__)

#define PAGODA_CUDA_RETURN_IF_ERROR(expr)                                              \
  do {                                                                                 \
    const cudaError_t pagoda_cuda_err_ = (expr);                                       \
    if (pagoda_cuda_err_ != cudaSuccess)                                               \
      return ::pagoda::cuda::cuda_status(pagoda_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define PAGODA_CUBLAS_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                    \
    const cublasStatus_t pagoda_cublas_st_ = (expr);                                      \
    if (pagoda_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                       \
      return ::pagoda::cuda::cublas_status(pagoda_cublas_st_, #expr, __FILE__, __LINE__); \
  } while (0)
