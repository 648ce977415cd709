// The Backend interface: one argument struct per op family, implemented once per device
// (kernels/cpu/, kernels/cuda/). models/llama.cc calls these and never knows the device.
//
// Conventions
// - Every TensorView lives on the backend's device (for the CPU backend: host memory).
// - Activations have the backend's activation_dtype() (f32 on the CPU); weights may be
//   f32/f16/bf16; index tensors are i32; logits are always f32.
// - Ops validate shapes and dtypes and return InvalidArgument naming the op and the argument;
//   they never abort on bad arguments.
// - The flat ragged batch: T new tokens from B sequences. Sequence b owns rows
//   [query_start[b], query_start[b+1]) of every [T, ...] tensor; its q_len new tokens sit at
//   positions seq_lens[b] - q_len .. seq_lens[b] - 1 of its context.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/status.h"
#include "core/tensor.h"

namespace pagoda {

// out[t, :] = table[token_ids[t], :]
struct EmbeddingArgs {
  TensorView table;      // [vocab, dim], weight dtype
  TensorView token_ids;  // [T] i32; each id in [0, vocab)
  TensorView out;        // [T, dim], activation dtype
};

// With residual: residual[t] += input[t]; out[t] = rms_norm(residual[t]) * weight.
// Without residual: out[t] = rms_norm(input[t]) * weight.
// rms_norm(x) = x / sqrt(mean(x^2) + eps), computed in f32.
struct RmsNormArgs {
  TensorView input;     // [T, dim], activation dtype
  TensorView residual;  // [T, dim] activation dtype, updated in place; may be empty
  TensorView weight;    // [dim], weight dtype
  TensorView out;       // [T, dim], activation dtype; may alias input (not residual)
  float eps = 1e-5f;
};

// out[t, n] = sum_k x[t, k] * w[n, k] (+ bias[n]). f32 accumulation. A row's result does not
// depend on T (no reduction order change with batch size): batch invariance.
struct MatmulArgs {
  TensorView x;     // [T, K], activation dtype
  TensorView w;     // [N, K], weight dtype (row-major, as in Hugging Face checkpoints)
  TensorView bias;  // [N] weight dtype; may be empty
  TensorView out;   // [T, N], activation dtype, or f32 for logits
};

// Rotary embedding, rotate-half layout (pairs (i, i + rot_dim/2) within each head), in place:
//   x'[i]         = x[i] cos(p f_i) - x[i + d/2] sin(p f_i)
//   x'[i + d/2]   = x[i + d/2] cos(p f_i) + x[i] sin(p f_i)
// where p = positions[t], f_i = inv_freq[i] (already holding any llama3 scaling).
struct RopeArgs {
  TensorView q;          // [T, n_heads, head_dim], activation dtype
  TensorView k;          // [T, n_kv_heads, head_dim], activation dtype
  TensorView positions;  // [T] i32, >= 0
  TensorView inv_freq;   // [head_dim / 2] f32
};

// out[t, j] = silu(gate[t, j]) * up[t, j], silu(x) = x / (1 + exp(-x)).
struct SwigluArgs {
  TensorView gate;  // [T, H], activation dtype
  TensorView up;    // [T, H], activation dtype
  TensorView out;   // [T, H], activation dtype; may alias gate or up
};

// a[i] += b[i]
struct AddArgs {
  TensorView a;  // [T, dim], activation dtype, updated in place
  TensorView b;  // [T, dim], activation dtype
};

// Writes each new token's K and V into the paged cache. slot = block * block_size + offset;
// a negative slot means "padding, skip".
struct KvWriteArgs {
  TensorView k;             // [T, n_kv_heads, head_dim], activation dtype
  TensorView v;             // [T, n_kv_heads, head_dim], activation dtype
  TensorView slot_mapping;  // [T] i32
  TensorView k_cache;       // [num_blocks, block_size, n_kv_heads, head_dim], cache dtype
  TensorView v_cache;       // [num_blocks, block_size, n_kv_heads, head_dim], cache dtype
};

// Causal attention of the ragged batch over the paged cache (which already holds this step's
// K/V). Query head h reads KV head h / (n_heads / n_kv_heads) (GQA). The query at position p
// attends to context positions 0..p. out = softmax(scale * q k^T) v, computed in f32.
struct AttentionArgs {
  TensorView q;             // [T, n_heads, head_dim], activation dtype
  TensorView k_cache;       // [num_blocks, block_size, n_kv_heads, head_dim]
  TensorView v_cache;       // [num_blocks, block_size, n_kv_heads, head_dim]
  TensorView block_tables;  // [B, max_blocks_per_seq] i32; row b lists sequence b's blocks
  TensorView seq_lens;      // [B] i32: context length of b after this step (incl. new tokens)
  TensorView query_start;   // [B + 1] i32: prefix sums of q_len; query_start[B] == T
  TensorView out;           // [T, n_heads, head_dim], activation dtype
  float scale = 1.0f;       // usually 1 / sqrt(head_dim)
};

// out[i, :] = src[rows[i], :] (e.g. the last token of each sequence before the LM head).
struct GatherRowsArgs {
  TensorView src;   // [T, dim], activation dtype
  TensorView rows;  // [R] i32, each in [0, T)
  TensorView out;   // [R, dim], activation dtype
};

// out[r] = the lowest index i with logits[r, i] == max_j logits[r, j], NaN counting as -inf;
// 0 when every value is -inf or NaN. Exactly the greedy choice of the engine's sampler, so
// greedy rows need only their ids copied back, not [R, vocab] floats.
struct ArgmaxArgs {
  TensorView logits;  // [R, vocab] f32
  TensorView out;     // [R] i32
};

// Owning handle to backend memory; frees through the backend that made it.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(void* data, size_t size, std::function<void(void*)> deleter)
      : data_(data), size_(size), deleter_(std::move(deleter)) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = o.data_;
      size_ = o.size_;
      deleter_ = std::move(o.deleter_);
      o.data_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }
  void reset() {
    if (data_ && deleter_) deleter_(data_);
    data_ = nullptr;
    size_ = 0;
  }
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  std::function<void(void*)> deleter_;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string name() const = 0;        // "cpu (2 threads, avx2)", "cuda:0 (H100)"
  virtual DType activation_dtype() const = 0;  // f32 on the CPU

  // Memory. allocate() returns zeroed memory. Copies are synchronous from the host's view.
  virtual StatusOr<DeviceBuffer> allocate(size_t bytes) = 0;
  virtual Status copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  virtual Status copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual Status synchronize() = 0;
  // Memory the backend could still allocate (host: MemAvailable; GPU: free device memory).
  // Sizes the KV cache from a fraction of memory.
  virtual StatusOr<size_t> available_memory_bytes() const = 0;

  virtual Status embedding(const EmbeddingArgs& a) = 0;
  virtual Status rms_norm(const RmsNormArgs& a) = 0;
  virtual Status matmul(const MatmulArgs& a) = 0;
  virtual Status rope(const RopeArgs& a) = 0;
  virtual Status swiglu(const SwigluArgs& a) = 0;
  virtual Status add(const AddArgs& a) = 0;
  virtual Status kv_write(const KvWriteArgs& a) = 0;
  virtual Status attention(const AttentionArgs& a) = 0;
  virtual Status gather_rows(const GatherRowsArgs& a) = 0;
  virtual Status argmax(const ArgmaxArgs& a) = 0;

  // Step graphs (CUDA graphs on a GPU): the ops queued between begin_capture() and
  // end_capture(key) are recorded, not run, as graph `key` (replacing any graph of that key);
  // replay_graph(key) runs them again, with the same pointers and shapes, as one launch. Only
  // ops may be queued while capturing: no allocate, no copies, no synchronize (they fail or
  // break the capture), and every lazy setup of the ops (plans, scratch) must have happened in
  // an earlier uncaptured run of the same shapes. A backend without graphs says so here and
  // returns Unimplemented.
  virtual bool supports_graphs() const { return false; }
  virtual Status begin_capture() { return Unimplemented(name() + ": no step graphs"); }
  virtual Status end_capture(int64_t key) {
    (void)key;
    return Unimplemented(name() + ": no step graphs");
  }
  virtual Status replay_graph(int64_t key) {
    (void)key;
    return Unimplemented(name() + ": no step graphs");
  }
};

}  // namespace pagoda
