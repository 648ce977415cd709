// embedding: exact rows of f32/f16/bf16 tables, odd dims; out-of-vocab ids are errors.
#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

TEST(EmbeddingTest, CopiesAndWidensRows) {
  auto backend = make_cpu_backend(2);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t dim : {1, 7, 64, 100, 2051}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " dim=" << dim);
      std::mt19937 rng(static_cast<uint32_t>(dim));
      const int64_t vocab = 50;
      HostTensor table = ref::random_tensor(rng, dtype, {vocab, dim});
      const std::vector<int32_t> ids = {0, 49, 3, 3, 17, 48, 1};
      HostTensor token_ids = ref::i32_tensor(ids);
      HostTensor out = ref::poisoned(DType::kF32, {7, dim});
      ASSERT_TRUE(backend->embedding({table.view(), token_ids.view(), out.view()}).ok());
      std::vector<double> want;
      for (int32_t id : ids) {
        for (int64_t i = 0; i < dim; ++i) want.push_back(table.get(id * dim + i));
      }
      EXPECT_TRUE(ref::all_close(out.f32(), want, 0.0, 0.0));
    }
  }
}

TEST(EmbeddingTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(1);
  HostTensor table = ref::random_tensor(rng, DType::kBF16, {10, 8});
  HostTensor out = ref::poisoned(DType::kF32, {2, 8});
  HostTensor out_bad = ref::poisoned(DType::kF32, {2, 9});
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("embedding: " + needle), std::string::npos) << s.message();
  };
  HostTensor too_big = ref::i32_tensor({3, 10});
  HostTensor negative = ref::i32_tensor({-1, 0});
  HostTensor ok_ids = ref::i32_tensor({9, 0});
  expect_invalid(backend->embedding({table.view(), too_big.view(), out.view()}), "token_ids");
  expect_invalid(backend->embedding({table.view(), negative.view(), out.view()}), "token_ids");
  expect_invalid(backend->embedding({table.view(), ok_ids.view(), out_bad.view()}), "out");
  HostTensor float_ids = ref::random_tensor(rng, DType::kF32, {2});
  expect_invalid(backend->embedding({table.view(), float_ids.view(), out.view()}), "token_ids");
  EXPECT_TRUE(backend->embedding({table.view(), ok_ids.view(), out.view()}).ok());
}

}  // namespace
}  // namespace pagoda
