// device.h: CUDA device plumbing for kernels/cuda/: device queries, a scoped current-device
// switch, an RAII stream, a zeroing device allocator and host<->device copies. Everything
// returns Status; nothing aborts on a missing device or a failed allocation.
// Internal to kernels/cuda/ (it includes CUDA headers through cuda_check.h).
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "core/status.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace pagoda::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;  // "NVIDIA H100 80GB HBM3"
  int cc_major = 0;  // compute capability, e.g. 9.0
  int cc_minor = 0;
  int sm_count = 0;
  size_t total_memory = 0;  // bytes
  size_t shared_memory_per_block_optin =
      0;  // bytes, with cudaFuncAttributeMaxDynamicSharedMemorySize
  int max_threads_per_block = 0;
  int warp_size = 0;
  // "cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB)"
  std::string describe() const;
};

// Number of visible devices. No device, no driver or an old driver → FailedPrecondition
// "no CUDA device: ..." naming the runtime's error.
StatusOr<int> device_count();
// Properties of device `index`; InvalidArgument if index is out of range.
StatusOr<DeviceInfo> device_info(int index);
// (free, total) bytes on the current device.
Status memory_info(size_t* free_bytes, size_t* total_bytes);

// Makes `device` current for this thread (when it is not already) and leaves it so. CUDA's
// current device is per thread; backend entry points use this because the engine may call them
// from a thread other than the one that made the backend. It does not restore the thread's
// previous device: a thread that never chose one reports device 0, and since CUDA 12 setting
// device 0 back would create a context there (hundreds of MiB on GPU 0 for every process that
// serves on another GPU, and a device switch around every op).
class ScopedDevice {
 public:
  explicit ScopedDevice(int device);
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// Owning, move-only handle to a non-blocking stream on one device.
class Stream {
 public:
  Stream() = default;
  static StatusOr<Stream> create(int device);
  ~Stream() { reset(); }
  Stream(Stream&& o) noexcept { *this = std::move(o); }
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  int device() const { return device_; }
  Status synchronize() const;
  void reset();

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = -1;
};

// cudaMalloc-backed allocator for one device. Buffers are zeroed on `stream` before they are
// returned (so work queued on that stream sees zeros) and freed with cudaFree when the
// DeviceBuffer dies; a buffer may outlive the allocator. Keeps in-use and peak byte counts.
// Out of memory → ResourceExhausted naming the requested size and the free memory.
class DeviceAllocator {
 public:
  explicit DeviceAllocator(int device) : device_(device), stats_(std::make_shared<Stats>()) {}

  StatusOr<DeviceBuffer> allocate(size_t bytes, cudaStream_t stream);
  size_t bytes_in_use() const { return stats_->in_use.load(); }
  size_t peak_bytes() const { return stats_->peak.load(); }

 private:
  struct Stats {
    std::atomic<size_t> in_use{0};
    std::atomic<size_t> peak{0};
  };
  int device_;
  std::shared_ptr<Stats> stats_;
};

// Copies queued on `stream` and waited for: synchronous from the host's view. Host memory may
// be pageable. bytes == 0 is a no-op.
Status copy_host_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream);
// Queued on `stream`, not waited for: `src` must stay as it is until the stream has done it.
Status copy_host_to_device_async(void* dst, const void* src, size_t bytes, cudaStream_t stream);
// Page-locked host memory (cudaHostAlloc), zeroed; freed with cudaFreeHost.
StatusOr<DeviceBuffer> allocate_pinned(size_t bytes);
Status copy_device_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream);
// Queued on `stream`, not waited for: `dst` (page-locked, or the copy is staged by the driver)
// holds the data only once the stream has done it (synchronize it first).
Status copy_device_to_host_async(void* dst, const void* src, size_t bytes, cudaStream_t stream);
Status copy_device_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream);

}  // namespace pagoda::cuda
