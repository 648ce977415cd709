#include <gtest/gtest.h>

#include "models/llama.h"

namespace pagoda {
namespace {

TEST(ConvertTensorTest, RoundsEveryElementAndKeepsTheShape) {
  std::vector<float> src = {1.0f, -2.5f, 1.0f + 0x1.8p-8f, 65504.0f, 1e-8f, 3.14159f};
  TensorView view(src.data(), DType::kF32, {2, 3});
  HostBuffer storage;
  const TensorView bf = convert_tensor(view, DType::kBF16, &storage);
  EXPECT_EQ(bf.dtype, DType::kBF16);
  EXPECT_EQ(bf.ndim, 2);
  EXPECT_EQ(bf.shape[0], 2);
  EXPECT_EQ(bf.shape[1], 3);
  for (size_t i = 0; i < src.size(); ++i)
    EXPECT_EQ(load_as_f32(bf.data, DType::kBF16, i), bf16_to_f32(f32_to_bf16(src[i]))) << i;
  // And back to f32 from f16.
  HostBuffer half_storage, back_storage;
  const TensorView half = convert_tensor(view, DType::kF16, &half_storage);
  const TensorView back = convert_tensor(half, DType::kF32, &back_storage);
  for (size_t i = 0; i < src.size(); ++i)
    EXPECT_EQ(back.as<float>()[i], f16_to_f32(f32_to_f16(src[i]))) << i;
}

}  // namespace
}  // namespace pagoda
