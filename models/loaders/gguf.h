// GGUF -> LoadedModel for general.architecture "llama" with F32/F16/BF16 tensors.
// Tensor names are mapped to the Hugging Face names of models/weights.h and shapes converted to
// row-major (GGUF lists dims fastest-first). GGUF keeps attn_q / attn_k in the interleaved-pair
// RoPE layout; they are permuted per head into owned buffers in the rotate-half layout:
//   HF row h*hd + i        <- GGUF row h*hd + 2i       (i < hd/2)
//   HF row h*hd + hd/2 + i <- GGUF row h*hd + 2i + 1
// Every other tensor is a zero-copy view into the mapping.
#pragma once

#include <string>

#include "core/status.h"
#include "models/loaders/gguf_file.h"
#include "models/weights.h"

namespace pagoda {

// Loads a GGUF model file. Without output.weight, or when output.weight is bit-identical to
// token_embd.weight (as in converted tied checkpoints), the model is tied: no lm_head.weight and
// tie_word_embeddings = true. tokenizer_path is tokenizer.model beside the file, if present.
StatusOr<LoadedModel> load_gguf(const std::string& path);

}  // namespace pagoda
