// swiglu.cu: the elementwise ops of the MLP and the residual stream (SwigluArgs, AddArgs in
// kernels/ops.h).
//
// Math, per element, in f32 (rounded once to the activation dtype when stored):
//   swiglu: out[i] = (g / (1 + expf(-g))) * up[i],  g = gate[i]   -- the CPU twin's order:
//           silu first (IEEE division), then the product; expf is CUDA's accurate expf
//           (<= 2 ulp, like the CPU's exp8), never __expf
//   add:    a[i] = a[i] + b[i]
// Layout: gate, up, out [T, H] and a, b [T, dim], dense row-major in the activation dtype (f32
// or bf16); only the element count matters. out may be gate or up itself (and b may be a): each
// element is read and then written by one thread. Partial overlaps are rejected.
// Fused swiglu form: gate_up [T, 2H] (gate = columns [0, H) of each row, up = [H, 2H)), the
// output of one [gate; up] GEMM, and out [T, H], which must not overlap it. Same SwigluOp, so
// the same bits as the two-input form on the same values.
//
// Parallel plan: a flat grid-stride loop over n elements, 256 threads per block. When every
// pointer is 16-byte aligned and n is a multiple of the vector width, each thread moves 16 bytes
// per access (4 f32 or 8 bf16); otherwise one element at a time. Elementwise results do not
// depend on the path taken.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"

namespace pagoda::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kVecBytes = 16;
constexpr int64_t kMaxBlocks = 65536;  // grid-stride beyond this

template <typename T, int kN>
struct alignas(sizeof(T) * kN) Vec {
  T v[kN];
};

struct SwigluOp {
  __device__ __forceinline__ float operator()(float g, float u) const {
    const float silu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
    return __fmul_rn(silu, u);
  }
};

struct AddOp {
  __device__ __forceinline__ float operator()(float x, float y) const { return __fadd_rn(x, y); }
};

// out[i] = op(a[i], b[i]) for i < n_vec * kVec; pointers aligned to kVec elements.
template <typename Act, int kVec, typename Op>
__global__ void __launch_bounds__(kThreads)
    elementwise_kernel(const Act* a, const Act* b, Act* out, int64_t n_vec, Op op) {
  using V = Vec<Act, kVec>;
  const V* av = reinterpret_cast<const V*>(a);
  const V* bv = reinterpret_cast<const V*>(b);
  V* ov = reinterpret_cast<V*>(out);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_vec;
       i += stride) {
    const V x = av[i];
    const V y = bv[i];
    V o;
#pragma unroll
    for (int j = 0; j < kVec; ++j) o.v[j] = from_f32<Act>(op(to_f32(x.v[j]), to_f32(y.v[j])));
    ov[i] = o;
  }
}

// The fused swiglu form: out[t, j] = op(gate_up[t, j], gate_up[t, H + j]) for j < H, kVec
// elements per thread (H % kVec == 0 and both pointers aligned to kVec elements when kVec > 1,
// so a vector never crosses a row).
template <typename Act, int kVec>
__global__ void __launch_bounds__(kThreads)
    swiglu_fused_kernel(const Act* gate_up, Act* out, int64_t n_vec, int64_t h) {
  using V = Vec<Act, kVec>;
  const int64_t h_vec = h / kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_vec;
       i += stride) {
    const int64_t t = i / h_vec, j = i % h_vec;
    const V* gv = reinterpret_cast<const V*>(gate_up + t * 2 * h);
    const V g = gv[j];
    const V u = gv[h_vec + j];
    V o;
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      o.v[k] = from_f32<Act>(SwigluOp{}(to_f32(g.v[k]), to_f32(u.v[k])));
    reinterpret_cast<V*>(out)[i] = o;
  }
}

// ---- launchers ---------------------------------------------------------------------------

bool is_aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <typename Act, int kVec, typename Op>
void launch_vec(const void* a, const void* b, void* out, int64_t n, Op op, cudaStream_t stream) {
  const int64_t n_vec = n / kVec;
  const int blocks = static_cast<int>(std::min(kMaxBlocks, (n_vec + kThreads - 1) / kThreads));
  elementwise_kernel<Act, kVec, Op><<<blocks, kThreads, 0, stream>>>(
      static_cast<const Act*>(a), static_cast<const Act*>(b), static_cast<Act*>(out), n_vec, op);
}

template <typename Act, typename Op>
Status launch(const void* a, const void* b, void* out, int64_t n, Op op, cudaStream_t stream) {
  constexpr int kVec = kVecBytes / sizeof(Act);
  if (n % kVec == 0 && is_aligned(a, kVecBytes) && is_aligned(b, kVecBytes) &&
      is_aligned(out, kVecBytes)) {
    launch_vec<Act, kVec>(a, b, out, n, op, stream);
  } else {
    launch_vec<Act, 1>(a, b, out, n, op, stream);
  }
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

template <typename Op>
Status dispatch(DType t, const void* a, const void* b, void* out, int64_t n, Op op,
                cudaStream_t stream) {
  switch (t) {
    case DType::kF32: return launch<float>(a, b, out, n, op, stream);
    case DType::kBF16: return launch<__nv_bfloat16>(a, b, out, n, op, stream);
    default: return InvalidArgument("elementwise: unsupported activation dtype");
  }
}

// `name` is [rows, cols] on the device with the shape and dtype of `ref` (f32 or bf16).
Status check_like(const char* op, const char* name, const TensorView& t, const char* ref_name,
                  const TensorView& ref) {
  if (t.ndim != 2 || t.shape[0] != ref.shape[0] || t.shape[1] != ref.shape[1] ||
      t.dtype != ref.dtype) {
    return InvalidArgument(std::string(op) + ": " + name + " must match " + ref_name + " " +
                           ref.describe() + ", got " + t.describe());
  }
  if (t.device != Device::kCuda) {
    return InvalidArgument(std::string(op) + ": " + name + " must be on the cuda device, got " +
                           t.describe() + " on the cpu");
  }
  return OkStatus();
}

Status check_first(const char* op, const char* name, const TensorView& t) {
  if (t.ndim != 2 || t.shape[0] < 0 || t.shape[1] < 0) {
    return InvalidArgument(std::string(op) + ": " + name + " must be [T, dim], got " +
                           t.describe());
  }
  if (t.dtype != DType::kF32 && t.dtype != DType::kBF16) {
    return InvalidArgument(std::string(op) + ": " + name + " dtype must be f32 or bf16, got " +
                           t.describe());
  }
  if (t.device != Device::kCuda) {
    return InvalidArgument(std::string(op) + ": " + name + " must be on the cuda device, got " +
                           t.describe() + " on the cpu");
  }
  return OkStatus();
}

// a and b are the same tensor or disjoint.
Status check_same_or_disjoint(const char* op, const char* a_name, const TensorView& a,
                              const char* b_name, const TensorView& b) {
  if (a.data != b.data && overlaps(a, b)) {
    return InvalidArgument(std::string(op) + ": " + a_name + " must be " + b_name +
                           " itself or not overlap it");
  }
  return OkStatus();
}

template <typename Act>
Status launch_fused(const void* gate_up, void* out, int64_t t, int64_t h, cudaStream_t stream) {
  constexpr int kVec = kVecBytes / sizeof(Act);
  const bool vec = h % kVec == 0 && is_aligned(gate_up, kVecBytes) && is_aligned(out, kVecBytes);
  const int64_t n_vec = t * h / (vec ? kVec : 1);
  const int blocks = static_cast<int>(std::min(kMaxBlocks, (n_vec + kThreads - 1) / kThreads));
  if (vec) {
    swiglu_fused_kernel<Act, kVec><<<blocks, kThreads, 0, stream>>>(
        static_cast<const Act*>(gate_up), static_cast<Act*>(out), n_vec, h);
  } else {
    swiglu_fused_kernel<Act, 1><<<blocks, kThreads, 0, stream>>>(static_cast<const Act*>(gate_up),
                                                                 static_cast<Act*>(out), n_vec, h);
  }
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

// SwigluArgs' fused form: gate_up [T, 2H] -> out [T, H].
Status swiglu_fused_cuda(const SwigluArgs& a, cudaStream_t stream) {
  if (!a.gate.empty() || !a.up.empty() || a.gate.ndim != 0 || a.up.ndim != 0) {
    return InvalidArgument("swiglu: gate_up is the fused form: gate and up must be empty, got " +
                           a.gate.describe() + " and " + a.up.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_first("swiglu", "gate_up", a.gate_up));
  const int64_t t = a.gate_up.shape[0], h = a.gate_up.shape[1] / 2;
  if (a.gate_up.shape[1] % 2 != 0) {
    return InvalidArgument("swiglu: gate_up dim 1 must be even (2 * H), got " +
                           a.gate_up.describe());
  }
  if (a.out.ndim != 2 || a.out.shape[0] != t || a.out.shape[1] != h ||
      a.out.dtype != a.gate_up.dtype) {
    return InvalidArgument("swiglu: out must be [" + std::to_string(t) + ", " + std::to_string(h) +
                           "] (gate_up [T, 2H]) with the dtype of gate_up " + a.gate_up.describe() +
                           ", got " + a.out.describe());
  }
  PAGODA_RETURN_IF_ERROR(check_on_cuda("swiglu", "out", a.out));
  if (t * h == 0) return OkStatus();
  if (a.gate_up.empty() || a.out.empty()) {
    return InvalidArgument("swiglu: gate_up and out need data (got a null pointer)");
  }
  if (overlaps(a.out, a.gate_up)) return InvalidArgument("swiglu: out must not overlap gate_up");
  switch (a.gate_up.dtype) {
    case DType::kF32: return launch_fused<float>(a.gate_up.data, a.out.data, t, h, stream);
    case DType::kBF16: return launch_fused<__nv_bfloat16>(a.gate_up.data, a.out.data, t, h, stream);
    default: return InvalidArgument("swiglu: unsupported activation dtype");
  }
}

}  // namespace

Status swiglu_cuda(const SwigluArgs& a, cudaStream_t stream) {
  if (!a.gate_up.empty() || a.gate_up.ndim != 0) return swiglu_fused_cuda(a, stream);
  PAGODA_RETURN_IF_ERROR(check_first("swiglu", "gate", a.gate));
  PAGODA_RETURN_IF_ERROR(check_like("swiglu", "up", a.up, "gate", a.gate));
  PAGODA_RETURN_IF_ERROR(check_like("swiglu", "out", a.out, "gate", a.gate));
  const int64_t n = a.gate.numel();
  if (n == 0) return OkStatus();
  if (a.gate.empty() || a.up.empty() || a.out.empty()) {
    return InvalidArgument("swiglu: gate, up and out need data (got a null pointer)");
  }
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint("swiglu", "out", a.out, "gate", a.gate));
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint("swiglu", "out", a.out, "up", a.up));
  return dispatch(a.gate.dtype, a.gate.data, a.up.data, a.out.data, n, SwigluOp{}, stream);
}

Status add_cuda(const AddArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_first("add", "a", a.a));
  PAGODA_RETURN_IF_ERROR(check_like("add", "b", a.b, "a", a.a));
  const int64_t n = a.a.numel();
  if (n == 0) return OkStatus();
  if (a.a.empty() || a.b.empty()) {
    return InvalidArgument("add: a and b need data (got a null pointer)");
  }
  PAGODA_RETURN_IF_ERROR(check_same_or_disjoint("add", "b", a.b, "a", a.a));
  return dispatch(a.a.dtype, a.a.data, a.b.data, a.a.data, n, AddOp{}, stream);
}

}  // namespace pagoda::cuda
