// gather_rows: exact row copies; rows outside [0, T) are errors.
#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

TEST(GatherRowsTest, CopiesRequestedRows) {
  auto backend = make_cpu_backend(2);
  std::mt19937 rng(5);
  const int64_t T = 9, dim = 13;
  HostTensor src = ref::random_tensor(rng, DType::kF32, {T, dim});
  const std::vector<int32_t> rows = {8, 0, 4, 4};
  HostTensor row_ids = ref::i32_tensor(rows);
  HostTensor out = ref::poisoned(DType::kF32, {4, dim});
  ASSERT_TRUE(backend->gather_rows({src.view(), row_ids.view(), out.view()}).ok());
  std::vector<double> want;
  for (int32_t r : rows) {
    for (int64_t i = 0; i < dim; ++i) want.push_back(src.get(r * dim + i));
  }
  EXPECT_TRUE(ref::all_close(out.f32(), want, 0.0, 0.0));
}

TEST(GatherRowsTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(5);
  HostTensor src = ref::random_tensor(rng, DType::kF32, {3, 4});
  HostTensor out = ref::poisoned(DType::kF32, {2, 4});
  HostTensor beyond = ref::i32_tensor({0, 3});
  HostTensor negative = ref::i32_tensor({-1, 0});
  HostTensor three = ref::i32_tensor({0, 1, 2});
  for (const HostTensor* rows : {&beyond, &negative, &three}) {
    const Status s = backend->gather_rows({src.view(), rows->view(), out.view()});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_EQ(s.message().rfind("gather_rows: ", 0), 0u) << s.message();
  }
}

}  // namespace
}  // namespace pagoda
