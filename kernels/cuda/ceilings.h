// ceilings.h: what the card itself can do, measured in the same run as a benchmark so that the
// benchmark's numbers can be read as fractions of it (memory-bandwidth roofline, model FLOP
// utilisation). Includes no CUDA header, so bench/ and tools may include it; the code behind it
// (ceilings.cu) lives in pagoda_kernels_cuda and exists only when the build has CUDA
// (PAGODA_WITH_CUDA).
//
// Errors follow the backend's contract (kernels/cuda/README.md): no device or no driver →
// FailedPrecondition "no CUDA device: ..."; a device index out of range → InvalidArgument; not
// enough device memory → ResourceExhausted; any other CUDA/cuBLAS error → Internal.
#pragma once

#include <cstddef>
#include <string>

#include "core/status.h"

namespace pagoda {

// The card's name as the driver reports it, e.g. "NVIDIA H100 80GB HBM3".
StatusOr<std::string> cuda_device_name(int device);

// Device-to-device copy bandwidth in GB/s (1e9 bytes/s): cudaMemcpyAsync of one `bytes`-sized
// buffer into another on a private stream, timed with CUDA events; the best of several repeats
// after one untimed warm-up. Counts read + write traffic (2 * bytes per copy), the convention
// under which the number is comparable to the card's HBM bandwidth. Needs 2 * bytes of free
// device memory; bytes must be at least 1 MiB.
StatusOr<double> cuda_copy_bandwidth_gbs(int device, size_t bytes);

// Dense GEMM throughput in TFLOP/s (1e12 FLOP/s, 2*m*n*k FLOP per product) through cuBLASLt:
// out[m, n] bf16 = x[m, k] bf16 · w[n, k]^T bf16 (the layout of the model's matmuls), f32
// accumulation (CUBLAS_COMPUTE_32F), inputs filled with random values (zeros would draw less
// power and clock higher). Each of the heuristic's top algorithms is timed over several runs
// after a warm-up; the best is returned. Needs 2*(m*k + n*k + m*n) bytes of device memory plus a
// 32 MiB workspace. m, n, k must be in [1, 65536].
StatusOr<double> cuda_bf16_gemm_tflops(int device, int m, int n, int k);

}  // namespace pagoda
