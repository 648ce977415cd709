// stories260K on the GPU in f32 reproduces llama2.c's greedy ids
// (tests/data/stories260K_greedy.json), and the same requests batched together give the same ids as
// alone. Skips without a device.
#include <gtest/gtest.h>

#include "engine/batch_generator.h"
#include "kernels/backend_factory.h"
#include "kernels/cuda/cuda_backend.h"
#include "models/llama.h"
#include "tests/model/stories_reference.h"

namespace pagoda {
namespace {

const std::string kRoot = PAGODA_SOURCE_DIR;

TEST(StoriesGpuTest, F32GreedyReproducesLlama2cAloneAndBatched) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  auto loaded = load_model(kRoot + "/assets/models/stories260K");
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  auto backend = make_backend("cuda:0/f32", 0);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  auto model = LlamaModel::create(*loaded, backend->get());
  ASSERT_TRUE(model.ok()) << model.status().to_string();

  std::vector<GenerationRequest> reqs;
  std::vector<std::vector<int>> expected;
  for (const testing_reference::ReferenceCase& c : testing_reference::load_stories_reference()) {
    GenerationRequest r;
    r.prompt_ids = c.prompt_ids;
    r.params = testing_reference::reference_params(c);
    reqs.push_back(r);
    expected.push_back(c.generated_ids);
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    BatchGenerator gen(model->get(), GeneratorOptions{});
    auto out = gen.run({reqs[i]});
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    EXPECT_EQ((*out)[0].output_ids, expected[i]) << "case " << i << " alone";
  }
  GeneratorOptions chunked;
  chunked.max_batched_tokens = 7;
  BatchGenerator gen(model->get(), chunked);
  auto together = gen.run(reqs);
  ASSERT_TRUE(together.ok()) << together.status().to_string();
  for (size_t i = 0; i < reqs.size(); ++i)
    EXPECT_EQ((*together)[i].output_ids, expected[i]) << "case " << i << " batched";
}

}  // namespace
}  // namespace pagoda
