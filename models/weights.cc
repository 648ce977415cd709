// MappedFile (mmap), WeightStore, and load_model's dispatch between the checkpoint formats.
#include "models/weights.h"

#include "models/synthetic.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "models/loaders/gguf.h"
#include "models/loaders/hf_folder.h"
#include "models/loaders/loader_util.h"

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
