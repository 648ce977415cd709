// matmul.cu: out[T, N] = x[T, K] · w[N, K]^T (+ bias[N]) through cuBLASLt (MatmulArgs in
// kernels/ops.h).
//
// Math: f32 accumulation (CUBLAS_COMPUTE_32F, never the TF32 "fast" compute types, so f32
// inputs are multiplied in full f32), alpha = 1, beta = 0; the result is rounded once to out's
// dtype. Bias is added in f32 by cuBLASLt's BIAS epilogue before that rounding when it can
// (bias dtype == out dtype and bias 16-byte aligned), else by bias_add_kernel after the GEMM
// (which rounds bf16 outputs twice: within the bf16 tolerance, exact for f32 outputs).
//
// Supported dtypes (x, w -> out):
//   f32  x f32  -> f32          (stories260K in f32, the CPU-exact path)
//   bf16 x bf16 -> bf16 or f32  (the GPU path; f32 out for logits)
// Mixed activation/weight dtypes (bf16 x with f32/f16 w, f32 x with f16/bf16 w) return
// Unimplemented: converting per call would need scratch memory per call (or a lossy cast of x).
// Weights are meant to be uploaded in the activation dtype once, at load time.
//
// Layout: everything row-major. cuBLASLt is column-major, so we compute the transpose:
//   out^T [N, T] (col-major, ld N) = op(w) · x^T, with w seen as col-major [K, N] (ld K) and
//   transposed (op = T), x seen as col-major [K, T] (ld K), not transposed.
// i.e. m = N, n = T, k = K.
//
// State: per device one cublasLtHandle_t, per (device, stream) one 32 MiB workspace, and a
// cache of plans (descriptors + the heuristic's algorithm) keyed by shape, dtypes, epilogue and
// pointer alignment, all created lazily under one mutex. After the first call of a shape on a
// stream nothing is allocated and no heuristic query is made. Split-K reductions are disabled
// (CUBLASLT_REDUCTION_SCHEME_NONE) so a shape always runs the same deterministic algorithm;
// bitwise batch invariance across different T is NOT guaranteed (cuBLASLt may pick other tiles
// for another T): rows agree within the dtype tolerance.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // what NVIDIA recommends for Hopper
constexpr size_t kMaxPlans = 4096;             // cleared (not evicted one by one) beyond this

// out[t, n] = act(out[t, n] + bias[n]) for the T*N elements (grid-stride). Also used with
// K == 0, after out was zeroed.
template <typename Out, typename B>
__global__ void bias_add_kernel(Out* out, const B* bias, int64_t total, int64_t n_cols) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_f32<Out>(to_f32(out[i]) + to_f32(bias[i % n_cols]));
  }
}

template <typename Out>
Status launch_bias_add(const MatmulArgs& a, int64_t total, int64_t n_cols, cudaStream_t stream) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535);
  auto* out = static_cast<Out*>(a.out.data);
  switch (a.bias.dtype) {
    case DType::kF32:
      bias_add_kernel<<<static_cast<int>(blocks), threads, 0, stream>>>(
          out, static_cast<const float*>(a.bias.data), total, n_cols);
      break;
    case DType::kF16:
      bias_add_kernel<<<static_cast<int>(blocks), threads, 0, stream>>>(
          out, static_cast<const __half*>(a.bias.data), total, n_cols);
      break;
    case DType::kBF16:
      bias_add_kernel<<<static_cast<int>(blocks), threads, 0, stream>>>(
          out, static_cast<const __nv_bfloat16*>(a.bias.data), total, n_cols);
      break;
    default: return InvalidArgument("matmul: unsupported bias dtype");
  }
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

Status bias_add(const MatmulArgs& a, int64_t T, int64_t N, cudaStream_t stream) {
  if (a.out.dtype == DType::kF32) return launch_bias_add<float>(a, T * N, N, stream);
  return launch_bias_add<__nv_bfloat16>(a, T * N, N, stream);
}

// ---- cuBLASLt state ----------------------------------------------------------------------

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

// Largest power of two <= 256 dividing the address (cuBLASLt assumes 256 unless told).
uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

struct PlanKey {
  int device;
  int64_t m, n, k;
  DType ab, out, bias;
  bool epilogue;
  uint32_t align_a, align_b, align_d;
  uint32_t align_bias;  // with the epilogue; 0 without
  auto tie() const {
    return std::tie(device, m, n, k, ab, out, bias, epilogue, align_a, align_b, align_d,
                    align_bias);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

// Descriptors and the chosen algorithm of one problem shape. Owns its cuBLASLt objects.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;  // false: the heuristic had nothing for this key (fall back, see caller)
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};

struct Workspace {
  void* ptr = nullptr;
  int device = -1;
  ~Workspace() {
    if (ptr) {
      int prev = -1;
      if (cudaGetDevice(&prev) == cudaSuccess && cudaSetDevice(device) == cudaSuccess) {
        cudaFree(ptr);
        cudaSetDevice(prev);
      }
    }
  }
};

// Process-wide; intentionally leaked (never destroyed) so that no CUDA call runs during static
// destruction, after the driver may have shut down.
struct LtState {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, cudaStream_t>, std::unique_ptr<Workspace>> workspaces;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
};

LtState& state() {
  static LtState* s = new LtState();
  return *s;
}

Status get_handle(LtState& s, int device, cublasLtHandle_t* out) {
  auto it = s.handles.find(device);
  if (it == s.handles.end()) {
    cublasLtHandle_t h = nullptr;
    PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&h));
    it = s.handles.emplace(device, h).first;
  }
  *out = it->second;
  return OkStatus();
}

Status get_workspace(LtState& s, int device, cudaStream_t stream, void** out) {
  auto& ws = s.workspaces[{device, stream}];
  if (!ws) {
    auto w = std::make_unique<Workspace>();
    w->device = device;
    const cudaError_t err = cudaMalloc(&w->ptr, kWorkspaceBytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state of a failed cudaMalloc
      s.workspaces.erase({device, stream});
      return ResourceExhausted("matmul: cannot allocate the " +
                               std::to_string(kWorkspaceBytes >> 20) +
                               " MiB cuBLASLt workspace: " + cudaGetErrorString(err));
    }
    ws = std::move(w);
  }
  *out = ws->ptr;
  return OkStatus();
}

// bias: a bias pointer of the key's alignment (the heuristic reads the alignment off the
// pointer; unset, it would assume any), or null without the epilogue.
Status make_plan(cublasLtHandle_t handle, const PlanKey& key, const void* bias, Plan* p) {
  const cudaDataType_t ab = cuda_type(key.ab);
  const cudaDataType_t dt = cuda_type(key.out);
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                               &trans_a, sizeof(trans_a)));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                               &trans_b, sizeof(trans_b)));
  if (key.epilogue) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = cuda_type(key.bias);
    PAGODA_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  // A = w as col-major [K, N] (ld K), B = x as col-major [K, T] (ld K), D = out^T [N, T] (ld N).
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p->a, ab, key.k, key.m, key.k));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p->b, ab, key.k, key.n, key.k));
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p->d, dt, key.m, key.n, key.m));

  cublasLtMatmulPreference_t pref = nullptr;
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  const uint32_t no_split_k = CUBLASLT_REDUCTION_SCHEME_NONE;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  const auto set = [&](cublasLtMatmulPreferenceAttributes_t attr, const void* v, size_t n) {
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, v, n);
  };
  set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  set(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &no_split_k, sizeof(no_split_k));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_a, sizeof(key.align_a));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_b, sizeof(key.align_b));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_d, sizeof(key.align_d));
  set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_d, sizeof(key.align_d));
  cublasLtMatmulHeuristicResult_t result{};
  int n_results = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle, p->desc, p->a, p->b, p->d, p->d, pref, 1, &result,
                                        &n_results);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  // NOT_SUPPORTED: no algorithm for this combination (e.g. this bias type in the epilogue).
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return OkStatus();
  PAGODA_CUBLAS_RETURN_IF_ERROR(st);
  if (n_results > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p->algo = result.algo;
    p->found = true;
  }
  return OkStatus();
}

// The plan for key, made on first use. Caller holds s.mu.
Status get_plan(LtState& s, cublasLtHandle_t handle, const PlanKey& key, const void* bias,
                const Plan** out) {
  auto it = s.plans.find(key);
  if (it == s.plans.end()) {
    auto p = std::make_unique<Plan>();
    PAGODA_RETURN_IF_ERROR(make_plan(handle, key, bias, p.get()));
    if (s.plans.size() >= kMaxPlans) s.plans.clear();
    it = s.plans.emplace(key, std::move(p)).first;
  }
  *out = it->second.get();
  return OkStatus();
}

// ---- argument checks ---------------------------------------------------------------------

Status check_args(const MatmulArgs& a) {
  const bool has_bias = !a.bias.empty();
  if (a.x.ndim != 2) return InvalidArgument("matmul: x must be [T, K], got " + a.x.describe());
  if (a.w.ndim != 2) return InvalidArgument("matmul: w must be [N, K], got " + a.w.describe());
  const int64_t T = a.x.shape[0], K = a.x.shape[1], N = a.w.shape[0];
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (T < 0 || K < 0 || N < 0 || T > kMax || K > kMax || N > kMax) {
    return InvalidArgument("matmul: dims must be in [0, 2^31), got x " + a.x.describe() + ", w " +
                           a.w.describe());
  }
  if (a.x.dtype != DType::kF32 && a.x.dtype != DType::kBF16) {
    return InvalidArgument("matmul: x dtype must be f32 or bf16, got " + a.x.describe());
  }
  if (!is_float(a.w.dtype)) {
    return InvalidArgument("matmul: w dtype must be f32, f16 or bf16, got " + a.w.describe());
  }
  if (a.w.shape[1] != K) {
    return InvalidArgument("matmul: w must be [N, " + std::to_string(K) + "] (K of x " +
                           a.x.describe() + "), got " + a.w.describe());
  }
  if (a.out.ndim != 2 || a.out.shape[0] != T || a.out.shape[1] != N) {
    return InvalidArgument("matmul: out must be [" + std::to_string(T) + ", " + std::to_string(N) +
                           "], got " + a.out.describe());
  }
  if (a.out.dtype != a.x.dtype && a.out.dtype != DType::kF32) {
    return InvalidArgument("matmul: out dtype must be x's (" + std::string(dtype_name(a.x.dtype)) +
                           ") or f32, got " + a.out.describe());
  }
  if (has_bias && (a.bias.ndim != 1 || a.bias.shape[0] != N || !is_float(a.bias.dtype))) {
    return InvalidArgument("matmul: bias must be [" + std::to_string(N) + "] f32/f16/bf16, got " +
                           a.bias.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_on_cuda("matmul", "x", a.x));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("matmul", "w", a.w));
  PAGODA_RETURN_IF_ERROR(check_on_cuda("matmul", "out", a.out));
  if (has_bias) PAGODA_RETURN_IF_ERROR(check_on_cuda("matmul", "bias", a.bias));
  if (a.w.dtype != a.x.dtype) {
    return Unimplemented(std::string("matmul: cuda matmul needs w in the activation dtype (x ") +
                         dtype_name(a.x.dtype) + ", w " + dtype_name(a.w.dtype) +
                         "); convert the weights once when uploading them");
  }
  if (T == 0 || N == 0) return OkStatus();
  if (a.out.empty() || (K > 0 && (a.x.empty() || a.w.empty()))) {
    return InvalidArgument("matmul: x, w and out need data (got a null pointer)");
  }
  if (K > 0 && (overlaps(a.out, a.x) || overlaps(a.out, a.w))) {
    return InvalidArgument("matmul: out must not overlap x or w");
  }
  if (has_bias && overlaps(a.out, a.bias)) {
    return InvalidArgument("matmul: out must not overlap bias");
  }
  return OkStatus();
}

}  // namespace

void matmul_release_workspace(cudaStream_t stream) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return;
  LtState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.workspaces.erase({device, stream});  // ~Workspace frees it
}

Status matmul_reserve_workspace(cudaStream_t stream) {
  int device = 0;
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  LtState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  PAGODA_RETURN_IF_ERROR(get_handle(s, device, &handle));
  return get_workspace(s, device, stream, &workspace);
}

Status matmul_cuda(const MatmulArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int64_t T = a.x.shape[0], K = a.x.shape[1], N = a.w.shape[0];
  const bool has_bias = !a.bias.empty();
  if (T == 0 || N == 0) return OkStatus();
  if (K == 0) {  // empty sum: out = bias or 0
    PAGODA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(a.out.data, 0, a.out.nbytes(), stream));
    return has_bias ? bias_add(a, T, N, stream) : OkStatus();
  }

  int device = 0;
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const bool epilogue = has_bias && a.bias.dtype == a.out.dtype && alignment_of(a.bias.data) >= 16;
  PlanKey key{device,
              N,
              T,
              K,
              a.x.dtype,
              a.out.dtype,
              has_bias ? a.bias.dtype : a.out.dtype,
              epilogue,
              alignment_of(a.w.data),
              alignment_of(a.x.data),
              alignment_of(a.out.data),
              epilogue ? alignment_of(a.bias.data) : 0u};

  LtState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  const Plan* plan = nullptr;
  PAGODA_RETURN_IF_ERROR(get_handle(s, device, &handle));
  PAGODA_RETURN_IF_ERROR(get_workspace(s, device, stream, &workspace));
  PAGODA_RETURN_IF_ERROR(get_plan(s, handle, key, epilogue ? a.bias.data : nullptr, &plan));
  if (!plan->found && key.epilogue) {  // no algorithm with the epilogue: add bias afterwards
    key.epilogue = false;
    key.align_bias = 0;
    PAGODA_RETURN_IF_ERROR(get_plan(s, handle, key, nullptr, &plan));
  }
  if (!plan->found) {
    return Unimplemented("matmul: cuBLASLt has no algorithm for x " + a.x.describe() + ", w " +
                         a.w.describe() + ", out " + a.out.describe());
  }
  if (key.epilogue) {
    // The bias pointer is per call, so it is set on the cached descriptor here (under the lock,
    // before the matmul is queued; cuBLASLt reads it at enqueue time).
    const void* bias_ptr = a.bias.data;
    PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof(bias_ptr)));
  }
  const float alpha = 1.0f, beta = 0.0f;
  PAGODA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(
      handle, plan->desc, &alpha, a.w.data, plan->a, a.x.data, plan->b, &beta, a.out.data, plan->d,
      a.out.data, plan->d, &plan->algo, workspace, kWorkspaceBytes, stream));
  if (has_bias && !key.epilogue) return bias_add(a, T, N, stream);
  return OkStatus();
}

}  // namespace pagoda::cuda
