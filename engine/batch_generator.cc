#include "engine/batch_generator.h"

#include <algorithm>
#include <chrono>
#include <random>

namespace pagoda {

namespace {

struct Sequence {
  const GenerationRequest* request = nullptr;
  std::vector<int> tokens;  // prompt, then outputs
  int prompt_len = 0;
  int num_computed = 0;  // tokens whose K/V are in the cache
  std::vector<int32_t> blocks;
  uint64_t seed = 0;
  bool done = false;
};

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

BatchGenerator::BatchGenerator(LlamaModel* model, GeneratorOptions options)
    : model_(model), options_(options) {}

StatusOr<std::vector<GenerationResult>> BatchGenerator::run(
    const std::vector<GenerationRequest>& requests, const TokenCallback& on_token) {
  stats_ = {};
  const ModelConfig& cfg = model_->config();
  const int bs = options_.block_size;
  if (bs <= 0) return InvalidArgument("generator: block_size must be positive");
  if (options_.max_batched_tokens <= 0)
    return InvalidArgument("generator: max_batched_tokens must be positive");
  const int max_context =
      options_.max_context > 0 ? options_.max_context : cfg.max_position_embeddings;

  std::vector<Sequence> seqs(requests.size());
  std::random_device entropy;
  int needed_blocks = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    PAGODA_RETURN_IF_ERROR(r.params.validate());
    if (r.prompt_ids.empty())
      return InvalidArgument("generator: request " + std::to_string(i) + " has an empty prompt");
    if (static_cast<int>(r.prompt_ids.size()) >= max_context)
      return InvalidArgument("generator: request " + std::to_string(i) + " has a prompt of " +
                             std::to_string(r.prompt_ids.size()) +
                             " tokens; the context limit is " + std::to_string(max_context));
    for (int id : r.prompt_ids)
      if (id < 0 || id >= cfg.vocab_size)
        return InvalidArgument("generator: token id " + std::to_string(id) +
                               " outside the vocabulary of " + std::to_string(cfg.vocab_size));
    Sequence& s = seqs[i];
    s.request = &r;
    s.tokens = r.prompt_ids;
    s.prompt_len = static_cast<int>(r.prompt_ids.size());
    s.seed = r.params.seed ? *r.params.seed : (uint64_t{entropy()} << 32 | entropy());
    const int longest = std::min<int64_t>(max_context, int64_t{s.prompt_len} + r.params.max_tokens);
    needed_blocks += (longest + bs - 1) / bs;
    stats_.prompt_tokens += s.prompt_len;
  }
  const int num_blocks = options_.num_blocks > 0 ? options_.num_blocks : std::max(1, needed_blocks);
  PAGODA_ASSIGN_OR_RETURN(
      KvCache cache, KvCache::create(model_->backend(), model_->kv_cache_shape(num_blocks, bs)));
  BlockAllocator allocator(num_blocks);

  std::vector<GenerationResult> results(requests.size());
  Sampler sampler;
  ForwardBatch batch;
  std::vector<float> logits;
  std::vector<int> sampled;  // sequence index per sample row
  const auto start = Clock::now();
  bool first_token_seen = false;

  for (;;) {
    batch = {};
    sampled.clear();
    batch.query_start.push_back(0);
    int budget = options_.max_batched_tokens;
    bool is_prefill_step = false;
    std::vector<int> in_batch;
    for (size_t i = 0; i < seqs.size() && budget > 0; ++i) {
      Sequence& s = seqs[i];
      if (s.done) continue;
      const int n = std::min<int>(static_cast<int>(s.tokens.size()) - s.num_computed, budget);
      const int new_len = s.num_computed + n;
      const int need = (new_len + bs - 1) / bs - static_cast<int>(s.blocks.size());
      if (need > 0 && !allocator.allocate(need, &s.blocks)) {
        return ResourceExhausted("generator: the KV cache (" + std::to_string(num_blocks) +
                                 " blocks) is too small for this batch");
      }
      for (int j = 0; j < n; ++j) {
        const int pos = s.num_computed + j;
        batch.token_ids.push_back(s.tokens[pos]);
        batch.positions.push_back(pos);
        batch.slot_mapping.push_back(s.blocks[pos / bs] * bs + pos % bs);
      }
      batch.seq_lens.push_back(new_len);
      batch.query_start.push_back(static_cast<int32_t>(batch.token_ids.size()));
      if (new_len == static_cast<int>(s.tokens.size())) {
        batch.sample_rows.push_back(static_cast<int32_t>(batch.token_ids.size()) - 1);
        sampled.push_back(static_cast<int>(i));
      }
      if (static_cast<int>(s.tokens.size()) == s.prompt_len) is_prefill_step = true;
      in_batch.push_back(static_cast<int>(i));
      budget -= n;
    }
    if (in_batch.empty()) break;
    batch.max_blocks_per_seq = 1;
    for (int i : in_batch)
      batch.max_blocks_per_seq = std::max<int>(batch.max_blocks_per_seq, seqs[i].blocks.size());
    batch.block_tables.assign(in_batch.size() * batch.max_blocks_per_seq, 0);
    for (size_t b = 0; b < in_batch.size(); ++b) {
      const auto& blocks = seqs[in_batch[b]].blocks;
      std::copy(blocks.begin(), blocks.end(),
                batch.block_tables.begin() + b * batch.max_blocks_per_seq);
    }

    const auto step_start = Clock::now();
    PAGODA_RETURN_IF_ERROR(model_->forward(batch, cache, &logits));
    for (size_t b = 0; b < in_batch.size(); ++b) seqs[in_batch[b]].num_computed = batch.seq_lens[b];
    for (size_t r = 0; r < sampled.size(); ++r) {
      Sequence& s = seqs[sampled[r]];
      const SamplingParams& p = s.request->params;
      const std::span<const float> row(logits.data() + r * cfg.vocab_size, cfg.vocab_size);
      const std::span<const int> prompt(s.tokens.data(), s.prompt_len);
      const std::span<const int> output(s.tokens.data() + s.prompt_len,
                                        s.tokens.size() - s.prompt_len);
      const int token =
          sampler.sample(row, p, prompt, output, s.seed, static_cast<int64_t>(s.tokens.size()));
      s.tokens.push_back(token);
      GenerationResult& res = results[sampled[r]];
      res.output_ids.push_back(token);
      ++stats_.generated_tokens;
      if (on_token) on_token(sampled[r], token);
      const bool eos =
          !p.ignore_eos && std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), token) !=
                               cfg.eos_token_ids.end();
      const bool stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) !=
                           p.stop_token_ids.end();
      if (eos || stop_id) {
        res.finish = FinishReason::kStop;
        s.done = true;
      } else if (static_cast<int>(res.output_ids.size()) >= p.max_tokens) {
        res.finish = FinishReason::kLength;
        s.done = true;
      } else if (static_cast<int>(s.tokens.size()) > max_context) {
        res.finish = FinishReason::kLength;
        s.done = true;
      }
      if (s.done) {
        allocator.free(s.blocks);
        s.blocks.clear();
      }
    }
    const double step_seconds = seconds_since(step_start);
    (is_prefill_step ? stats_.prefill_seconds : stats_.decode_seconds) += step_seconds;
    ++stats_.steps;
    if (!first_token_seen && !sampled.empty()) {
      first_token_seen = true;
      stats_.first_token_seconds = seconds_since(start);
    }
  }
  return results;
}

}  // namespace pagoda
