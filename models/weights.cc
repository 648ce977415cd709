// MappedFile (mmap), WeightStore (with the fusion of a layer's projections), and load_model's
// dispatch between the checkpoint formats.
#include "models/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "models/loaders/gguf.h"
#include "models/loaders/hf_folder.h"
#include "models/loaders/loader_util.h"
#include "models/synthetic.h"

namespace pagoda {

StatusOr<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = "cannot open " + path + ": " + std::strerror(err);
    return err == ENOENT ? NotFound(msg) : InvalidArgument(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return InvalidArgument("cannot stat " + path + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + " is not a regular file");
  }
  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return ResourceExhausted("cannot mmap " + path + ": " + std::strerror(err));
    }
    file->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::drop_pages(const void* p, size_t bytes) const {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  // Best effort: a failure only means the pages stay resident.
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

Status WeightStore::add(const std::string& name, TensorView tensor) {
  if (!tensors_.emplace(name, tensor).second) {
    return InvalidArgument("tensor '" + name + "' is present more than once");
  }
  return OkStatus();
}

StatusOr<TensorView> WeightStore::get(const std::string& name,
                                      std::initializer_list<int64_t> shape) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return NotFound("tensor '" + name + "' is missing from the checkpoint");
  const TensorView& t = it->second;
  bool match = t.ndim == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t d : shape) match = match && t.shape[i++] == d;
  if (!match) {
    return InvalidArgument("tensor '" + name + "' has shape " + t.describe() + ", expected " +
                           loader_util::shape_string(std::vector<int64_t>(shape)));
  }
  return t;
}

namespace {

bool contains_ptr(const void* base, size_t size, const void* p) {
  const auto* b = static_cast<const char*>(base);
  const auto* q = static_cast<const char*>(p);
  return b != nullptr && q >= b && q < b + size;
}

}  // namespace

void WeightStore::release(const TensorView& old) {
  for (auto it = buffers_.begin(); it != buffers_.end(); ++it) {
    if (!contains_ptr(it->data(), it->size(), old.data)) continue;
    for (const auto& [name, t] : tensors_) {
      if (contains_ptr(it->data(), it->size(), t.data)) return;  // still in use
    }
    buffers_.erase(it);
    return;
  }
  for (const auto& f : files_) {
    if (contains_ptr(f->data(), f->size(), old.data)) f->drop_pages(old.data, old.nbytes());
  }
}

Status WeightStore::fuse_rows(const std::vector<std::string>& parts, const std::string& fused) {
  if (parts.empty()) return InvalidArgument("fuse_rows: no parts for '" + fused + "'");
  if (contains(fused)) return InvalidArgument("tensor '" + fused + "' is present more than once");
  std::vector<TensorView> views;
  for (const std::string& name : parts) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return NotFound("tensor '" + name + "' is missing");
    views.push_back(it->second);
  }
  const TensorView& first = views[0];
  int64_t rows = 0;
  bool one_dtype = true, adjacent = true;
  for (size_t i = 0; i < views.size(); ++i) {
    const TensorView& v = views[i];
    if ((v.ndim != 1 && v.ndim != 2) || v.ndim != first.ndim ||
        (v.ndim == 2 && v.shape[1] != first.shape[1])) {
      return InvalidArgument("cannot fuse '" + parts[i] + "' " + v.describe() + " with '" +
                             parts[0] + "' " + first.describe() + " into '" + fused + "'");
    }
    rows += v.shape[0];
    one_dtype = one_dtype && v.dtype == first.dtype;
    if (i > 0) {
      const TensorView& prev = views[i - 1];
      adjacent = adjacent && v.data == static_cast<const char*>(prev.data) + prev.nbytes();
    }
  }
  TensorView out = first;
  out.shape[0] = rows;
  if (one_dtype && adjacent) {  // already one tensor: a view, no copy
    PAGODA_RETURN_IF_ERROR(add(fused, out));
    views_.insert(parts.begin(), parts.end());
    return OkStatus();
  }
  out.dtype = one_dtype ? first.dtype : DType::kF32;
  HostBuffer buf(out.nbytes());
  out.data = buf.data();
  size_t offset = 0;  // elements
  for (size_t i = 0; i < views.size(); ++i) {
    const TensorView& v = views[i];
    const size_t n = static_cast<size_t>(v.numel());
    if (v.dtype == out.dtype) {
      std::memcpy(static_cast<char*>(buf.data()) + offset * dtype_size(out.dtype), v.data,
                  v.nbytes());
    } else {
      for (size_t j = 0; j < n; ++j)
        store_from_f32(buf.data(), out.dtype, offset + j, load_as_f32(v.data, v.dtype, j));
    }
    TensorView part = v;
    part.data = static_cast<char*>(buf.data()) + offset * dtype_size(out.dtype);
    part.dtype = out.dtype;
    tensors_[parts[i]] = part;
    offset += n;
  }
  keep_alive(std::move(buf));
  PAGODA_RETURN_IF_ERROR(add(fused, out));
  views_.insert(parts.begin(), parts.end());
  for (const TensorView& v : views) release(v);
  return OkStatus();
}

Status fuse_layer_weights(LoadedModel* m) {
  const ModelConfig& c = m->config;
  WeightStore& w = m->weights;
  const int64_t d = c.hidden_size, q = int64_t{c.num_heads} * c.head_dim,
                kv = int64_t{c.num_kv_heads} * c.head_dim, inter = c.intermediate_size;
  // Fuses when every part is there with its shape (else leaves the layer to create()'s checks).
  auto fuse = [&](const std::string& fused,
                  const std::vector<std::pair<std::string, int64_t>>& parts,
                  bool matrix) -> Status {
    if (w.contains(fused)) return OkStatus();
    std::vector<std::string> names;
    for (const auto& [name, rows] : parts) {
      StatusOr<TensorView> t = matrix ? w.get(name, {rows, d}) : w.get(name, {rows});
      if (!t.ok()) return OkStatus();
      // Mixed dtypes would have to be widened: keep the checkpoint's (create() fuses them).
      if (t->dtype != w.tensors().at(parts[0].first).dtype) return OkStatus();
      names.push_back(name);
    }
    return w.fuse_rows(names, fused);
  };
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    PAGODA_RETURN_IF_ERROR(fuse(
        a + "qkv_proj.weight",
        {{a + "q_proj.weight", q}, {a + "k_proj.weight", kv}, {a + "v_proj.weight", kv}}, true));
    if (c.attention_bias) {
      PAGODA_RETURN_IF_ERROR(
          fuse(a + "qkv_proj.bias",
               {{a + "q_proj.bias", q}, {a + "k_proj.bias", kv}, {a + "v_proj.bias", kv}}, false));
    }
    PAGODA_RETURN_IF_ERROR(
        fuse(p + "mlp.gate_up_proj.weight",
             {{p + "mlp.gate_proj.weight", inter}, {p + "mlp.up_proj.weight", inter}}, true));
  }
  return OkStatus();
}

StatusOr<LoadedModel> load_model(const std::string& path) {
  // "synthetic:SHAPE[:DTYPE]": random weights at a real shape, for benchmarks.
  if (path.rfind("synthetic:", 0) == 0) {
    std::string shape = path.substr(10), dtype_text = "bf16";
    if (const size_t colon = shape.find(':'); colon != std::string::npos) {
      dtype_text = shape.substr(colon + 1);
      shape = shape.substr(0, colon);
    }
    DType dtype;
    if (!parse_dtype(dtype_text, &dtype) || dtype == DType::kI32)
      return InvalidArgument(path + ": the dtype must be f32, f16 or bf16");
    PAGODA_ASSIGN_OR_RETURN(ModelConfig config, synthetic_config(shape));
    PAGODA_ASSIGN_OR_RETURN(LoadedModel m, make_synthetic_model(config, dtype, 42));
    m.source = path;
    return m;
  }
  if (loader_util::is_directory(path)) return load_hf_folder(path);
  if (!loader_util::is_regular_file(path)) {
    return NotFound(path + " does not exist (expected a Hugging Face folder or a .gguf file)");
  }
  const bool gguf_name = path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
  if (gguf_name || file_has_gguf_magic(path)) return load_gguf(path);
  return InvalidArgument(path +
                         " is neither a GGUF file nor a Hugging Face folder (for safetensors, "
                         "pass the folder holding config.json)");
}

}  // namespace pagoda
