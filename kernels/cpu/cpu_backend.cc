// CpuBackend: memory is 64-byte aligned, zeroed host allocations; copies are memcpy and
// synchronous; every op is dispatched to its launcher in kernels/cpu/<op>.cc with the backend's
// own ThreadPool.
#include "kernels/cpu/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "core/check.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_ops.h"

namespace pagoda {
namespace {

constexpr size_t kAlignment = 64;

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int num_threads) : pool_(num_threads) {}

  Device device() const override { return Device::kCpu; }
  std::string name() const override {
    return "cpu (" + std::to_string(pool_.num_threads()) + " threads, avx2)";
  }
  DType activation_dtype() const override { return DType::kF32; }

  StatusOr<DeviceBuffer> allocate(size_t bytes) override {
    // Round up to the alignment (aligned_alloc wants a multiple) and never ask for 0 bytes, so
    // that every buffer has a distinct, non-null address.
    const size_t rounded = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded < bytes) return ResourceExhausted("cpu allocate: size overflows");
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) {
      return ResourceExhausted(cpu::cat("cpu allocate: out of host memory for ", bytes, " bytes"));
    }
    std::memset(p, 0, rounded);
    return DeviceBuffer(p, bytes, [](void* q) { std::free(q); });
  }
  Status copy_from_host(void* dst, const void* src, size_t bytes) override {
    return copy("copy_from_host", dst, src, bytes);
  }
  Status copy_to_host(void* dst, const void* src, size_t bytes) override {
    return copy("copy_to_host", dst, src, bytes);
  }
  Status synchronize() override { return OkStatus(); }
  StatusOr<size_t> available_memory_bytes() const override {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    size_t kib = 0;
    std::string unit;
    while (meminfo >> key >> kib >> unit) {
      if (key == "MemAvailable:") return kib * 1024;
    }
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
      return Unavailable("cpu: cannot tell how much memory is available");
    return static_cast<size_t>(pages) * static_cast<size_t>(page);
  }

  Status embedding(const EmbeddingArgs& a) override { return cpu::embedding(pool_, a); }
  Status rms_norm(const RmsNormArgs& a) override { return cpu::rms_norm(pool_, a); }
  Status matmul(const MatmulArgs& a) override { return cpu::matmul(pool_, a); }
  Status rope(const RopeArgs& a) override { return cpu::rope(pool_, a); }
  Status swiglu(const SwigluArgs& a) override { return cpu::swiglu(pool_, a); }
  Status add(const AddArgs& a) override { return cpu::add(pool_, a); }
  Status kv_write(const KvWriteArgs& a) override { return cpu::kv_write(pool_, a); }
  Status rope_kv_write(const RopeKvWriteArgs& a) override { return cpu::rope_kv_write(pool_, a); }
  Status attention(const AttentionArgs& a) override { return cpu::attention(pool_, a); }
  Status gather_rows(const GatherRowsArgs& a) override { return cpu::gather_rows(pool_, a); }
  Status argmax(const ArgmaxArgs& a) override { return cpu::argmax(pool_, a); }
  Status sample(const SampleArgs& a) override { return cpu::sample(pool_, a); }
  Status logprobs(const LogprobsArgs& a) override { return cpu::logprobs(pool_, a); }

 private:
  static Status copy(const char* op, void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return OkStatus();
    if (dst == nullptr || src == nullptr) {
      return InvalidArgument(cpu::cat(op, ": null pointer for ", bytes, " bytes"));
    }
    std::memmove(dst, src, bytes);
    return OkStatus();
  }

  ThreadPool pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int num_threads) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
      !__builtin_cpu_supports("f16c")) {
    internal::check_failed(__FILE__, __LINE__, "make_cpu_backend",
                           "the CPU backend needs AVX2, FMA and F16C (x86-64-v3)");
  }
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  return std::make_unique<CpuBackend>(std::max(1, num_threads));
}

}  // namespace pagoda
