#include "engine/model_runner.h"

#include <algorithm>

#include "core/check.h"

namespace pagoda {

StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::create(LlamaModel* model, int num_blocks,
                                                           int block_size) {
  PAGODA_ASSIGN_OR_RETURN(
      KvCache cache,
      KvCache::create(model->backend(), model->kv_cache_shape(num_blocks, block_size)));
  return std::unique_ptr<ModelRunner>(new ModelRunner(model, std::move(cache), block_size));
}

Status ModelRunner::execute(const StepPlan& plan, std::span<const uint8_t> wants_logits,
                            const RowSampling* sampling, Sampled* out) {
  PAGODA_CHECK(wants_logits.empty() || wants_logits.size() == plan.seqs.size());
  PAGODA_CHECK(sampling == nullptr || (sampling->params.size() == plan.seqs.size() &&
                                       sampling->penalty_start.size() == plan.seqs.size() + 1));
  ForwardBatch& b = batch_;
  b.token_ids.clear();
  b.positions.clear();
  b.slot_mapping.clear();
  b.seq_lens.clear();
  b.query_start.assign(1, 0);
  b.sample_rows.clear();
  int max_blocks = 1;
  for (const ScheduledSeq& s : plan.seqs)
    max_blocks = std::max<int>(max_blocks, s.block_table.size());
  b.max_blocks_per_seq = max_blocks;
  b.block_tables.assign(plan.seqs.size() * max_blocks, 0);
  for (size_t r = 0; r < plan.seqs.size(); ++r) {
    const ScheduledSeq& s = plan.seqs[r];
    for (int j = 0; j < s.num_tokens; ++j) {
      const int pos = s.start + j;
      b.token_ids.push_back(s.token_ids[j]);
      b.positions.push_back(pos);
      b.slot_mapping.push_back(kv_slot(s.block_table, block_size_, pos));
    }
    std::copy(s.block_table.begin(), s.block_table.end(), b.block_tables.begin() + r * max_blocks);
    b.seq_lens.push_back(s.start + s.num_tokens);
    b.query_start.push_back(static_cast<int32_t>(b.token_ids.size()));
  }
  // Sampled rows that want logits first, so that they are one contiguous copy; then the others,
  // which need only their token.
  out->row_of_seq.assign(plan.seqs.size(), -1);
  b.sample_params.clear();
  b.penalty_start.assign(1, 0);
  b.penalty_ids.clear();
  b.penalty_counts.clear();
  bool any_on_backend = false;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) b.num_logit_rows = static_cast<int>(b.sample_rows.size());
    for (size_t r = 0; r < plan.seqs.size(); ++r) {
      if (!plan.seqs[r].sample) continue;
      const bool wants = wants_logits.empty() || wants_logits[r] != 0;
      if (wants != (pass == 0)) continue;
      out->row_of_seq[r] = static_cast<int>(b.sample_rows.size());
      b.sample_rows.push_back(b.query_start[r + 1] - 1);  // the sequence's last token
      any_on_backend |= !wants || sampling != nullptr;
      if (sampling == nullptr) continue;
      b.sample_params.push_back(sampling->params[r]);
      const int32_t s0 = sampling->penalty_start[r], s1 = sampling->penalty_start[r + 1];
      b.penalty_ids.insert(b.penalty_ids.end(), sampling->penalty_ids.begin() + s0,
                           sampling->penalty_ids.begin() + s1);
      b.penalty_counts.insert(b.penalty_counts.end(), sampling->penalty_counts.begin() + s0,
                              sampling->penalty_counts.begin() + s1);
      b.penalty_start.push_back(static_cast<int32_t>(b.penalty_ids.size()));
    }
  }
  if (b.sample_params.empty()) b.penalty_start.clear();
  return model_->forward(b, cache_, &out->logits, any_on_backend ? &out->ids : nullptr);
}

}  // namespace pagoda
