// StepInputs: a step's index and sampling inputs on the device, uploaded in one go.
//
// Why: a step has about ten small host arrays (token ids, positions, slot mapping, sequence
// lengths, query starts, block tables, sampled rows, sampling parameters, penalty tables). One
// synchronous copy each costs a round trip to the GPU apiece before the first kernel can start.
// Here they are packed into one host staging buffer (page-locked on a GPU: Backend::
// allocate_staging) laid out like one device buffer, and go over in at most two asynchronous
// copies (Backend::copy_from_host_async): the regions up to the used part of the block tables,
// and the used part of the penalty tables.
//
// Layout (i32 elements; offsets fixed by the capacities, so the device pointers a captured step
// graph recorded stay valid until the capacities grow):
//   token_ids [Ct] | positions [Ct] | slot_mapping [Ct] | seq_lens [Cs] | query_start [Cs + 1] |
//   sample_rows [Cr] | sample_params [Cr x kSampleRowWords] | penalty_start [Cr + 1] |
//   block_tables [Ce] | penalty ids [P] then counts [P] (within 2 Cp)
// The staging buffer is rewritten only by the next upload(), which LlamaModel::launch calls
// after collect() waited for the previous step (and marked its upload done): an in-flight copy
// never reads a half-written step.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace pagoda {

struct ForwardBatch;

class StepInputs {
 public:
  struct Capacity {
    int tokens = 0, seqs = 0, block_entries = 0, sample_rows = 0, penalties = 0;
  };

  // Grows every capacity to at least `want`'s. *moved: whether the device buffer was replaced
  // (device pointers handed out before are stale). On failure every capacity is 0, so the next
  // call allocates again.
  Status reserve(Backend* backend, const Capacity& want, bool* moved);
  const Capacity& capacity() const { return cap_; }
  size_t device_bytes() const { return device_.size(); }  // the staging copy is host memory

  // Packs `batch` (validated, within the capacity) into the staging buffer and queues the
  // copies on the backend's stream. If the last upload's copies were not marked done (a step
  // that failed before its outputs came back), waits for the stream first: the staging buffer
  // is never rewritten while a copy may still read it.
  Status upload(Backend* backend, const ForwardBatch& batch);
  // The caller has synchronized with the stream since the last upload (LlamaModel::collect, or
  // a failed launch that could still wait for what it had queued).
  void mark_done() { in_flight_ = false; }

  // Device views of the regions (the first n elements of each).
  TensorView token_ids(int64_t n) const { return view(o_tokens_, n); }
  TensorView positions(int64_t n) const { return view(o_positions_, n); }
  TensorView slot_mapping(int64_t n) const { return view(o_slots_, n); }
  TensorView seq_lens(int64_t n) const { return view(o_seq_lens_, n); }
  TensorView query_start(int64_t n) const { return view(o_query_start_, n); }
  TensorView sample_rows(int64_t n) const { return view(o_sample_rows_, n); }
  TensorView sample_params(int64_t rows) const;  // [rows, kSampleRowWords]
  TensorView penalty_start(int64_t n) const { return view(o_penalty_start_, n); }
  TensorView block_tables(int64_t rows, int64_t width) const;  // [rows, width]
  // The penalty tables of the last upload: P ids, then P counts.
  TensorView penalty_ids(int64_t P) const { return view(o_penalties_, P); }
  TensorView penalty_counts(int64_t P) const { return view(o_penalties_ + P, P); }

 private:
  TensorView view(int64_t offset, int64_t n) const;
  int32_t* staged(int64_t offset) const { return static_cast<int32_t*>(staging_.data()) + offset; }

  Capacity cap_;
  bool in_flight_ = false;  // copies of the last upload may still be reading staging_
  Device device_kind_ = Device::kCpu;
  DeviceBuffer device_, staging_;
  int64_t o_tokens_ = 0, o_positions_ = 0, o_slots_ = 0, o_seq_lens_ = 0, o_query_start_ = 0,
          o_sample_rows_ = 0, o_sample_params_ = 0, o_penalty_start_ = 0, o_block_tables_ = 0,
          o_penalties_ = 0, total_ = 0;
};

}  // namespace pagoda
