// StepPlan: what one engine step computes, as decided by Scheduler::schedule(); and the small
// types that flow back into Scheduler::update(). Pure data over integers.
//
// How the model runner turns a plan into a flat ragged batch (DESIGN.md §2), for each
// ScheduledSeq s at batch row r:
//   token_ids    += s.token_ids                      (s.num_tokens ids; with s.input_pending
//                                                     the token the previous plan samples)
//   positions    += s.start, ..., s.start + s.num_tokens - 1
//   slot_mapping += kv_slot(s.block_table, block_size, pos) for each of those positions
//   seq_lens[r]   = s.start + s.num_tokens            (the context the step attends over)
//   block_tables[r] = s.block_table                   (covers all seq_lens[r] positions)
//   sample_rows  += the last token's row, if s.sample
// A shared (prefix-cached) block is never written: every written position lies after the
// shared prefix.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace pagoda {

using RequestId = int64_t;

// Why a request left the scheduler. Every request added ends exactly once, with one of these.
enum class EndReason : uint8_t {
  kStop,         // the engine said so: EOS, a stop token id, a stop string (update / finish)
  kMaxTokens,    // the scheduler: its output reached max_tokens (update)
  kMaxModelLen,  // the scheduler: prompt + output reached max_model_len (update)
  kAborted,      // abort(): cancel, deadline, disconnect, shutdown (reported by schedule)
  kError,        // the engine gave up on it (finish)
};
const char* end_reason_name(EndReason r);

struct ScheduledSeq {
  RequestId id = 0;
  int32_t start = 0;       // positions [start, start + num_tokens) are computed this step
  int32_t num_tokens = 0;  // 1 for a decode; up to the budget for a prefill chunk
  // After this step every known token is computed: sample the next token from the logits of
  // this sequence's last row and pass it to update(). False for a partial prefill chunk.
  bool sample = false;
  bool admitted = false;  // taken from the waiting queue this step (first time or resumed)
  bool resumed = false;   // admitted again after a preemption (recomputes prompt + output)
  // Admitted only: leading tokens found in the prefix cache (== start; a multiple of the block
  // size; 0 otherwise or with prefix caching off).
  int32_t num_cached_tokens = 0;
  // Lookahead only (scheduler.h): a decode whose input token is the one this request samples
  // in the plan before, not known when this plan was made; token_ids is then empty.
  bool input_pending = false;
  // Views into the scheduler's state, valid until the next update(), finish() or schedule().
  std::span<const int32_t> token_ids;    // the num_tokens ids at positions [start, ...)
  std::span<const int32_t> block_table;  // the request's blocks in order (covers start + n)
};

// The KV slot that holds position pos of a sequence with this block table.
inline int32_t kv_slot(std::span<const int32_t> block_table, int block_size, int pos) {
  return block_table[pos / block_size] * block_size + pos % block_size;
}

struct StepPlan {
  uint64_t step = 0;               // 1, 2, ...: pairs a plan with its update()
  std::vector<ScheduledSeq> seqs;  // running requests in policy order, then admitted ones
  // Preempted this step (blocks freed; back in the waiting queue, their output kept). Not in
  // seqs. Informational: nothing for the engine to do but count and trace.
  std::vector<RequestId> preempted;
  // Ended this step because of abort() (blocks freed): report each as cancelled. Not in seqs.
  std::vector<RequestId> aborted;
  int32_t num_batched_tokens = 0;  // sum of num_tokens <= max_num_batched_tokens
  bool empty() const { return seqs.empty(); }
};

// One sampled token, for a ScheduledSeq with sample == true. stop: the engine's stop
// conditions (EOS unless ignored, stop token ids, stop strings) say this token ends the request.
struct SampledToken {
  RequestId id = 0;
  int32_t token = 0;
  bool stop = false;
};

struct EndedRequest {
  RequestId id = 0;
  EndReason reason = EndReason::kStop;
};

}  // namespace pagoda
