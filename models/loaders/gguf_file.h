// The GGUF container (versions 2 and 3, little-endian): magic "GGUF", u32 version,
// u64 tensor_count, u64 metadata_kv_count, the key/value pairs, the tensor infos
// (name, u32 n_dims, u64 ne[n_dims] fastest-first, u32 ggml type, u64 offset), then the tensor
// data from the next multiple of general.alignment (default 32). This layer reads and checks the
// container; gguf.h maps its contents to a LoadedModel.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "models/weights.h"

namespace pagoda {

enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// One metadata value. Scalars land in the field their type suggests (integers in i, unsigned
// ones also in u); arrays keep only their element type and length, their contents are skipped.
struct GgufValue {
  GgufType type = GgufType::kU8;
  uint64_t u = 0;  // unsigned integers and bool
  int64_t i = 0;   // signed integers
  double f = 0.0;  // floats
  std::string s;   // strings
  GgufType array_type = GgufType::kU8;
  uint64_t array_len = 0;

  bool is_integer() const;
  // The integer value, for any integer type; false when it is not an integer.
  bool as_int64(int64_t* out) const;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order: ne[0] is the fastest-varying (innermost) dimension
  uint32_t ggml_type = 0;
  DType dtype = DType::kF32;
  uint64_t offset = 0;  // relative to GgufFile::data_offset
  uint64_t nbytes = 0;

  // Row-major shape: ne reversed, e.g. ne [hidden, vocab] -> [vocab, hidden].
  std::vector<int64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
};

struct GgufFile {
  std::unique_ptr<MappedFile> file;
  uint32_t version = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // absolute file offset of the tensor data

  const uint8_t* tensor_data(const GgufTensorInfo& t) const {
    return file->data() + data_offset + t.offset;
  }
};

// True when the file starts with "GGUF".
bool file_has_gguf_magic(const std::string& path);

// Maps and parses `path`. Errors name the file: InvalidArgument for a wrong magic, an unknown
// version or a malformed header, DataLoss for a truncated file, Unimplemented for a tensor type
// other than F32/F16/BF16 (quantized types).
StatusOr<GgufFile> read_gguf(const std::string& path);

}  // namespace pagoda
