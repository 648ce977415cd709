// Fake cuBLASLt header for the host emulator: kernels/cuda/cuda_check.h names these to turn a
// cublasStatus_t into a Status; no emulated kernel calls cuBLASLt.
#pragma once
typedef enum {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_ARCH_MISMATCH = 8,
  CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
inline const char* cublasLtGetStatusName(cublasStatus_t) {
  return "emu";
}
inline const char* cublasLtGetStatusString(cublasStatus_t) {
  return "emu";
}
