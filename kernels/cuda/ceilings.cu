// ceilings.cu: the card's own ceilings (copy bandwidth, bf16 GEMM throughput), measured in the
// benchmark's run so that its numbers are fractions of what this card does today (clocks, ECC,
// driver) rather than of a datasheet. See ceilings.h for the conventions.
//
// Both measurements run on a private stream with temporary buffers from DeviceAllocator (freed
// on every path, errors as Status), and time with CUDA events, which measure the device's own
// time without host launch gaps in the copy case and with back-to-back launches for GEMMs.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/ceilings.h"
#include "kernels/cuda/device.h"

namespace pagoda {
namespace {

constexpr size_t kMinCopyBytes = size_t{1} << 20;
constexpr int kCopyRepeats = 10;  // each timed alone; the best one counts
constexpr size_t kGemmWorkspaceBytes = 32u << 20;
constexpr int kGemmAlgos = 4;  // heuristic candidates tried
constexpr int kGemmRuns = 10;  // back-to-back runs per timing, after 2 untimed ones

// p[i] = uniform in [-1, 1), from a hash of (i, seed): cheap, and not zeros (tensor cores draw
// less power on zeros, which lets the clock rise and would overstate the ceiling).
__global__ void fill_random_bf16_kernel(__nv_bfloat16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) ^ (static_cast<uint32_t>(i >> 32) * 0x9e3779b9u) ^ seed;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    const float u = static_cast<float>(h >> 8) * 0x1p-24f;
    p[i] = __float2bfloat16_rn(2.0f * u - 1.0f);
  }
}

Status fill_random_bf16(void* p, size_t n, uint32_t seed, cudaStream_t stream) {
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((n + threads - 1) / threads, 4096));
  fill_random_bf16_kernel<<<blocks, threads, 0, stream>>>(static_cast<__nv_bfloat16*>(p), n, seed);
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

// Owning pair of CUDA events bracketing work on one stream.
class EventPair {
 public:
  EventPair() = default;
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  ~EventPair() {
    if (start_) (void)cudaEventDestroy(start_);
    if (stop_) (void)cudaEventDestroy(stop_);
  }
  Status create() {
    PAGODA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start_));
    PAGODA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop_));
    return OkStatus();
  }
  Status start(cudaStream_t s) { return PAGODA_CUDA_STATUS(cudaEventRecord(start_, s)); }
  // Records the stop event, waits for it and returns the milliseconds since start().
  StatusOr<float> stop_ms(cudaStream_t s) {
    PAGODA_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop_, s));
    PAGODA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop_));
    float ms = 0;
    PAGODA_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

// cuBLASLt objects of one GEMM problem, destroyed on every path.
struct LtProblem {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtProblem() = default;
  LtProblem(const LtProblem&) = delete;
  LtProblem& operator=(const LtProblem&) = delete;
  ~LtProblem() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (handle) cublasLtDestroy(handle);
  }
};

// Checks the device (clear errors for no device / a bad index), makes it current for the
// caller's scope and gives a private stream on it.
Status open_device(int device, cuda::Stream* stream) {
  PAGODA_RETURN_IF_ERROR(cuda::device_info(device).status());
  PAGODA_ASSIGN_OR_RETURN(*stream, cuda::Stream::create(device));
  return OkStatus();
}

}  // namespace

StatusOr<std::string> cuda_device_name(int device) {
  PAGODA_ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::device_info(device));
  return info.name;
}

StatusOr<double> cuda_copy_bandwidth_gbs(int device, size_t bytes) {
  if (bytes < kMinCopyBytes) {
    return InvalidArgument("cuda copy bandwidth: need at least 1 MiB to time, got " +
                           std::to_string(bytes) + " bytes");
  }
  cuda::Stream stream;
  PAGODA_RETURN_IF_ERROR(open_device(device, &stream));
  cuda::ScopedDevice scoped(device);
  PAGODA_RETURN_IF_ERROR(scoped.status());
  cuda::DeviceAllocator allocator(device);
  // Zeroed on the stream by the allocator, which also maps every page before the timing.
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer src, allocator.allocate(bytes, stream.get()));
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer dst, allocator.allocate(bytes, stream.get()));
  EventPair events;
  PAGODA_RETURN_IF_ERROR(events.create());
  float best_ms = 0;
  for (int r = -1; r < kCopyRepeats; ++r) {  // r == -1: untimed warm-up
    PAGODA_RETURN_IF_ERROR(events.start(stream.get()));
    PAGODA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream.get()));
    PAGODA_ASSIGN_OR_RETURN(const float ms, events.stop_ms(stream.get()));
    if (r >= 0 && (best_ms == 0 || ms < best_ms)) best_ms = ms;
  }
  if (best_ms <= 0) return Internal("cuda copy bandwidth: the copy took no measurable time");
  return 2.0 * static_cast<double>(bytes) / (best_ms * 1e-3) / 1e9;
}

StatusOr<double> cuda_bf16_gemm_tflops(int device, int m, int n, int k) {
  constexpr int kMaxDim = 65536;
  if (m < 1 || n < 1 || k < 1 || m > kMaxDim || n > kMaxDim || k > kMaxDim) {
    return InvalidArgument("cuda bf16 gemm: m, n, k must be in [1, 65536], got " +
                           std::to_string(m) + ", " + std::to_string(n) + ", " + std::to_string(k));
  }
  cuda::Stream stream;
  PAGODA_RETURN_IF_ERROR(open_device(device, &stream));
  cuda::ScopedDevice scoped(device);
  PAGODA_RETURN_IF_ERROR(scoped.status());
  cudaStream_t s = stream.get();
  const size_t bf16 = sizeof(__nv_bfloat16);
  const size_t x_elems = size_t{1} * m * k, w_elems = size_t{1} * n * k;
  cuda::DeviceAllocator allocator(device);
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer x, allocator.allocate(x_elems * bf16, s));  // [m, k]
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer w, allocator.allocate(w_elems * bf16, s));  // [n, k]
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer out, allocator.allocate(size_t{1} * m * n * bf16, s));
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer workspace, allocator.allocate(kGemmWorkspaceBytes, s));
  PAGODA_RETURN_IF_ERROR(fill_random_bf16(x.data(), x_elems, 1, s));
  PAGODA_RETURN_IF_ERROR(fill_random_bf16(w.data(), w_elems, 2, s));

  // Row-major out[m, n] = x · w^T is, column-major, out^T [n, m] = op_T(w as [k, n]) · (x as
  // [k, m]): the same transposition matmul.cu uses for the model's weights.
  LtProblem p;
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&p.handle));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                               &trans_a, sizeof(trans_a)));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                               &trans_b, sizeof(trans_b)));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, n, k));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, m, k));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.d, CUDA_R_16BF, n, m, n));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&p.pref));
  const uint64_t ws_bytes = kGemmWorkspaceBytes;
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      p.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
  cublasLtMatmulHeuristicResult_t results[kGemmAlgos] = {};
  int n_results = 0;
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(
      p.handle, p.desc, p.a, p.b, p.d, p.d, p.pref, kGemmAlgos, results, &n_results));
  if (n_results == 0) {
    return Unimplemented("cuda bf16 gemm: cuBLASLt offers no algorithm for " + std::to_string(m) +
                         "x" + std::to_string(n) + "x" + std::to_string(k));
  }

  const float alpha = 1.0f, beta = 0.0f;
  const auto gemm = [&](const cublasLtMatmulAlgo_t& algo) {
    return PAGODA_CUBLAS_STATUS(cublasLtMatmul(p.handle, p.desc, &alpha, w.data(), p.a, x.data(),
                                               p.b, &beta, out.data(), p.d, out.data(), p.d, &algo,
                                               workspace.data(), kGemmWorkspaceBytes, s));
  };
  EventPair events;
  PAGODA_RETURN_IF_ERROR(events.create());
  double best_ms = 0;
  for (int i = 0; i < n_results; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    // Warm-up: the first runs of an algorithm pay for its kernel's loading.
    PAGODA_RETURN_IF_ERROR(gemm(results[i].algo));
    PAGODA_RETURN_IF_ERROR(gemm(results[i].algo));
    PAGODA_RETURN_IF_ERROR(events.start(s));
    for (int r = 0; r < kGemmRuns; ++r) PAGODA_RETURN_IF_ERROR(gemm(results[i].algo));
    PAGODA_ASSIGN_OR_RETURN(const float ms, events.stop_ms(s));
    const double per_run = static_cast<double>(ms) / kGemmRuns;
    if (per_run > 0 && (best_ms == 0 || per_run < best_ms)) best_ms = per_run;
  }
  if (best_ms <= 0) return Internal("cuda bf16 gemm: no algorithm could be timed");
  return 2.0 * m * n * static_cast<double>(k) / (best_ms * 1e-3) / 1e12;
}

}  // namespace pagoda
