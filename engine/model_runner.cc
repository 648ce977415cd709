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
                            Sampled* out) {
  PAGODA_CHECK(wants_logits.empty() || wants_logits.size() == plan.seqs.size());
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
  // Sampled rows that want logits first, so that they are one contiguous copy; then the greedy
  // ones, which need only their argmax.
  out->row_of_seq.assign(plan.seqs.size(), -1);
  bool any_greedy = false;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) b.num_logit_rows = static_cast<int>(b.sample_rows.size());
    for (size_t r = 0; r < plan.seqs.size(); ++r) {
      if (!plan.seqs[r].sample) continue;
      const bool wants = wants_logits.empty() || wants_logits[r] != 0;
      if (wants != (pass == 0)) continue;
      any_greedy |= !wants;
      out->row_of_seq[r] = static_cast<int>(b.sample_rows.size());
      b.sample_rows.push_back(b.query_start[r + 1] - 1);  // the sequence's last token
    }
  }
  return model_->forward(b, cache_, &out->logits, any_greedy ? &out->greedy_ids : nullptr);
}

}  // namespace pagoda
