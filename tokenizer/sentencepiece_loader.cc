// load_sentencepiece_tokenizer: loads the SentencePiece implementation from its own shared
// library (libpagoda_spm_shim.so) with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece carries a private copy of protobuf-lite 3.14 and exports its
// symbols. Linked into a process that also uses libprotobuf 3.21 (gRPC), the two copies
// interpose on each other and the process crashes at start-up. Loaded locally and bound deeply,
// SentencePiece keeps to its own copy and the rest of the process never sees it.
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <mutex>

#include "tokenizer/tokenizer.h"

namespace pagoda {

namespace {

using CreateFn = Tokenizer* (*)(const char* path, int* code, char* message, size_t message_size);

std::string exe_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

StatusOr<CreateFn> shim() {
  static std::once_flag once;
  static CreateFn create = nullptr;
  static std::string error;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("PAGODA_SPM_SHIM")) candidates.push_back(env);
    candidates.push_back(PAGODA_SPM_SHIM_PATH);  // the build tree
    candidates.push_back(exe_dir() + "/libpagoda_spm_shim.so");
    candidates.push_back(exe_dir() + "/../lib/libpagoda_spm_shim.so");
    for (const std::string& path : candidates) {
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        error += std::string(error.empty() ? "" : "; ") + dlerror();
        continue;
      }
      create = reinterpret_cast<CreateFn>(dlsym(handle, "pagoda_spm_create"));
      if (create != nullptr) return;
      error += "; " + path + " has no pagoda_spm_create";
    }
  });
  if (create == nullptr) return Unavailable("SentencePiece support is not available: " + error);
  return create;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& path) {
  PAGODA_ASSIGN_OR_RETURN(CreateFn create, shim());
  int code = 0;
  char message[1024] = {0};
  Tokenizer* t = create(path.c_str(), &code, message, sizeof(message));
  if (t == nullptr) return Status(static_cast<StatusCode>(code), message);
  return std::unique_ptr<Tokenizer>(t);
}

}  // namespace pagoda
