// logprobs: the CPU twin against the rule spelled out in long double (log_softmax of the raw
// logits with NaN as -inf, the limits for rows without a finite maximum, the top K by
// (logit desc, id asc)) over odd shapes, planted ties and special values; bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/argmax_rows.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct RowReference {
  std::vector<int32_t> top_ids;
  std::vector<long double> top_logprobs;
  long double token_logprob = 0;
};

// log_softmax at long double precision, the order of ids by (value desc, id asc).
RowReference reference_row(const float* row, int64_t vocab, int32_t token, int64_t k) {
  std::vector<long double> l(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) l[i] = std::isnan(row[i]) ? -INFINITY : row[i];
  const long double m = *std::max_element(l.begin(), l.end());
  int64_t num_inf = 0;
  long double sum = 0;
  for (long double x : l) {
    num_inf += x == INFINITY;
    if (std::isfinite(m)) sum += std::exp(x - m);
  }
  const auto logprob = [&](long double x) -> long double {
    if (std::isfinite(m)) return x - m - std::log(sum);
    if (m > 0) return x == INFINITY ? -std::log(static_cast<long double>(num_inf)) : -INFINITY;
    return -std::log(static_cast<long double>(vocab));
  };
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  RowReference out;
  out.token_logprob = logprob(l[token]);
  for (int64_t j = 0; j < k; ++j) {
    out.top_ids.push_back(order[j]);
    out.top_logprobs.push_back(logprob(l[order[j]]));
  }
  return out;
}

void expect_logprob_near(float got, long double want, const std::string& where) {
  if (std::isinf(want)) {
    EXPECT_EQ(got, static_cast<float>(want)) << where;
    return;
  }
  EXPECT_NEAR(got, static_cast<double>(want), 1e-5 * std::max(1.0L, std::fabs(want))) << where;
}

ref::HostTensor f32_rows(const std::vector<float>& values, int64_t rows, int64_t vocab) {
  ref::HostTensor t(DType::kF32, {rows, vocab});
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

// Rows with many equal logits (values on a coarse grid), so that the id order of ties decides
// which ids make the top K.
std::vector<float> tied_rows(std::mt19937& rng, int64_t rows, int64_t vocab) {
  std::uniform_int_distribution<int> level(-6, 3);
  std::vector<float> v(static_cast<size_t>(rows * vocab));
  for (float& x : v) x = 0.5f * level(rng);
  return v;
}

TEST(LogprobsTest, MatchesTheReferenceOnOddShapesTiesAndSpecialValues) {
  auto backend = make_cpu_backend(2);
  std::mt19937 rng(11);
  for (int64_t vocab : {1, 2, 7, 31, 33, 500, 4097, 32000}) {
    for (int64_t rows : {1, 3, 17}) {
      for (int64_t k : {0, 1, 5, 20}) {
        if (k > vocab) continue;
        for (bool tied : {false, true}) {
          std::vector<float> values =
              tied ? tied_rows(rng, rows, vocab) : testing_rows::argmax_rows(rng, rows, vocab);
          ref::HostTensor logits = f32_rows(values, rows, vocab);
          ref::HostTensor tokens(DType::kI32, {rows});
          std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab) - 1);
          for (int64_t r = 0; r < rows; ++r) static_cast<int32_t*>(tokens.data())[r] = pick(rng);
          ref::HostTensor token_lp = ref::poisoned(DType::kF32, {rows});
          ref::HostTensor top_ids = ref::poisoned(DType::kI32, {rows, k});
          ref::HostTensor top_lp = ref::poisoned(DType::kF32, {rows, k});
          const Status s = backend->logprobs(
              {logits.view(), tokens.view(), token_lp.view(), top_ids.view(), top_lp.view()});
          ASSERT_TRUE(s.ok()) << s.to_string();
          for (int64_t r = 0; r < rows; ++r) {
            const std::string where = "vocab " + std::to_string(vocab) + " k " + std::to_string(k) +
                                      " row " + std::to_string(r) + " (" +
                                      (tied ? "tied" : testing_rows::kind_name(r)) + ")";
            const int32_t token = static_cast<const int32_t*>(tokens.data())[r];
            const RowReference want = reference_row(values.data() + r * vocab, vocab, token, k);
            expect_logprob_near(static_cast<const float*>(token_lp.data())[r], want.token_logprob,
                                where + " token");
            for (int64_t j = 0; j < k; ++j) {
              EXPECT_EQ(static_cast<const int32_t*>(top_ids.data())[r * k + j], want.top_ids[j])
                  << where << " top " << j;
              expect_logprob_near(static_cast<const float*>(top_lp.data())[r * k + j],
                                  want.top_logprobs[j], where + " top " + std::to_string(j));
            }
          }
        }
      }
    }
  }
}

TEST(LogprobsTest, LogprobsOfARowSumToOne) {
  // Independent of the reference: exp of every id's logprob (K = vocab) sums to 1.
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(3);
  const int64_t vocab = 20;
  std::vector<float> values(vocab);
  std::normal_distribution<float> dist(0.0f, 30.0f);  // wide: most of the mass on a few ids
  for (float& x : values) x = dist(rng);
  ref::HostTensor logits = f32_rows(values, 1, vocab);
  ref::HostTensor tokens(DType::kI32, {1});
  static_cast<int32_t*>(tokens.data())[0] = 4;
  ref::HostTensor token_lp = ref::poisoned(DType::kF32, {1});
  ref::HostTensor top_ids = ref::poisoned(DType::kI32, {1, vocab});
  ref::HostTensor top_lp = ref::poisoned(DType::kF32, {1, vocab});
  ASSERT_TRUE(
      backend
          ->logprobs({logits.view(), tokens.view(), token_lp.view(), top_ids.view(), top_lp.view()})
          .ok());
  double total = 0;
  std::vector<int32_t> ids(static_cast<const int32_t*>(top_ids.data()),
                           static_cast<const int32_t*>(top_ids.data()) + vocab);
  for (int64_t j = 0; j < vocab; ++j)
    total += std::exp(static_cast<const float*>(top_lp.data())[j]);
  EXPECT_NEAR(total, 1.0, 1e-5);
  std::sort(ids.begin(), ids.end());
  for (int32_t j = 0; j < vocab; ++j) EXPECT_EQ(ids[j], j);  // each id once
}

TEST(LogprobsTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  ref::HostTensor logits = f32_rows(std::vector<float>(12, 0.0f), 3, 4);
  ref::HostTensor tokens(DType::kI32, {3});
  ref::HostTensor bad_token(DType::kI32, {3});
  static_cast<int32_t*>(bad_token.data())[1] = 4;  // == vocab
  ref::HostTensor token_lp(DType::kF32, {3}), ids2(DType::kI32, {3, 2}), lp2(DType::kF32, {3, 2});
  ref::HostTensor ids5(DType::kI32, {3, 5}), lp5(DType::kF32, {3, 5});  // K > vocab
  ref::HostTensor lp3(DType::kF32, {3, 3}), ids_f32(DType::kF32, {3, 2});
  ref::HostTensor tokens2(DType::kI32, {2});
  for (const Status& s :
       {backend->logprobs(
            {logits.view(), bad_token.view(), token_lp.view(), ids2.view(), lp2.view()}),
        backend->logprobs({logits.view(), tokens.view(), token_lp.view(), ids5.view(), lp5.view()}),
        backend->logprobs({logits.view(), tokens.view(), token_lp.view(), ids2.view(), lp3.view()}),
        backend->logprobs(
            {logits.view(), tokens.view(), token_lp.view(), ids_f32.view(), lp2.view()}),
        backend->logprobs(
            {logits.view(), tokens2.view(), token_lp.view(), ids2.view(), lp2.view()}),
        backend->logprobs(
            {logits.view(), tokens.view(), token_lp.view(), ids2.view(), ids2.view()})}) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("logprobs: "), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace pagoda
