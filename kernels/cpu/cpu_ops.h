// Private to kernels/cpu: the op launchers (one .cc per op family) and the argument checks they
// share. Each launcher validates its Args, returning InvalidArgument("<op>: <arg> ...") on bad
// input, then runs its kernels on the given pool.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <type_traits>

#include "core/status.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"

namespace pagoda::cpu {

Status embedding(ThreadPool& pool, const EmbeddingArgs& a);
Status rms_norm(ThreadPool& pool, const RmsNormArgs& a);
Status matmul(ThreadPool& pool, const MatmulArgs& a);
Status rope(ThreadPool& pool, const RopeArgs& a);
Status swiglu(ThreadPool& pool, const SwigluArgs& a);
Status add(ThreadPool& pool, const AddArgs& a);
Status kv_write(ThreadPool& pool, const KvWriteArgs& a);
Status rope_kv_write(ThreadPool& pool, const RopeKvWriteArgs& a);  // rope_kv_write.cc
Status attention(ThreadPool& pool, const AttentionArgs& a);
Status gather_rows(ThreadPool& pool, const GatherRowsArgs& a);
Status argmax(ThreadPool& pool, const ArgmaxArgs& a);
Status sample(ThreadPool& pool, const SampleArgs& a);
Status logprobs(ThreadPool& pool, const LogprobsArgs& a);

// ---- argument checks -----------------------------------------------------------------------

// Streams parts... into one string: cat("[", 3, "] = ", -1) == "[3] = -1".
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

// InvalidArgument("<op>: <arg> <parts...>")
template <typename... Parts>
Status arg_error(const char* op, const char* arg, const Parts&... parts) {
  return InvalidArgument(cat(op, ": ", arg, " ", parts...));
}

// `t` is a host tensor with `ndim` dims, one of `dtypes`, and data unless it has no elements.
inline Status check_tensor(const char* op, const char* arg, const TensorView& t, int ndim,
                           std::initializer_list<DType> dtypes) {
  if (t.device != Device::kCpu) return arg_error(op, arg, "must be in host memory");
  if (t.ndim != ndim) {
    return arg_error(op, arg, "must have ", ndim, " dims, got ", t.describe());
  }
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0) return arg_error(op, arg, "has a negative dim: ", t.describe());
  }
  bool dtype_ok = false;
  std::ostringstream allowed;
  for (DType d : dtypes) {
    dtype_ok = dtype_ok || d == t.dtype;
    allowed << (d == *dtypes.begin() ? "" : "/") << dtype_name(d);
  }
  if (!dtype_ok) return arg_error(op, arg, "must be ", allowed.str(), ", got ", t.describe());
  if (t.data == nullptr && t.numel() > 0) return arg_error(op, arg, "has no data");
  return OkStatus();
}

inline Status check_dim(const char* op, const char* arg, const TensorView& t, int i,
                        int64_t expected, const char* expected_name) {
  if (t.shape[i] != expected) {
    return arg_error(op, arg, "dim ", i, " must be ", expected_name, " = ", expected, ", got ",
                     t.describe());
  }
  return OkStatus();
}

// v_cache has k_cache's shape and dtype (the paged caches of one layer).
inline Status check_v_cache_like_k(const char* op, const TensorView& k_cache,
                                   const TensorView& v_cache) {
  for (int i = 0; i < 4; ++i) {
    PAGODA_RETURN_IF_ERROR(
        check_dim(op, "v_cache", v_cache, i, k_cache.shape[i], "the k_cache dim"));
  }
  if (v_cache.dtype != k_cache.dtype) {
    return arg_error(op, "v_cache", "must have the dtype of k_cache, got ", v_cache.describe(),
                     " vs ", k_cache.describe());
  }
  return OkStatus();
}

// The byte ranges of a and b do not overlap (they may not alias at all).
inline Status check_no_overlap(const char* op, const char* arg_a, const TensorView& a,
                               const char* arg_b, const TensorView& b) {
  const char* pa = static_cast<const char*>(a.data);
  const char* pb = static_cast<const char*>(b.data);
  if (pa == nullptr || pb == nullptr || a.nbytes() == 0 || b.nbytes() == 0) return OkStatus();
  if (pa < pb + b.nbytes() && pb < pa + a.nbytes()) {
    return arg_error(op, arg_a, "must not overlap ", arg_b);
  }
  return OkStatus();
}

// a and b are the same tensor or do not overlap at all (partial overlap is an error).
inline Status check_same_or_disjoint(const char* op, const char* arg_a, const TensorView& a,
                                     const char* arg_b, const TensorView& b) {
  if (a.data == b.data) return OkStatus();
  return check_no_overlap(op, arg_a, a, arg_b, b);
}

constexpr std::initializer_list<DType> kFloatDTypes = {DType::kF32, DType::kF16, DType::kBF16};

// Calls fn(std::integral_constant<DType, d>{}) for a float dtype d, so that kernels templated on
// the storage type can be picked at run time: dispatch_float(t, [&](auto d) { k<d()>(...); }).
template <typename Fn>
void dispatch_float(DType d, Fn&& fn) {
  switch (d) {
    case DType::kF32: fn(std::integral_constant<DType, DType::kF32>{}); return;
    case DType::kF16: fn(std::integral_constant<DType, DType::kF16>{}); return;
    case DType::kBF16: fn(std::integral_constant<DType, DType::kBF16>{}); return;
    case DType::kI32: break;
  }
  PAGODA_CHECK(false && "dispatch_float: not a float dtype (the launcher should have said so)");
}

}  // namespace pagoda::cpu
