// argmax: the lowest index of the row maximum, NaN as -inf, 0 for rows with nothing above -inf;
// against a straightforward reference over odd shapes and planted ties, NaN and infinities.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/argmax_rows.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

// The rule spelled out: the maximum over non-NaN values, then the first index equal to it.
int32_t reference_argmax(const float* row, int64_t n) {
  double max = -INFINITY;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isnan(row[i])) max = std::max<double>(max, row[i]);
  if (max == -INFINITY) return 0;
  for (int64_t i = 0; i < n; ++i)
    if (row[i] == max) return static_cast<int32_t>(i);
  return -1;  // unreachable
}

ref::HostTensor f32_rows(const std::vector<float>& values, int64_t rows, int64_t vocab) {
  ref::HostTensor t(DType::kF32, {rows, vocab});
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

TEST(ArgmaxTest, MatchesTheReferenceOnOddShapesAndSpecialValues) {
  auto backend = make_cpu_backend(2);
  std::mt19937 rng(7);
  for (int64_t vocab : {1, 2, 31, 32, 33, 500, 4097, 32000}) {
    for (int64_t rows : {1, 3, 17}) {
      std::vector<float> values = testing_rows::argmax_rows(rng, rows, vocab);
      ref::HostTensor logits = f32_rows(values, rows, vocab);
      ref::HostTensor out = ref::poisoned(DType::kI32, {rows});
      const Status s = backend->argmax({logits.view(), out.view()});
      ASSERT_TRUE(s.ok()) << s.to_string();
      const int32_t* got = static_cast<const int32_t*>(out.view().data);
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(got[r], reference_argmax(values.data() + r * vocab, vocab))
            << "vocab " << vocab << " row " << r << " (" << testing_rows::kind_name(r) << ")";
    }
  }
}

TEST(ArgmaxTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  ref::HostTensor logits = f32_rows(std::vector<float>(12, 0.0f), 3, 4);
  ref::HostTensor two = ref::poisoned(DType::kI32, {2});
  ref::HostTensor f32_out = ref::poisoned(DType::kF32, {3});
  ref::HostTensor empty_rows = f32_rows({}, 2, 0);
  ref::HostTensor out2 = ref::poisoned(DType::kI32, {2});
  for (const Status& s : {backend->argmax({logits.view(), two.view()}),
                          backend->argmax({logits.view(), f32_out.view()}),
                          backend->argmax({empty_rows.view(), out2.view()})}) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_EQ(s.message().rfind("argmax: ", 0), 0u) << s.message();
  }
}

}  // namespace
}  // namespace pagoda
