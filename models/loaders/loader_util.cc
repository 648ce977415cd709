#include "models/loaders/loader_util.h"

#include <sys/stat.h>

#include <cstring>

namespace pagoda::loader_util {

std::string join_path(const std::string& dir, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string dir_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

bool checked_numel(const std::vector<int64_t>& shape, int64_t* numel) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  // Leave headroom so that numel * element size cannot overflow either.
  if (n > (int64_t{1} << 60)) return false;
  *numel = n;
  return true;
}

Status add_tensor(WeightStore* store, const std::string& name, const uint8_t* data, DType dtype,
                  const std::vector<int64_t>& shape, const std::string& source) {
  if (shape.size() > 4) {
    return Unimplemented(source + ": tensor '" + name + "' has " + std::to_string(shape.size()) +
                         " dims; pagoda handles at most 4");
  }
  TensorView t;
  t.dtype = dtype;
  t.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t.shape[i] = shape[i];
  const size_t align = dtype_size(dtype);
  if (reinterpret_cast<uintptr_t>(data) % align == 0) {
    t.data = const_cast<uint8_t*>(data);  // read-only mapping; consumers never write weights
  } else {
    HostBuffer copy(t.nbytes());
    if (t.nbytes() > 0) std::memcpy(copy.data(), data, t.nbytes());
    t.data = copy.data();
    store->keep_alive(std::move(copy));
  }
  Status s = store->add(name, t);
  if (!s.ok()) return Status(s.code(), source + ": " + s.message());
  return OkStatus();
}

}  // namespace pagoda::loader_util
