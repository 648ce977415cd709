// ModelRunner: turns a StepPlan into the model's flat ragged batch (DESIGN.md §2), runs the
// forward pass and hands back the logits of the rows to sample. It owns the KV cache memory;
// which blocks belong to whom is the scheduler's business.
#pragma once

#include <memory>
#include <vector>

#include "engine/step_plan.h"
#include "models/llama.h"

namespace pagoda {

class ModelRunner {
 public:
  static StatusOr<std::unique_ptr<ModelRunner>> create(LlamaModel* model, int num_blocks,
                                                       int block_size);

  // Runs the plan. On success *logits holds [R, vocab] rows, one per seq with sample == true,
  // in plan order.
  Status execute(const StepPlan& plan, std::vector<float>* logits);
  int vocab_size() const { return model_->config().vocab_size; }

 private:
  ModelRunner(LlamaModel* model, KvCache cache, int block_size)
      : model_(model), cache_(std::move(cache)), block_size_(block_size) {}

  LlamaModel* model_;
  KvCache cache_;
  int block_size_;
  ForwardBatch batch_;  // reused across steps: no allocation once the sizes have been seen
};

}  // namespace pagoda
