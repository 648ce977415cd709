// WeightStore: named host tensors of a loaded checkpoint, memory-mapped where the file layout
// allows and owned where the loader had to transform them. Names and layouts follow Hugging
// Face LlamaForCausalLM (rotate-half RoPE layout for q_proj/k_proj), whatever the file format:
//   model.embed_tokens.weight                      [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight        [hidden]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight  q:[H*hd, hidden] k,v:[KV*hd, hidden]
//   o:[hidden, H*hd] model.layers.{i}.self_attn.{q,k,v}_proj.bias   (qwen2 only)
//   model.layers.{i}.post_attention_layernorm.weight [hidden]
//   model.layers.{i}.mlp.{gate,up}_proj.weight     [inter, hidden]
//   model.layers.{i}.mlp.down_proj.weight          [hidden, inter]
//   model.norm.weight                              [hidden]
//   lm_head.weight                                 [vocab, hidden] (absent when tied)
// and, made by fuse_layer_weights() (every loader calls it), the fused projections the forward
// pass multiplies by (one GEMM each), whose rows the part names above then view:
//   model.layers.{i}.self_attn.qkv_proj.weight     [(H + 2 KV) hd, hidden]: q rows, k rows, v rows
//   model.layers.{i}.self_attn.qkv_proj.bias       [(H + 2 KV) hd]          (qwen2 only)
//   model.layers.{i}.mlp.gate_up_proj.weight       [2 inter, hidden]: gate rows, then up rows
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/status.h"
#include "core/tensor.h"
#include "models/config.h"

namespace pagoda {

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  static StatusOr<std::unique_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the whole pages inside [p, p + bytes) from this process's memory (a hint: a later
  // read faults them back in from the file, so the contents never change).
  void drop_pages(const void* p, size_t bytes) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

class WeightStore {
 public:
  // Keeps `file` alive as long as the store; tensors may point into it.
  void keep_alive(std::unique_ptr<MappedFile> file) { files_.push_back(std::move(file)); }
  // Takes ownership of a buffer that tensors point into.
  void keep_alive(HostBuffer buffer) { buffers_.push_back(std::move(buffer)); }
  // Adds a tensor; InvalidArgument if the name is already present.
  Status add(const std::string& name, TensorView tensor);

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // The tensor, checked against the expected shape; NotFound / InvalidArgument otherwise.
  StatusOr<TensorView> get(const std::string& name, std::initializer_list<int64_t> shape) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // Whether `name` is a part that fuse_rows() re-pointed at rows of a fused tensor: its memory
  // is counted in the fused tensor's (sum bytes or parameters over the others).
  bool is_view(const std::string& name) const { return views_.count(name) != 0; }

  // Concatenates `parts` (present, all 1-D, or all 2-D with one dim 1) along dim 0 into one
  // tensor named `fused`, then re-points each part name at its rows of it (views: nothing is
  // held twice) and releases what held the parts: an owned buffer no tensor points into any
  // more is freed, pages of a mapped file are dropped (MappedFile::drop_pages). Parts already
  // back to back in memory in order, in one dtype, become the fused tensor as they are (no
  // copy). Mixed dtypes are widened to f32 (exact). Peak: one fused tensor more than before.
  Status fuse_rows(const std::vector<std::string>& parts, const std::string& fused);

 private:
  // Frees the owned buffer holding `old` when no tensor points into it any more, or drops its
  // pages when it lies in a mapped file.
  void release(const TensorView& old);

  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<HostBuffer> buffers_;
  std::map<std::string, TensorView> tensors_;
  std::set<std::string> views_;  // fuse_rows() parts
};

// A checkpoint on the host, ready for a Model to upload.
struct LoadedModel {
  ModelConfig config;
  WeightStore weights;
  std::string tokenizer_path;  // tokenizer.model beside the weights, or "" if none
  std::string source;          // the path it came from
};

// Fuses each layer's q/k/v projections (and q/k/v biases) into self_attn.qkv_proj and its
// gate/up projections into mlp.gate_up_proj (WeightStore::fuse_rows; the names at the top).
// A layer whose parts are missing or misshapen is left as it is (LlamaModel::create names the
// bad tensor), and so are parts of different dtypes (LlamaModel::create fuses those, widened).
// Idempotent. Every loader (Hugging Face folder, GGUF, synthetic) calls it, so on
// the CPU the forward pass uses the fused tensors in place and no weight is held twice.
Status fuse_layer_weights(LoadedModel* m);

// Loads a Hugging Face folder (config.json + model.safetensors or sharded safetensors with
// model.safetensors.index.json, tokenizer.model, generation_config.json / tokenizer_config.json
// for special ids) or a GGUF v3 file, or "synthetic:SHAPE[:DTYPE]" (random weights at a named
// shape, models/synthetic.h). Every failure names the file and the problem.
StatusOr<LoadedModel> load_model(const std::string& path);

}  // namespace pagoda
