// Row argmax: out[r] = lowest i with logits[r, i] == max_j logits[r, j] (NaN counts as -inf;
// 0 when nothing beats -inf) -- the engine sampler's greedy choice, bit for bit.
//   logits [R, vocab] f32
//   out    [R] i32
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_ops.h"

namespace pagoda::cpu {

namespace {

int32_t row_argmax(const float* row, int64_t n) {
  // Strictly greater keeps the first of equal values; NaN never compares greater, and -inf
  // never beats the initial -inf, so an all -inf/NaN row gives 0.
  float best = -std::numeric_limits<float>::infinity();
  int32_t at = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (row[i] > best) {
      best = row[i];
      at = static_cast<int32_t>(i);
    }
  }
  return at;
}

}  // namespace

Status argmax(ThreadPool& pool, const ArgmaxArgs& a) {
  constexpr const char* kOp = "argmax";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "logits", a.logits, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 1, {DType::kI32}));
  const int64_t rows = a.logits.shape[0], vocab = a.logits.shape[1];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 0, rows, "R (logits dim 0)"));
  if (rows > 0 && vocab == 0) return arg_error(kOp, "logits", "has rows of length 0");
  if (vocab > std::numeric_limits<int32_t>::max())
    return arg_error(kOp, "logits", "rows longer than 2^31 - 1: ", a.logits.describe());
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "logits", a.logits));
  const float* logits = a.logits.as<const float>();
  int32_t* out = a.out.as<int32_t>();
  pool.parallel_for(rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) out[r] = row_argmax(logits + r * vocab, vocab);
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
