// Helpers for the model-file tests: a temporary folder and writers for small safetensors and
// GGUF files, so that every good and bad case is built byte by byte inside the test.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace pagoda::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pagoda_test_XXXXXX").string();
    path_ = mkdtemp(tmpl.data()) ? tmpl : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
void append_pod(std::string* s, T v) {
  s->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

inline std::string shape_json(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A safetensors file: 8-byte header length, `header`, `data`. `pad_to` pads the header with
// spaces to a multiple of it (1: no padding).
inline std::string safetensors_raw(const std::string& header, const std::string& data,
                                   size_t pad_to = 8) {
  std::string h = header;
  while (h.size() % pad_to != 0) h += ' ';
  std::string out;
  append_pod<uint64_t>(&out, h.size());
  return out + h + data;
}

struct StTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;
  std::string bytes;
};

// A well-formed safetensors file holding `tensors` back to back in the given order.
inline std::string safetensors_file(const std::vector<StTensor>& tensors, size_t pad_to = 8) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::string data;
  for (const StTensor& t : tensors) {
    header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype +
              "\",\"shape\":" + shape_json(t.shape) + ",\"data_offsets\":[" +
              std::to_string(data.size()) + "," + std::to_string(data.size() + t.bytes.size()) +
              "]}";
    data += t.bytes;
  }
  return safetensors_raw(header + "}", data, pad_to);
}

// GGUF writer (little-endian, version 3 by default).
class GgufBuilder {
 public:
  void kv_u32(const std::string& key, uint32_t v) {
    kv_head(key, 4);
    append_pod(&kv_, v);
  }
  void kv_f32(const std::string& key, float v) {
    kv_head(key, 6);
    append_pod(&kv_, v);
  }
  void kv_str(const std::string& key, const std::string& v) {
    kv_head(key, 8);
    str(&kv_, v);
  }
  void kv_str_array(const std::string& key, size_t n) {
    kv_head(key, 9);
    append_pod<uint32_t>(&kv_, 8);
    append_pod<uint64_t>(&kv_, n);
    for (size_t i = 0; i < n; ++i) str(&kv_, "tok" + std::to_string(i));
  }
  // ne is fastest-first (GGUF order); `bytes` is the tensor data.
  void tensor(const std::string& name, const std::vector<uint64_t>& ne, uint32_t type,
              const std::string& bytes) {
    str(&infos_, name);
    append_pod<uint32_t>(&infos_, static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) append_pod(&infos_, d);
    append_pod(&infos_, type);
    append_pod<uint64_t>(&infos_, data_.size());
    data_ += bytes;
    while (data_.size() % 32 != 0) data_ += '\0';
    ++n_tensors_;
  }
  std::string build(uint32_t version = 3) const {
    std::string out = "GGUF";
    append_pod(&out, version);
    append_pod<uint64_t>(&out, n_tensors_);
    append_pod<uint64_t>(&out, n_kv_);
    out += kv_ + infos_;
    while (out.size() % 32 != 0) out += '\0';
    return out + data_;
  }

 private:
  static void str(std::string* s, const std::string& v) {
    append_pod<uint64_t>(s, v.size());
    *s += v;
  }
  void kv_head(const std::string& key, uint32_t type) {
    str(&kv_, key);
    append_pod(&kv_, type);
    ++n_kv_;
  }
  std::string kv_, infos_, data_;
  uint64_t n_tensors_ = 0, n_kv_ = 0;
};

}  // namespace pagoda::testing
