// Decode steps as step graphs (LlamaModel::enable_decode_graphs in llama.h).
//
// Why: a decode step of a Llama model queues about a dozen ops per layer; at batch 1 on a GPU
// their launch overhead is a large part of the step (32 layers x 12 launches x a few
// microseconds). A graph replays them as one launch. A graph is fixed: the same pointers and
// the same shapes every replay. So
//  - a step runs padded to a bucket size Bp: padding rows get token 0 at position 0, slot -1
//    (kv_write skips negative slots: they write no KV), seq_len 1 over block-table row 0 (they
//    read block 0, which exists; their outputs are never copied back), and sample row Bp - 1;
//  - block tables are always max_blocks_per_seq wide (unused entries 0);
//  - the indices are uploaded before the replay (StepInputs: one asynchronous copy), into the
//    regions the graph reads;
//  - the graph records the KV cache and the workspace it saw: if either moved, recapture.
// Rows are independent in every op (batch invariance), so a real row's output is the same
// padded or not: tests/model/decode_graph_test.cc checks it bit for bit on the CPU, with a
// backend that records and replays ops the way CUDA graphs do.
#include <algorithm>

#include "models/llama.h"

namespace pagoda {

Status LlamaModel::enable_decode_graphs(std::vector<int> buckets, int max_blocks_per_seq) {
  if (buckets.empty() || max_blocks_per_seq <= 0)
    return InvalidArgument("enable_decode_graphs: needs buckets and max_blocks_per_seq > 0");
  for (size_t i = 0; i < buckets.size(); ++i)
    if (buckets[i] <= 0 || (i > 0 && buckets[i] <= buckets[i - 1]))
      return InvalidArgument("enable_decode_graphs: buckets must be positive and ascending");
  if (!backend_->supports_graphs()) return OkStatus();
  graphs_ = DecodeGraphs{};
  graphs_.buckets = std::move(buckets);
  graphs_.max_blocks_per_seq = max_blocks_per_seq;
  return OkStatus();
}

int LlamaModel::decode_graph_bucket(const ForwardBatch& batch) const {
  const DecodeGraphs& g = graphs_;
  if (g.buckets.empty()) return 0;
  const int T = batch.num_tokens(), B = batch.num_seqs();
  if (T != B || B == 0 || batch.max_blocks_per_seq > g.max_blocks_per_seq ||
      static_cast<int>(batch.sample_rows.size()) > B)
    return 0;
  for (int i = 0; i <= B; ++i)
    if (batch.query_start[i] != i) return 0;  // a row with other than one token
  const auto it = std::lower_bound(g.buckets.begin(), g.buckets.end(), B);
  if (it == g.buckets.end()) return 0;
  if (std::find(g.failed.begin(), g.failed.end(), *it) != g.failed.end()) return 0;
  return *it;
}

Status LlamaModel::launch_decode_graph(const ForwardBatch& batch, KvCache& cache, int bucket,
                                       bool want_ids) {
  DecodeGraphs& g = graphs_;
  const int B = batch.num_seqs(), W = g.max_blocks_per_seq, w = batch.max_blocks_per_seq;
  ForwardBatch& p = g.padded;
  p.token_ids.assign(batch.token_ids.begin(), batch.token_ids.end());
  p.token_ids.resize(bucket, 0);
  p.positions.assign(batch.positions.begin(), batch.positions.end());
  p.positions.resize(bucket, 0);
  p.slot_mapping.assign(batch.slot_mapping.begin(), batch.slot_mapping.end());
  p.slot_mapping.resize(bucket, -1);
  p.seq_lens.assign(batch.seq_lens.begin(), batch.seq_lens.end());
  p.seq_lens.resize(bucket, 1);
  p.query_start.resize(bucket + 1);
  for (int i = 0; i <= bucket; ++i) p.query_start[i] = i;
  p.max_blocks_per_seq = W;
  p.block_tables.assign(static_cast<size_t>(bucket) * W, 0);
  for (int r = 0; r < B; ++r)
    std::copy_n(batch.block_tables.begin() + static_cast<size_t>(r) * w, w,
                p.block_tables.begin() + static_cast<size_t>(r) * W);
  p.sample_rows.assign(batch.sample_rows.begin(), batch.sample_rows.end());
  p.sample_rows.resize(bucket, bucket - 1);
  // Sampling inputs as they are (the sample op runs outside the graph, on the real rows).
  p.num_logit_rows = batch.num_logit_rows;
  p.sample_params.assign(batch.sample_params.begin(), batch.sample_params.end());
  p.penalty_start.assign(batch.penalty_start.begin(), batch.penalty_start.end());
  p.penalty_ids.assign(batch.penalty_ids.begin(), batch.penalty_ids.end());
  p.penalty_counts.assign(batch.penalty_counts.begin(), batch.penalty_counts.end());

  PAGODA_RETURN_IF_ERROR(reserve(bucket, bucket, bucket * W, bucket,
                                 static_cast<int>(batch.penalty_ids.size()),
                                 batch.num_logprob_rows));
  PAGODA_RETURN_IF_ERROR(inputs_.upload(backend_, p));
  // Every K and V buffer the graphs write into: a new cache may reuse some old addresses and
  // not others, so one pointer is not enough to tell.
  g.cache_now.clear();
  for (int li = 0; li < config_.num_layers; ++li) {
    g.cache_now.push_back(cache.k(li).data);
    g.cache_now.push_back(cache.v(li).data);
  }
  if (g.cache_now != g.cache_seen || ws_.grows != g.workspace_grows) {
    g.captured.clear();  // recorded pointers went stale: the old graphs are replaced as needed
    g.cache_seen.swap(g.cache_now);
    g.workspace_grows = ws_.grows;
  }
  const int64_t real_rows = static_cast<int64_t>(batch.sample_rows.size());
  if (std::find(g.captured.begin(), g.captured.end(), bucket) != g.captured.end()) {
    PAGODA_RETURN_IF_ERROR(backend_->replay_graph(bucket));
    ++g.stats.replays;
    return queue_outputs(batch, real_rows, want_ids);
  }
  // First step of this bucket: run it eagerly (its results are this step's, and every lazy
  // setup of the ops happens outside the capture), then record the same work as the graph.
  PAGODA_RETURN_IF_ERROR(run_layers(cache, bucket, bucket, bucket, W, true));
  Status captured = backend_->begin_capture();
  if (captured.ok()) {
    const Status ran = run_layers(cache, bucket, bucket, bucket, W, true);
    const Status ended = backend_->end_capture(bucket);
    captured = ran.ok() ? ended : ran;
  }
  if (captured.ok()) {
    g.captured.push_back(bucket);
    ++g.stats.captures;
  } else {
    g.failed.push_back(bucket);  // stays eager: correct, only slower
    ++g.stats.failures;
  }
  // Sampling (in queue_outputs) stays out of the graph: its penalty tables change every step.
  return queue_outputs(batch, real_rows, want_ids);
}

}  // namespace pagoda
