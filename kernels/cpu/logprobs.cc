// Log-probabilities of the raw logits at each row's token and of its K most likely tokens
// (LogprobsArgs in kernels/ops.h): the reference for the CUDA twin and the engine's host
// Sampler::logprobs.
//   logits         [R, vocab] f32 (not modified)
//   tokens         [R] i32
//   token_logprobs [R] f32
//   top_ids        [R, K] i32, top_logprobs [R, K] f32
// logprob(x) = (x - m) - log(sum_j exp(l_j - m)) with m the row maximum (NaN read as -inf), the
// exponentials summed in double in sample.cc's grouping; rows without a finite maximum take
// the limit (see ops.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/sample.h"
#include "kernels/sample_math.h"

namespace pagoda::cpu {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}  // namespace

void row_logprobs(std::span<const float> logits, int token, int num_top, SampleScratch& scratch,
                  float* token_logprob, int32_t* top_ids, float* top_logprobs) {
  const int vocab = static_cast<int>(logits.size());
  std::vector<float>& values = scratch.values;
  std::vector<Candidate>& candidates = scratch.candidates;
  values.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i)
    values[i] = std::isnan(logits[i]) ? kNegInf : logits[i];
  // The top tokens by logit, in the order (before `values` becomes exponentials).
  const size_t n = static_cast<size_t>(std::clamp(num_top, 0, vocab));
  if (n == logits.size()) {
    candidates.resize(n);
    for (int id = 0; id < vocab; ++id) candidates[id] = {values[id], id};
  } else if (n > 0) {
    select_top_k(values, n, candidates);
  } else {
    candidates.clear();
  }

  // log p(l) = (l - max) - log(sum_j exp(l_j - max)); the sum is at least 1 (the max's term).
  const float max_logit = values[first_argmax(values)];
  double log_sum = 0.0;
  int num_inf = 0;
  if (std::isfinite(max_logit)) {
    for (float& l : values) l = sample_math::exp_nonpositive(l - max_logit);  // vectorized
    log_sum = std::log(grouped_sum(values));
  } else if (max_logit > 0.0f) {
    for (float l : values) num_inf += l == max_logit;
  }
  const auto logprob = [&](float l) -> float {
    if (std::isfinite(max_logit)) {
      return static_cast<float>((static_cast<double>(l) - max_logit) - log_sum);
    }
    if (max_logit > 0.0f) return l == max_logit ? -static_cast<float>(std::log(num_inf)) : kNegInf;
    return -static_cast<float>(std::log(static_cast<double>(vocab)));
  };

  *token_logprob = logprob(std::isnan(logits[token]) ? kNegInf : logits[token]);
  std::sort(candidates.begin(), candidates.end(), precedes);  // (logit desc, id asc)
  for (size_t k = 0; k < n; ++k) {
    top_ids[k] = candidates[k].second;
    top_logprobs[k] = logprob(candidates[k].first);
  }
}

Status logprobs(ThreadPool& pool, const LogprobsArgs& a) {
  constexpr const char* kOp = "logprobs";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "logits", a.logits, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "tokens", a.tokens, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "token_logprobs", a.token_logprobs, 1, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "top_ids", a.top_ids, 2, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "top_logprobs", a.top_logprobs, 2, {DType::kF32}));
  const int64_t rows = a.logits.shape[0], vocab = a.logits.shape[1], K = a.top_ids.shape[1];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "tokens", a.tokens, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(
      check_dim(kOp, "token_logprobs", a.token_logprobs, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "top_ids", a.top_ids, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(
      check_dim(kOp, "top_logprobs", a.top_logprobs, 0, rows, "R (logits dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "top_logprobs", a.top_logprobs, 1, K, "K (top_ids dim 1)"));
  if (rows > 0 && vocab == 0) return arg_error(kOp, "logits", "has rows of length 0");
  if (vocab > std::numeric_limits<int32_t>::max())
    return arg_error(kOp, "logits", "rows longer than 2^31 - 1: ", a.logits.describe());
  if (K > std::min<int64_t>(vocab, kMaxTopLogprobs))
    return arg_error(kOp, "top_ids", "dim 1 (K) must be at most min(vocab, ", kMaxTopLogprobs,
                     ") = ", std::min<int64_t>(vocab, kMaxTopLogprobs), ", got ",
                     a.top_ids.describe());
  const int32_t* tokens = a.tokens.as<const int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    if (tokens[r] < 0 || tokens[r] >= vocab)
      return arg_error(kOp, "tokens", "[", r, "] = ", tokens[r], " is outside [0, ", vocab, ")");
  }
  const TensorView* outputs[] = {&a.token_logprobs, &a.top_ids, &a.top_logprobs};
  const char* names[] = {"token_logprobs", "top_ids", "top_logprobs"};
  for (int i = 0; i < 3; ++i) {
    PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, names[i], *outputs[i], "logits", a.logits));
    PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, names[i], *outputs[i], "tokens", a.tokens));
    for (int j = i + 1; j < 3; ++j)
      PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, names[i], *outputs[i], names[j], *outputs[j]));
  }
  const float* logits = a.logits.as<const float>();
  float* token_logprobs = a.token_logprobs.as<float>();
  int32_t* top_ids = a.top_ids.as<int32_t>();
  float* top_logprobs = a.top_logprobs.as<float>();
  pool.parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
    thread_local SampleScratch scratch;  // no allocation once a thread has seen the vocabulary
    for (int64_t r = begin; r < end; ++r) {
      row_logprobs({logits + r * vocab, static_cast<size_t>(vocab)}, tokens[r], static_cast<int>(K),
                   scratch, token_logprobs + r, top_ids + r * K, top_logprobs + r * K);
    }
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
