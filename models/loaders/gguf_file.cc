#include "models/loaders/gguf_file.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "models/loaders/loader_util.h"

namespace pagoda {
namespace {

constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;

// ggml type ids: the three pagoda loads, and the names of the rest for error messages.
const char* ggml_type_name(uint32_t t) {
  static const std::map<uint32_t, const char*> kNames = {
      {0, "F32"},     {1, "F16"},      {2, "Q4_0"},   {3, "Q4_1"},    {6, "Q5_0"},
      {7, "Q5_1"},    {8, "Q8_0"},     {9, "Q8_1"},   {10, "Q2_K"},   {11, "Q3_K"},
      {12, "Q4_K"},   {13, "Q5_K"},    {14, "Q6_K"},  {15, "Q8_K"},   {16, "IQ2_XXS"},
      {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {20, "IQ4_NL"}, {21, "IQ3_S"},
      {22, "IQ2_S"},  {23, "IQ4_XS"},  {24, "I8"},    {25, "I16"},    {26, "I32"},
      {27, "I64"},    {28, "F64"},     {29, "IQ1_M"}, {30, "BF16"},   {34, "TQ1_0"},
      {35, "TQ2_0"},  {39, "MXFP4"}};
  auto it = kNames.find(t);
  return it == kNames.end() ? nullptr : it->second;
}

// Bounds-checked little-endian reads over the mapping.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }

  Status need(uint64_t n, const std::string& what) const {
    if (n > size_ - pos_) {
      return DataLoss(path_ + ": truncated: " + what + " at byte " + std::to_string(pos_) +
                      " needs " + std::to_string(n) + " bytes, the file has " +
                      std::to_string(size_ - pos_) + " left");
    }
    return OkStatus();
  }
  template <typename T>
  Status read(T* out, const std::string& what) {
    PAGODA_RETURN_IF_ERROR(need(sizeof(T), what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return OkStatus();
  }
  Status skip(uint64_t n, const std::string& what) {
    PAGODA_RETURN_IF_ERROR(need(n, what));
    pos_ += n;
    return OkStatus();
  }
  Status read_string(std::string* out, const std::string& what) {
    uint64_t len = 0;
    PAGODA_RETURN_IF_ERROR(read(&len, what + " (length)"));
    PAGODA_RETURN_IF_ERROR(need(len, what));
    out->assign(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return OkStatus();
  }
  Status skip_string(const std::string& what) {
    uint64_t len = 0;
    PAGODA_RETURN_IF_ERROR(read(&len, what + " (length)"));
    return skip(len, what);
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

int scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool: return 1;
    case GgufType::kU16:
    case GgufType::kI16: return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32: return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64: return 8;
    default: return 0;
  }
}

template <typename T>
Status read_scalar(Cursor& c, const std::string& what, GgufValue* v) {
  T x;
  PAGODA_RETURN_IF_ERROR(c.read(&x, what));
  if constexpr (std::is_floating_point_v<T>) {
    v->f = x;
  } else {
    v->i = static_cast<int64_t>(x);
    if constexpr (std::is_unsigned_v<T>) v->u = x;
  }
  return OkStatus();
}

Status read_value(Cursor& c, uint32_t raw_type, const std::string& key, const std::string& path,
                  int depth, GgufValue* v) {
  if (raw_type > static_cast<uint32_t>(GgufType::kF64)) {
    return InvalidArgument(path + ": metadata key '" + key + "' has unknown value type " +
                           std::to_string(raw_type));
  }
  const GgufType type = static_cast<GgufType>(raw_type);
  v->type = type;
  const std::string what = "metadata value '" + key + "'";
  switch (type) {
    case GgufType::kU8: return read_scalar<uint8_t>(c, what, v);
    case GgufType::kI8: return read_scalar<int8_t>(c, what, v);
    case GgufType::kU16: return read_scalar<uint16_t>(c, what, v);
    case GgufType::kI16: return read_scalar<int16_t>(c, what, v);
    case GgufType::kU32: return read_scalar<uint32_t>(c, what, v);
    case GgufType::kI32: return read_scalar<int32_t>(c, what, v);
    case GgufType::kU64: return read_scalar<uint64_t>(c, what, v);
    case GgufType::kI64: return read_scalar<int64_t>(c, what, v);
    case GgufType::kF32: return read_scalar<float>(c, what, v);
    case GgufType::kF64: return read_scalar<double>(c, what, v);
    case GgufType::kBool:
      PAGODA_RETURN_IF_ERROR(read_scalar<uint8_t>(c, what, v));
      v->u = v->u != 0;
      break;
    case GgufType::kString: PAGODA_RETURN_IF_ERROR(c.read_string(&v->s, what)); break;
    case GgufType::kArray: {
      if (depth >= kMaxArrayDepth) return InvalidArgument(path + ": " + what + " nests too deeply");
      uint32_t elem = 0;
      PAGODA_RETURN_IF_ERROR(c.read(&elem, what + " (element type)"));
      PAGODA_RETURN_IF_ERROR(c.read(&v->array_len, what + " (length)"));
      if (elem > static_cast<uint32_t>(GgufType::kF64)) {
        return InvalidArgument(path + ": metadata key '" + key +
                               "' is an array of unknown value type " + std::to_string(elem));
      }
      v->array_type = static_cast<GgufType>(elem);
      if (const int sz = scalar_size(v->array_type); sz > 0) {
        uint64_t bytes = 0;
        if (__builtin_mul_overflow(v->array_len, static_cast<uint64_t>(sz), &bytes)) {
          return DataLoss(path + ": " + what + " claims " + std::to_string(v->array_len) +
                          " elements");
        }
        PAGODA_RETURN_IF_ERROR(c.skip(bytes, what));
      } else {
        for (uint64_t n = 0; n < v->array_len; ++n) {
          if (v->array_type == GgufType::kString) {
            PAGODA_RETURN_IF_ERROR(c.skip_string(what));
          } else {
            GgufValue inner;
            PAGODA_RETURN_IF_ERROR(read_value(c, elem, key, path, depth + 1, &inner));
          }
        }
      }
      break;
    }
  }
  return OkStatus();
}

}  // namespace

bool GgufValue::is_integer() const {
  return type != GgufType::kF32 && type != GgufType::kF64 && type != GgufType::kString &&
         type != GgufType::kArray && type != GgufType::kBool;
}

bool GgufValue::as_int64(int64_t* out) const {
  if (!is_integer()) return false;
  if (type == GgufType::kU64 && u > static_cast<uint64_t>(INT64_MAX)) return false;
  *out = i;
  return true;
}

bool file_has_gguf_magic(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[4] = {};
  const bool ok = std::fread(magic, 1, 4, f) == 4 && std::memcmp(magic, "GGUF", 4) == 0;
  std::fclose(f);
  return ok;
}

StatusOr<GgufFile> read_gguf(const std::string& path) {
  GgufFile g;
  PAGODA_ASSIGN_OR_RETURN(g.file, MappedFile::open(path));
  const uint64_t size = g.file->size();
  Cursor c(g.file->data(), size, path);
  if (size < 4)
    return DataLoss(path + ": truncated: " + std::to_string(size) + " bytes, no GGUF magic");
  if (std::memcmp(g.file->data(), "GGUF", 4) != 0) {
    std::string shown;
    for (int k = 0; k < 4; ++k) {
      const uint8_t b = g.file->data()[k];
      char buf[8];
      std::snprintf(buf, sizeof(buf), (b >= 32 && b < 127) ? "%c" : "\\x%02x", b);
      shown += buf;
    }
    return InvalidArgument(path + ": not a GGUF file: the magic is '" + shown + "', not 'GGUF'");
  }
  PAGODA_RETURN_IF_ERROR(c.skip(4, "magic"));
  PAGODA_RETURN_IF_ERROR(c.read(&g.version, "version"));
  if (g.version != 2 && g.version != 3) {
    return InvalidArgument(path + ": unsupported GGUF version " + std::to_string(g.version) +
                           " (pagoda reads versions 2 and 3, little-endian)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  PAGODA_RETURN_IF_ERROR(c.read(&n_tensors, "tensor count"));
  PAGODA_RETURN_IF_ERROR(c.read(&n_kv, "metadata count"));
  // Every entry takes at least 8 bytes, so larger counts cannot fit in the file.
  if (n_tensors > size / 8 || n_kv > size / 8) {
    return DataLoss(path + ": truncated: header claims " + std::to_string(n_tensors) +
                    " tensors and " + std::to_string(n_kv) + " metadata entries");
  }
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    uint32_t type = 0;
    PAGODA_RETURN_IF_ERROR(c.read_string(&key, "metadata key #" + std::to_string(k)));
    PAGODA_RETURN_IF_ERROR(c.read(&type, "metadata type of '" + key + "'"));
    GgufValue v;
    PAGODA_RETURN_IF_ERROR(read_value(c, type, key, path, 0, &v));
    if (!g.metadata.emplace(key, std::move(v)).second) {
      return InvalidArgument(path + ": metadata key '" + key + "' appears twice");
    }
  }
  if (auto it = g.metadata.find("general.alignment"); it != g.metadata.end()) {
    int64_t a = 0;
    if (!it->second.as_int64(&a) || a <= 0 || (a & (a - 1)) != 0) {
      return InvalidArgument(path + ": general.alignment must be a power of two");
    }
    g.alignment = static_cast<uint64_t>(a);
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    PAGODA_RETURN_IF_ERROR(c.read_string(&t.name, "tensor info #" + std::to_string(k)));
    const std::string where = path + ": tensor '" + t.name + "'";
    uint32_t n_dims = 0;
    PAGODA_RETURN_IF_ERROR(c.read(&n_dims, "dims of tensor '" + t.name + "'"));
    if (n_dims < 1 || n_dims > kMaxDims) {
      return InvalidArgument(where + " has " + std::to_string(n_dims) + " dims (1 to 4 allowed)");
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      PAGODA_RETURN_IF_ERROR(c.read(&ne, "dims of tensor '" + t.name + "'"));
      if (ne > (uint64_t{1} << 62)) return InvalidArgument(where + " has a dimension too large");
      t.ne.push_back(static_cast<int64_t>(ne));
    }
    PAGODA_RETURN_IF_ERROR(c.read(&t.ggml_type, "type of tensor '" + t.name + "'"));
    PAGODA_RETURN_IF_ERROR(c.read(&t.offset, "offset of tensor '" + t.name + "'"));
    switch (t.ggml_type) {
      case 0: t.dtype = DType::kF32; break;
      case 1: t.dtype = DType::kF16; break;
      case 30: t.dtype = DType::kBF16; break;
      default:
        if (const char* name = ggml_type_name(t.ggml_type)) {
          return Unimplemented(where + " has type " + name + " (" + std::to_string(t.ggml_type) +
                               "); pagoda loads F32, F16 and BF16 GGUF tensors");
        }
        return InvalidArgument(where + " has unknown ggml type " + std::to_string(t.ggml_type));
    }
    int64_t numel = 0;
    if (!loader_util::checked_numel(t.ne, &numel)) return InvalidArgument(where + " is too large");
    t.nbytes = static_cast<uint64_t>(numel) * dtype_size(t.dtype);
    if (t.offset % g.alignment != 0) {
      return InvalidArgument(where + ": offset " + std::to_string(t.offset) +
                             " is not a multiple of the alignment " + std::to_string(g.alignment));
    }
    g.tensors.push_back(std::move(t));
  }
  g.data_offset = (c.pos() + g.alignment - 1) / g.alignment * g.alignment;
  const uint64_t data_size = size >= g.data_offset ? size - g.data_offset : 0;
  std::vector<const GgufTensorInfo*> sorted;
  for (const GgufTensorInfo& t : g.tensors) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return DataLoss(path + ": truncated: tensor '" + t.name + "' needs bytes [" +
                      std::to_string(t.offset) + ", " + std::to_string(t.offset + t.nbytes) +
                      ") of the data section, which has " + std::to_string(data_size));
    }
    if (t.nbytes > 0) sorted.push_back(&t);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < sorted.size(); ++k) {
    if (sorted[k]->offset < sorted[k - 1]->offset + sorted[k - 1]->nbytes) {
      return InvalidArgument(path + ": tensors '" + sorted[k - 1]->name + "' and '" +
                             sorted[k]->name + "' overlap");
    }
  }
  return g;
}

}  // namespace pagoda
