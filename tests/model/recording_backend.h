// RecordingBackend: the CPU backend made to behave like a GPU stream where the model's step
// code can tell the difference, for tests of decode graphs (decode_graph_test.cc) and of
// LlamaModel::launch/collect (step_launch_test.cc):
//  - step graphs: the ops queued between begin_capture() and end_capture() are recorded and run
//    again by replay_graph(), as CUDA graphs do (capture runs nothing; replay reruns the recorded
//    arguments, pointers and shapes unchanged); allocations, copies and synchronize() fail while
//    capturing;
//  - the sample op leaves its logits poisoned (on a GPU they are its scratch);
//  - device-to-host copies queued with copy_to_host_async() land only at the next synchronizing
//    call (synchronize, or a synchronous copy), as on a stream: the destination must be staging
//    memory from allocate_staging() and is filled with poison until then, so code that reads it
//    before waiting sees garbage. The data is taken when the copy is queued, which is what the
//    stream would copy: on the CPU every op queued before it has already run.
#pragma once

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "models/llama.h"

namespace pagoda::testing {

class RecordingBackend final : public Backend {
 public:
  static constexpr unsigned char kPoison = 0xA5;  // an undelivered copy's bytes

  explicit RecordingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  Device device() const override { return inner_->device(); }
  std::string name() const override { return "recording " + inner_->name(); }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  StatusOr<DeviceBuffer> allocate(size_t bytes) override {
    if (capturing_) return FailedPrecondition("allocate while capturing");
    ++allocations;
    allocated_bytes += bytes;
    return inner_->allocate(bytes);
  }
  StatusOr<DeviceBuffer> allocate_staging(size_t bytes) override {
    if (capturing_) return FailedPrecondition("allocate_staging while capturing");
    ++staging_allocations;
    PAGODA_ASSIGN_OR_RETURN(DeviceBuffer made, inner_->allocate_staging(bytes));
    if (made.data() == nullptr) return made;
    // Remembered while it lives, so copy_to_host_async can insist on staging memory.
    auto owned = std::make_shared<DeviceBuffer>(std::move(made));
    staging_[owned->data()] = owned->size();
    return DeviceBuffer(owned->data(), owned->size(), [this, owned](void* p) {
      staging_.erase(p);
      owned->reset();
    });
  }
  Status copy_from_host(void* dst, const void* src, size_t bytes) override {
    if (capturing_) return FailedPrecondition("copy_from_host while capturing");
    ++sync_uploads;
    deliver();  // a synchronous copy waits for the stream
    return inner_->copy_from_host(dst, src, bytes);
  }
  Status copy_from_host_async(void* dst, const void* src, size_t bytes) override {
    if (capturing_) return FailedPrecondition("copy_from_host_async while capturing");
    ++async_uploads;
    return inner_->copy_from_host_async(dst, src, bytes);
  }
  Status copy_to_host(void* dst, const void* src, size_t bytes) override {
    if (capturing_) return FailedPrecondition("copy_to_host while capturing");
    deliver();
    return inner_->copy_to_host(dst, src, bytes);
  }
  Status copy_on_device_async(void* dst, const void* src, size_t bytes) override {
    if (capturing_) return FailedPrecondition("copy_on_device_async while capturing");
    return inner_->copy_on_device_async(dst, src, bytes);
  }
  Status copy_to_host_async(void* dst, const void* src, size_t bytes) override {
    if (capturing_) return FailedPrecondition("copy_to_host_async while capturing");
    if (bytes == 0) return OkStatus();
    if (!is_staging(dst, bytes))
      return InvalidArgument("copy_to_host_async: the destination is not staging memory");
    Pending p{dst, std::vector<unsigned char>(bytes)};
    PAGODA_RETURN_IF_ERROR(inner_->copy_to_host(p.data.data(), src, bytes));
    std::memset(dst, kPoison, bytes);
    pending_.push_back(std::move(p));
    ++async_downloads;
    return OkStatus();
  }
  Status synchronize() override {
    if (capturing_) return FailedPrecondition("synchronize while capturing");
    ++syncs;
    deliver();
    return inner_->synchronize();
  }
  StatusOr<size_t> available_memory_bytes() const override {
    return inner_->available_memory_bytes();
  }

  Status embedding(const EmbeddingArgs& a) override { return op(&Backend::embedding, a); }
  Status rms_norm(const RmsNormArgs& a) override { return op(&Backend::rms_norm, a); }
  Status matmul(const MatmulArgs& a) override { return op(&Backend::matmul, a); }
  Status rope(const RopeArgs& a) override { return op(&Backend::rope, a); }
  Status swiglu(const SwigluArgs& a) override { return op(&Backend::swiglu, a); }
  Status add(const AddArgs& a) override { return op(&Backend::add, a); }
  Status kv_write(const KvWriteArgs& a) override { return op(&Backend::kv_write, a); }
  Status rope_kv_write(const RopeKvWriteArgs& a) override { return op(&Backend::rope_kv_write, a); }
  Status attention(const AttentionArgs& a) override { return op(&Backend::attention, a); }
  Status gather_rows(const GatherRowsArgs& a) override { return op(&Backend::gather_rows, a); }
  Status argmax(const ArgmaxArgs& a) override { return op(&Backend::argmax, a); }
  Status logprobs(const LogprobsArgs& a) override {
    ++logprobs_calls;
    return op(&Backend::logprobs, a);
  }
  Status sample(const SampleArgs& a) override {
    const int64_t call = sample_calls++;
    if (fail_sample || call == fail_sample_call)
      return Internal("sample: failure injected by the test");
    PAGODA_RETURN_IF_ERROR(op(&Backend::sample, a));
    // On a GPU the op's logits are its scratch (kernels/ops.h SampleArgs): code that reads
    // them after it gets garbage here too.
    if (!capturing_ && a.logits.data != nullptr) {
      std::memset(a.logits.data, kPoison, static_cast<size_t>(a.logits.nbytes()));
    }
    return OkStatus();
  }

  bool supports_graphs() const override { return true; }
  Status begin_capture() override {
    if (capturing_) return FailedPrecondition("already capturing");
    capturing_ = true;
    recording_.clear();
    return OkStatus();
  }
  Status end_capture(int64_t key) override {
    if (!capturing_) return FailedPrecondition("not capturing");
    capturing_ = false;
    graphs_[key] = std::move(recording_);
    recording_.clear();
    return OkStatus();
  }
  Status replay_graph(int64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return NotFound("no graph " + std::to_string(key));
    for (const auto& run : it->second) PAGODA_RETURN_IF_ERROR(run());
    return OkStatus();
  }

  // Queued device-to-host copies not delivered yet, and where the last one goes.
  size_t pending_downloads() const { return pending_.size(); }
  const void* last_download_dst() const { return pending_.empty() ? nullptr : pending_.back().dst; }

  int64_t sync_uploads = 0, async_uploads = 0, async_downloads = 0, syncs = 0;
  int64_t allocations = 0, staging_allocations = 0;
  size_t allocated_bytes = 0;     // by allocate(): device memory (never decreases)
  bool fail_sample = false;       // sample() fails: a step that breaks after its uploads
  int64_t sample_calls = 0;       // sample() calls so far
  int64_t logprobs_calls = 0;     // logprobs() calls so far
  int64_t fail_sample_call = -1;  // the one sample() call (0-based) that fails, if >= 0

 private:
  struct Pending {
    void* dst;
    std::vector<unsigned char> data;
  };

  template <typename Args>
  Status op(Status (Backend::*fn)(const Args&), const Args& a) {
    if (!capturing_) return (inner_.get()->*fn)(a);
    recording_.push_back([this, fn, a] { return (inner_.get()->*fn)(a); });
    return OkStatus();
  }
  bool is_staging(const void* p, size_t bytes) const {
    const auto* c = static_cast<const unsigned char*>(p);
    auto it = staging_.upper_bound(const_cast<void*>(p));
    if (it == staging_.begin()) return false;
    --it;
    const auto* start = static_cast<const unsigned char*>(it->first);
    return c >= start && c + bytes <= start + it->second;
  }
  void deliver() {
    for (const Pending& p : pending_) std::memcpy(p.dst, p.data.data(), p.data.size());
    pending_.clear();
  }

  std::unique_ptr<Backend> inner_;
  bool capturing_ = false;
  std::vector<std::function<Status()>> recording_;
  std::map<int64_t, std::vector<std::function<Status()>>> graphs_;
  std::map<void*, size_t> staging_;  // live allocate_staging() buffers: start, size
  std::vector<Pending> pending_;
};

// B decode rows at `step`: row i has context 5 + 3 i + step tokens in blocks [4 i, 4 i + 4)
// (16-token blocks). Every row is sampled, the last first.
inline ForwardBatch decode_rows(int B, int step) {
  ForwardBatch b;
  b.max_blocks_per_seq = 4;
  b.query_start = {0};
  for (int i = 0; i < B; ++i) {
    const int pos = 5 + 3 * i + step;
    b.token_ids.push_back(3 + (i * 37 + step * 11) % 500);
    b.positions.push_back(pos);
    b.slot_mapping.push_back(4 * i * 16 + pos);
    for (int k = 0; k < 4; ++k) b.block_tables.push_back(4 * i + k);
    b.seq_lens.push_back(pos + 1);
    b.query_start.push_back(i + 1);
  }
  b.sample_rows = {B - 1};  // every row, in another order
  if (B > 1) b.sample_rows.push_back(0);
  for (int i = 1; i + 1 < B; ++i) b.sample_rows.push_back(i);
  return b;
}

}  // namespace pagoda::testing
