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
#include <cstdlib>
#include <cstring>
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
// Two forms: separate gate and up (gate_up empty), or the fused form on the output of one
// [gate; up] GEMM (gate and up empty): gate[t, j] = gate_up[t, j], up[t, j] = gate_up[t, H + j].
// Both give the same bits for the same values.
struct SwigluArgs {
  TensorView gate;          // [T, H], activation dtype; empty in the fused form
  TensorView up;            // [T, H], activation dtype; empty in the fused form
  TensorView out;           // [T, H], activation dtype; may alias gate or up, not gate_up
  TensorView gate_up = {};  // [T, 2H], activation dtype: the fused form; may be empty
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

// RoPE and the KV write fused, on the output of one [q; k; v] GEMM: per token t, qkv[t] holds
// n_heads q heads, then n_kv_heads k heads, then n_kv_heads v heads, each head_dim wide.
//   q_out[t, h]                        = rope(q head h)                     (all t)
//   k_cache[slot / bs, slot % bs, h]   = cache(act(rope(k head h)))        (slot >= 0)
//   v_cache[slot / bs, slot % bs, h]   = cache(v head h)                   (slot >= 0)
// with slot = slot_mapping[t] (negative: padding, no K/V written), rope as in RopeArgs (same
// f32 math) and act()/cache() the roundings to the activation/cache dtypes: bit for bit what
// rope followed by kv_write gives on the same values. q_out is a separate buffer (the q heads
// are strided inside qkv; compacting them in place would race between tokens); it must not
// overlap qkv or the caches. Slots of one call must be distinct.
struct RopeKvWriteArgs {
  TensorView qkv;           // [T, (n_heads + 2 * n_kv_heads) * head_dim], activation dtype
  TensorView positions;     // [T] i32, >= 0
  TensorView inv_freq;      // [head_dim / 2] f32
  TensorView slot_mapping;  // [T] i32; negative = padding
  TensorView q_out;         // [T, n_heads, head_dim], activation dtype
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

// How one row of the sample op picks its token: the engine's SamplingParams of the request,
// with the RNG key and counter. Passed bit for bit as kSampleRowWords i32 words per row.
struct SampleRowParams {
  float temperature = 0.0f;                   // <= 0 (or NaN): greedy
  int32_t top_k = 0;                          // <= 0 or >= vocab: off; 1: greedy
  float top_p = 1.0f;                         // >= 1: off
  float min_p = 0.0f;                         // <= 0: off
  float repetition_penalty = 1.0f;            // 1, or not positive and finite: off
  float presence_penalty = 0.0f;              // 0, or not finite: off
  float frequency_penalty = 0.0f;             // 0, or not finite: off
  uint32_t seed_lo = 0, seed_hi = 0;          // RNG key
  uint32_t position_lo = 0, position_hi = 0;  // RNG counter: the position being sampled
  uint32_t reserved = 0;
};
inline constexpr int kSampleRowWords = 12;
static_assert(sizeof(SampleRowParams) == kSampleRowWords * sizeof(int32_t));

// out[r] = the token drawn from logits[r] by params[r], exactly the engine's sampler rule
// (engine/sampler.h has the steps; kernels/cpu/sample.cc is the reference):
//   1. penalties on the row's penalized tokens: repetition (HF: l > 0 ? l / p : l * p) on each,
//      then l -= fma(frequency, count, presence) on those with output count > 0;
//   2. greedy (temperature <= 0, top_k == 1, or a max logit that is not finite): argmax, lowest
//      id on ties;
//   3. top-k on the logits, softmax at the temperature (the top token's weight is exactly 1),
//      top-p (smallest prefix in descending probability, ties by ascending id, whose mass
//      reaches top_p), min-p (drop p < min_p), then the inverse-CDF draw of
//      u = counter_uniform(seed, position) (kernels/sample_math.h) in that order.
// NaN logits count as -inf. Sums are in double; a device may group them differently, which can
// change a draw only when u * total or top_p * total lies within double rounding of the mass
// before a token (never seen in the tests; the greedy path and steps 1, 2 are exact).
// Each row's penalized tokens must be distinct (the CPU checks, and so does LlamaModel before it
// uploads them; on a GPU two threads would race on a repeated token's logit).
struct SampleArgs {
  TensorView logits;          // [R, vocab] f32; overwritten (the op's scratch)
  TensorView params;          // [R, kSampleRowWords] i32: row r's SampleRowParams
  TensorView penalty_start;   // [R + 1] i32: row r's penalized tokens are entries [s[r], s[r+1])
  TensorView penalty_ids;     // [P] i32: ids in [0, vocab), distinct within a row
  TensorView penalty_counts;  // [P] i32 >= 0: occurrences in the output (0: in the prompt only)
  TensorView out;             // [R] i32
};

// Log-probabilities from the raw logits (no penalties, no temperature: vLLM's default "raw"
// logprobs) at each row's token and of its K most likely tokens, computed where the logits are,
// so that a row that asks for logprobs copies back 1 + 2K numbers instead of [vocab] floats.
// The engine Sampler::logprobs's rule (kernels/cpu/sample.h row_logprobs is the reference):
// per row r, with l = logits[r], NaN read as -inf, and m = max l,
//   logprob(x) = (x - m) - log(sum_j exp(l_j - m)), exponentials (f32, sample_math's
//   exp_nonpositive) summed in double, the difference rounded once to f32;
//   a row without a finite maximum takes the limit: with +inf logits, -log(count of +inf) for
//   those and -inf for the rest; with every logit -inf, -log(vocab) for all;
//   token_logprobs[r] = logprob(l[tokens[r]]);
//   top_ids[r] = the first K ids in the order (l desc, id asc), in that order, and
//   top_logprobs[r] their logprobs. (Not re-sorted by logprob, where distinct logits may round
//   to one value: so that the first n <= K entries are the row's top n for any n, which a
//   caller then orders by (logprob desc, id asc) as Sampler::logprobs does.)
// K = top_ids.shape[1], 0 <= K <= min(vocab, kMaxTopLogprobs). A device may group the sum
// otherwise (its logprobs then differ from the CPU's by a few ulp); the ids are exact.
struct LogprobsArgs {
  TensorView logits;          // [R, vocab] f32 (not modified)
  TensorView tokens;          // [R] i32, each in [0, vocab)
  TensorView token_logprobs;  // [R] f32
  TensorView top_ids;         // [R, K] i32
  TensorView top_logprobs;    // [R, K] f32
};
inline constexpr int kMaxTopLogprobs = 20;

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
  // Queues a host-to-device copy on the backend's stream and returns without waiting for it:
  // ops queued later see the data; `src` must stay unchanged until the next synchronizing call
  // (copy_to_host, synchronize). Default: copy_from_host.
  virtual Status copy_from_host_async(void* dst, const void* src, size_t bytes) {
    return copy_from_host(dst, src, bytes);
  }
  // Queues a device-to-host copy on the backend's stream and returns without waiting for it, so
  // the host can work while the step runs. `dst` should be staging memory (allocate_staging: a
  // GPU copies page-locked memory without staging it through the driver) and may be read only
  // after the next synchronizing call (synchronize, copy_to_host). Default: copy_to_host.
  virtual Status copy_to_host_async(void* dst, const void* src, size_t bytes) {
    return copy_to_host(dst, src, bytes);
  }
  // Queues a copy between two buffers of this backend on its stream (ops queued later see the
  // result; no host wait). Default: memcpy on a host backend, Unimplemented otherwise.
  virtual Status copy_on_device_async(void* dst, const void* src, size_t bytes) {
    if (device() != Device::kCpu) return Unimplemented(name() + ": copy_on_device_async");
    if (bytes > 0) std::memcpy(dst, src, bytes);
    return OkStatus();
  }
  // Host memory to copy from asynchronously: page-locked on a GPU (the copy is then one DMA,
  // with no staging by the driver); zeroed, 64-byte aligned host memory by default.
  virtual StatusOr<DeviceBuffer> allocate_staging(size_t bytes) {
    const size_t size = (bytes + 63) / 64 * 64;
    void* p = size > 0 ? std::aligned_alloc(64, size) : nullptr;
    if (size > 0 && p == nullptr)
      return ResourceExhausted("allocate_staging: " + std::to_string(bytes) + " bytes");
    if (p != nullptr) std::memset(p, 0, size);
    return DeviceBuffer(p, bytes, [](void* q) { std::free(q); });
  }
  // Memory the backend could still allocate (host: MemAvailable; GPU: free device memory).
  // Sizes the KV cache from a fraction of memory.
  virtual StatusOr<size_t> available_memory_bytes() const = 0;
  // Makes the scratch that ops would otherwise make on first use (GEMM workspaces, attention's
  // split partials), so that a caller reserving memory up front (before sizing the KV cache)
  // counts it and no step allocates. Idempotent; nothing to do on the CPU.
  virtual Status reserve_scratch() { return OkStatus(); }

  virtual Status embedding(const EmbeddingArgs& a) = 0;
  virtual Status rms_norm(const RmsNormArgs& a) = 0;
  virtual Status matmul(const MatmulArgs& a) = 0;
  virtual Status rope(const RopeArgs& a) = 0;
  virtual Status swiglu(const SwigluArgs& a) = 0;
  virtual Status add(const AddArgs& a) = 0;
  virtual Status kv_write(const KvWriteArgs& a) = 0;
  virtual Status rope_kv_write(const RopeKvWriteArgs& a) = 0;
  virtual Status attention(const AttentionArgs& a) = 0;
  virtual Status gather_rows(const GatherRowsArgs& a) = 0;
  virtual Status argmax(const ArgmaxArgs& a) = 0;
  virtual Status sample(const SampleArgs& a) = 0;
  virtual Status logprobs(const LogprobsArgs& a) = 0;

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
