#include <gtest/gtest.h>

#include <cstring>

#include "models/synthetic.h"
#include "models/weights.h"

namespace pagoda {
namespace {

TEST(SyntheticModelTest, LoadsByNameWithEveryTensorAtItsShape) {
  auto m = load_model("synthetic:stories260K:f16");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->config.hidden_size, 64);
  EXPECT_EQ(m->config.dtype, DType::kF16);
  auto wq = m->weights.get("model.layers.4.self_attn.q_proj.weight", {64, 64});
  ASSERT_TRUE(wq.ok()) << wq.status().to_string();
  EXPECT_EQ(wq->dtype, DType::kF16);
  EXPECT_TRUE(m->weights.get("model.layers.0.mlp.down_proj.weight", {64, 172}).ok());
  // Tied: no separate LM head.
  EXPECT_FALSE(m->weights.contains("lm_head.weight"));
  // Same seed, same weights: deterministic.
  auto again = load_model("synthetic:stories260K:f16");
  ASSERT_TRUE(again.ok());
  const TensorView a = m->weights.tensors().at("model.embed_tokens.weight");
  const TensorView b = again->weights.tensors().at("model.embed_tokens.weight");
  EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0);
}

TEST(SyntheticModelTest, BadSpecsNameTheProblem) {
  auto unknown = load_model("synthetic:gpt-17");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown synthetic shape 'gpt-17'"), std::string::npos);
  auto dtype = load_model("synthetic:stories260K:int4");
  ASSERT_FALSE(dtype.ok());
  EXPECT_NE(dtype.status().message().find("dtype"), std::string::npos);
}

}  // namespace
}  // namespace pagoda
