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
                            const RowSampling* sampling, Sampled* out,
                            std::span<const uint8_t> top_logprobs) {
  prepare(plan, wants_logits, top_logprobs);
  PAGODA_CHECK(pending_.empty());  // input_pending rows need launch() with their tokens
  PAGODA_RETURN_IF_ERROR(launch(sampling, {}, out));
  return collect(out);
}

void ModelRunner::prepare(const StepPlan& plan, std::span<const uint8_t> wants_logits,
                          std::span<const uint8_t> top_logprobs) {
  PAGODA_CHECK(wants_logits.empty() || wants_logits.size() == plan.seqs.size());
  PAGODA_CHECK(top_logprobs.empty() || top_logprobs.size() == plan.seqs.size());
  ForwardBatch& b = batch_;
  b.token_ids.clear();
  b.positions.clear();
  b.slot_mapping.clear();
  b.seq_lens.clear();
  b.query_start.assign(1, 0);
  b.sample_rows.clear();
  pending_.clear();
  num_seqs_ = plan.seqs.size();
  int max_blocks = 1;
  for (const ScheduledSeq& s : plan.seqs)
    max_blocks = std::max<int>(max_blocks, s.block_table.size());
  b.max_blocks_per_seq = max_blocks;
  b.block_tables.assign(plan.seqs.size() * max_blocks, 0);
  for (size_t r = 0; r < plan.seqs.size(); ++r) {
    const ScheduledSeq& s = plan.seqs[r];
    if (s.input_pending) {
      PAGODA_CHECK_EQ(s.num_tokens, 1);
      pending_.push_back({static_cast<int32_t>(b.token_ids.size()), static_cast<int32_t>(r)});
    }
    for (int j = 0; j < s.num_tokens; ++j) {
      const int pos = s.start + j;
      b.token_ids.push_back(s.input_pending ? -1 : s.token_ids[j]);
      b.positions.push_back(pos);
      b.slot_mapping.push_back(kv_slot(s.block_table, block_size_, pos));
    }
    std::copy(s.block_table.begin(), s.block_table.end(), b.block_tables.begin() + r * max_blocks);
    b.seq_lens.push_back(s.start + s.num_tokens);
    b.query_start.push_back(static_cast<int32_t>(b.token_ids.size()));
  }
  // Sampled rows that want logits first, so that they are one contiguous copy; then those that
  // want logprobs from the backend (also contiguous); then the others, which need only their
  // token.
  row_of_seq_.assign(plan.seqs.size(), -1);
  sample_order_.clear();
  any_argmax_row_ = false;
  b.num_top_logprobs = 0;
  for (int pass = 0; pass < 3; ++pass) {
    if (pass == 1) b.num_logit_rows = static_cast<int>(b.sample_rows.size());
    if (pass == 2) b.num_logprob_rows = static_cast<int>(b.sample_rows.size()) - b.num_logit_rows;
    for (size_t r = 0; r < plan.seqs.size(); ++r) {
      if (!plan.seqs[r].sample) continue;
      const bool wants = wants_logits.empty() || wants_logits[r] != 0;
      const int top = top_logprobs.empty() ? 0 : top_logprobs[r];
      if ((wants ? 0 : top > 0 ? 1 : 2) != pass) continue;
      row_of_seq_[r] = static_cast<int>(b.sample_rows.size());
      sample_order_.push_back(static_cast<int>(r));
      b.sample_rows.push_back(b.query_start[r + 1] - 1);  // the sequence's last token
      any_argmax_row_ |= !wants;
      if (pass == 1)
        b.num_top_logprobs = std::max(b.num_top_logprobs, std::min(top, kMaxTopLogprobs));
    }
  }
}

Status ModelRunner::launch(const RowSampling* sampling, std::span<const int32_t> pending_tokens,
                           Sampled* out) {
  ForwardBatch& b = batch_;
  PAGODA_CHECK(sampling == nullptr ||
               (sampling->params.size() == num_seqs_ && sampling->penalty_ids.size() == num_seqs_ &&
                sampling->penalty_counts.size() == num_seqs_));
  PAGODA_CHECK(pending_.empty() || pending_tokens.size() == num_seqs_);
  for (const auto& [t, r] : pending_) b.token_ids[t] = pending_tokens[r];
  b.sample_params.clear();
  b.penalty_start.assign(1, 0);
  b.penalty_ids.clear();
  b.penalty_counts.clear();
  if (sampling != nullptr) {
    for (const int r : sample_order_) {
      b.sample_params.push_back(sampling->params[r]);
      const std::span<const int32_t> ids = sampling->penalty_ids[r];
      const std::span<const int32_t> counts = sampling->penalty_counts[r];
      PAGODA_CHECK_EQ(ids.size(), counts.size());
      b.penalty_ids.insert(b.penalty_ids.end(), ids.begin(), ids.end());
      b.penalty_counts.insert(b.penalty_counts.end(), counts.begin(), counts.end());
      b.penalty_start.push_back(static_cast<int32_t>(b.penalty_ids.size()));
    }
  }
  if (b.sample_params.empty()) b.penalty_start.clear();
  out->row_of_seq.assign(row_of_seq_.begin(), row_of_seq_.end());
  out->logit_rows = b.num_logit_rows;
  out->logits.clear();
  out->ids.clear();
  const bool ids = !sample_order_.empty() && (sampling != nullptr || any_argmax_row_);
  return model_->launch(b, cache_, ids);
}

Status ModelRunner::collect(Sampled* out) {
  return model_->collect(&out->logits, &out->ids, &out->logprobs);
}

}  // namespace pagoda
