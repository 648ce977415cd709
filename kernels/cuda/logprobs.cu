// logprobs.cu: log-probabilities of the raw logits on the device (LogprobsArgs in
// kernels/ops.h), so that a row that asks for logprobs copies back 1 + 2K numbers instead of
// [vocab] floats. The CPU twin is kernels/cpu/logprobs.cc (cpu::row_logprobs); the exponential
// is kernels/sample_math.h's exp_nonpositive, compiled here for the device from the same source.
//
// Math (per row r, l = logits[r], NaN read as -inf; m = l at the lowest id of the maximum, as the
// CPU's first_argmax picks it, so even its zero sign is the CPU's):
//   m finite:  log_sum = log(sum_j exp_nonpositive(l_j - m))   (f32 terms, double sum and log)
//              logprob(x) = (float)(((double)x - m) - log_sum)
//   m == +inf: logprob(x) = x == +inf ? -(float)log(count of +inf) : -inf
//   m == -inf: logprob(x) = -(float)log(vocab)                  (every logit -inf or NaN)
//   token_logprobs[r] = logprob(l[tokens[r]]);
//   top: the first K ids in the order (l desc, id asc), in that order, with their logprobs.
// Tokens live on the device, so the launcher cannot check them: a token outside [0, vocab)
// is never read; its row's token_logprobs entry is NaN (the top-K outputs are still written).
// Layout: logits [R, vocab] f32 (not modified), tokens [R] i32, token_logprobs [R] f32,
// top_ids [R, K] i32, top_logprobs [R, K] f32, all on the device; 0 <= K <= min(vocab, 20).
//
// Parallel plan: one CTA of kThreads per row; the row is read twice (the second read hits L2).
//  - pass 1: each thread scans its strided ids (ascending) for the maximum (value, lowest id)
//    and the count of +inf, and keeps its own first K in the order in registers (a list sorted
//    by (value desc, id asc), unrolled over kMaxTopLogprobs slots; an element that does not beat
//    the thread's K-th is rejected by one compare). Block reductions give m and the count.
//  - pass 2 (m finite): the exponentials summed per thread in double, then over the block in a
//    fixed order (warp shuffles, then warps 0..n-1): the grouping depends only on vocab, so a
//    row's result does not depend on the batch. It differs from the CPU's grouping, hence the
//    logprobs may differ from the CPU's by an ulp; the ids do not.
//  - K rounds of a block-wide selection of the best list head (value desc, id asc); the winning
//    thread pops its head. The global first K are among the threads' first K, so this is exact.
//  - thread 0 turns the K (logit, id) into logprobs and writes them, in logit order, with the
//    token's logprob.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/sample_math.h"

namespace pagoda::cuda {
namespace {

namespace sm = ::pagoda::sample_math;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kSlots = kMaxTopLogprobs;
constexpr int32_t kNone = kNoId;  // an empty slot / no value
using Entry = ValueId;            // precedes(): the order (value desc, id asc), kNone last

struct Shared {
  float fval[kWarps];
  int32_t ival[kWarps];
  int32_t count[kWarps];
  double dsum[kWarps];
  float top_value[kSlots];
  int32_t top_id[kSlots];
};

// The first entry in the order over the block; every thread gets it.
__device__ __forceinline__ Entry block_best(Entry v, Shared& sh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    Entry other;
    other.value = __shfl_xor_sync(0xffffffffu, v.value, offset);
    other.id = __shfl_xor_sync(0xffffffffu, v.id, offset);
    if (precedes(other, v)) v = other;
  }
  if (lane == 0) {
    sh.fval[warp] = v.value;
    sh.ival[warp] = v.id;
  }
  __syncthreads();
  v = Entry{sh.fval[0], sh.ival[0]};
  for (int w = 1; w < kWarps; ++w) {
    const Entry other{sh.fval[w], sh.ival[w]};
    if (precedes(other, v)) v = other;
  }
  __syncthreads();
  return v;
}

// The block's sum, added in a fixed order (the same in every thread); every thread gets it.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* slots) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  T total = slots[0];
  for (int w = 1; w < kWarps; ++w) total += slots[w];
  __syncthreads();
  return total;
}

// grid: [R], block: [kThreads]. vocab in [1, INT_MAX], num_top in [0, min(vocab, kSlots)].
__global__ void __launch_bounds__(kThreads)
    logprobs_kernel(const float* logits, const int32_t* tokens, float* token_logprobs,
                    int32_t* top_ids, float* top_logprobs, int vocab, int num_top) {
  __shared__ Shared sh;
  const int64_t r = blockIdx.x;
  const float* row = logits + r * vocab;
  const unsigned n = static_cast<unsigned>(vocab);  // unsigned ids: i + kThreads cannot overflow

  // Pass 1: the maximum (lowest id first), the +inf count, this thread's first num_top.
  Entry best{-INFINITY, kNone};
  int num_inf = 0;
  Entry list[kSlots];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) list[s] = Entry{-INFINITY, kNone};
  Entry kth{-INFINITY, kNone};  // list[num_top - 1]: the bar an element must beat
  for (unsigned i = threadIdx.x; i < n; i += kThreads) {
    const float raw = row[i];
    const float x = isnan(raw) ? -INFINITY : raw;
    if (x > best.value) best = Entry{x, static_cast<int32_t>(i)};  // ids ascend: lowest first
    num_inf += x == INFINITY;
    // Ids ascend, so an element equal to the bar ranks after it: only a larger value gets in.
    if (num_top > 0 && (kth.id == kNone || x > kth.value)) {
      Entry carry{x, static_cast<int32_t>(i)};
#pragma unroll
      for (int s = 0; s < kSlots; ++s) {
        if (s < num_top && precedes(carry, list[s])) {
          const Entry t = list[s];
          list[s] = carry;
          carry = t;
        }
        if (s == num_top - 1) kth = list[s];
      }
    }
  }
  best = block_best(best, sh);
  num_inf = block_sum(num_inf, sh.count);
  // m and its bits are row[best.id]'s; no value above -inf: m = -inf (the CPU's row[0]).
  const float m = best.id == kNone ? -INFINITY : best.value;

  // Pass 2: log of the sum of the exponentials, in double.
  double log_sum = 0.0;
  if (isfinite(m)) {
    double local = 0.0;
    for (unsigned i = threadIdx.x; i < n; i += kThreads) {
      const float raw = row[i];
      const float x = isnan(raw) ? -INFINITY : raw;
      local += static_cast<double>(sm::exp_nonpositive(__fsub_rn(x, m)));
    }
    log_sum = log(block_sum(local, sh.dsum));  // at least log(1): m's own term
  }

  // The global first num_top: the best head, num_top times; its owner pops it.
  for (int k = 0; k < num_top; ++k) {
    const Entry winner = block_best(list[0], sh);
    if (list[0].id != kNone && list[0].id == winner.id) {
#pragma unroll
      for (int s = 0; s + 1 < kSlots; ++s) list[s] = list[s + 1];
      list[kSlots - 1] = Entry{-INFINITY, kNone};
    }
    if (threadIdx.x == 0) {
      sh.top_value[k] = winner.value;
      sh.top_id[k] = winner.id;
    }
  }
  if (threadIdx.x != 0) return;

  const auto logprob = [&](float x) -> float {
    if (isfinite(m)) {
      return __double2float_rn(__dsub_rn(__dsub_rn(static_cast<double>(x), m), log_sum));
    }
    if (m > 0.0f) {
      return x == INFINITY ? -__double2float_rn(log(static_cast<double>(num_inf))) : -INFINITY;
    }
    return -__double2float_rn(log(static_cast<double>(vocab)));
  };
  const int token = tokens[r];
  float token_lp = NAN;  // a token outside [0, vocab) is not read
  if (token >= 0 && token < vocab) {
    const float raw = row[token];
    token_lp = logprob(isnan(raw) ? -INFINITY : raw);
  }
  token_logprobs[r] = token_lp;

  // In logit order, not re-sorted by logprob (ops.h: so that any prefix is a row's top n).
  for (int k = 0; k < num_top; ++k) {
    top_ids[r * num_top + k] = sh.top_id[k];
    top_logprobs[r * num_top + k] = logprob(sh.top_value[k]);
  }
}

// ---- launcher ----------------------------------------------------------------------------

constexpr const char* kOp = "logprobs";

Status arg_error(const char* arg, const std::string& what) {
  return InvalidArgument(std::string(kOp) + ": " + arg + " " + what);
}

// `t` is on the device, has `ndim` dims (none negative), dtype `dtype`, and data unless empty.
Status check_tensor(const char* arg, const TensorView& t, int ndim, DType dtype) {
  PAGODA_RETURN_IF_ERROR(check_on_cuda(kOp, arg, t));
  if (t.ndim != ndim)
    return arg_error(arg, "must have " + std::to_string(ndim) + " dims, got " + t.describe());
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0) return arg_error(arg, "has a negative dim: " + t.describe());
  }
  if (t.dtype != dtype)
    return arg_error(arg, std::string("must be ") + dtype_name(dtype) + ", got " + t.describe());
  if (t.data == nullptr && t.numel() > 0) return arg_error(arg, "has no data");
  return OkStatus();
}

Status check_dim(const char* arg, const TensorView& t, int i, int64_t expected,
                 const char* expected_name) {
  if (t.shape[i] == expected) return OkStatus();
  return arg_error(arg, "dim " + std::to_string(i) + " must be " + expected_name + " = " +
                            std::to_string(expected) + ", got " + t.describe());
}

Status check_no_overlap(const char* arg_a, const TensorView& a, const char* arg_b,
                        const TensorView& b) {
  if (a.data == nullptr || b.data == nullptr || a.nbytes() == 0 || b.nbytes() == 0)
    return OkStatus();
  if (overlaps(a, b)) return arg_error(arg_a, std::string("must not overlap ") + arg_b);
  return OkStatus();
}

Status check_args(const LogprobsArgs& a) {
  PAGODA_RETURN_IF_ERROR(check_tensor("logits", a.logits, 2, DType::kF32));
  PAGODA_RETURN_IF_ERROR(check_tensor("tokens", a.tokens, 1, DType::kI32));
  PAGODA_RETURN_IF_ERROR(check_tensor("token_logprobs", a.token_logprobs, 1, DType::kF32));
  PAGODA_RETURN_IF_ERROR(check_tensor("top_ids", a.top_ids, 2, DType::kI32));
  PAGODA_RETURN_IF_ERROR(check_tensor("top_logprobs", a.top_logprobs, 2, DType::kF32));
  const int64_t rows = a.logits.shape[0], vocab = a.logits.shape[1], K = a.top_ids.shape[1];
  PAGODA_RETURN_IF_ERROR(check_dim("tokens", a.tokens, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(
      check_dim("token_logprobs", a.token_logprobs, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim("top_ids", a.top_ids, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim("top_logprobs", a.top_logprobs, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim("top_logprobs", a.top_logprobs, 1, K, "K (top_ids dim 1)"));
  if (rows > 0 && vocab == 0) return arg_error("logits", "has rows of length 0");
  if (vocab > std::numeric_limits<int32_t>::max())
    return arg_error("logits", "rows longer than 2^31 - 1: " + a.logits.describe());
  if (rows > std::numeric_limits<int32_t>::max())
    return arg_error("logits", "more than 2^31 - 1 rows: " + a.logits.describe());
  const int64_t max_k = std::min<int64_t>(vocab, kMaxTopLogprobs);
  if (K > max_k) {
    return arg_error("top_ids",
                     "dim 1 (K) must be at most min(vocab, " + std::to_string(kMaxTopLogprobs) +
                         ") = " + std::to_string(max_k) + ", got " + a.top_ids.describe());
  }
  const TensorView* outputs[] = {&a.token_logprobs, &a.top_ids, &a.top_logprobs};
  const char* names[] = {"token_logprobs", "top_ids", "top_logprobs"};
  for (int i = 0; i < 3; ++i) {
    PAGODA_RETURN_IF_ERROR(check_no_overlap(names[i], *outputs[i], "logits", a.logits));
    PAGODA_RETURN_IF_ERROR(check_no_overlap(names[i], *outputs[i], "tokens", a.tokens));
    for (int j = i + 1; j < 3; ++j)
      PAGODA_RETURN_IF_ERROR(check_no_overlap(names[i], *outputs[i], names[j], *outputs[j]));
  }
  return OkStatus();
}

}  // namespace

Status logprobs_cuda(const LogprobsArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int rows = static_cast<int>(a.logits.shape[0]);
  if (rows == 0) return OkStatus();
  logprobs_kernel<<<rows, kThreads, 0, stream>>>(
      static_cast<const float*>(a.logits.data), static_cast<const int32_t*>(a.tokens.data),
      static_cast<float*>(a.token_logprobs.data), static_cast<int32_t*>(a.top_ids.data),
      static_cast<float*>(a.top_logprobs.data), static_cast<int>(a.logits.shape[1]),
      static_cast<int>(a.top_ids.shape[1]));
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

}  // namespace pagoda::cuda
