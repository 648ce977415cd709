#include "kernels/cuda/device.h"

#include <cstdio>
#include <cstring>
#include <utility>

namespace pagoda::cuda {
namespace {

std::string format_bytes(size_t bytes) {
  char buf[64];
  if (bytes >= (size_t{1} << 30)) {
    std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  } else if (bytes >= (size_t{1} << 20)) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  } else {
    std::snprintf(buf, sizeof(buf), "%zu B", bytes);
  }
  return buf;
}

// Queues the copy on `stream` without waiting; `what` names the caller in errors.
Status queue_copy(const char* what, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                  cudaStream_t stream) {
  if (bytes == 0) return OkStatus();
  if (dst == nullptr || src == nullptr) {
    return InvalidArgument(
        std::string("cuda ") + what + ": null pointer (dst " + std::to_string(dst != nullptr) +
        ", src " + std::to_string(src != nullptr) + ") for " + std::to_string(bytes) + " bytes");
  }
  PAGODA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  return OkStatus();
}

// Queued, then waited for: synchronous from the host's view.
Status copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (bytes == 0) return OkStatus();
  PAGODA_RETURN_IF_ERROR(queue_copy("copy", dst, src, bytes, kind, stream));
  PAGODA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return OkStatus();
}

}  // namespace

std::string DeviceInfo::describe() const {
  return "cuda:" + std::to_string(index) + " (" + name + ", sm_" + std::to_string(cc_major) +
         std::to_string(cc_minor) + ", " + std::to_string(sm_count) + " SMs, " +
         format_bytes(total_memory) + ")";
}

StatusOr<int> device_count() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error so later calls do not see it
    std::string hint;
    if (err == cudaErrorInsufficientDriver) {
      hint = "; is an NVIDIA driver installed (libcuda.so), and as new as this CUDA runtime?";
    } else if (err == cudaErrorNoDevice) {
      hint = "; check CUDA_VISIBLE_DEVICES and that the GPU is visible in this container";
    }
    return FailedPrecondition(std::string("no CUDA device: cudaGetDeviceCount failed with ") +
                              cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")" + hint);
  }
  if (count == 0) return FailedPrecondition("no CUDA device: the driver reports 0 devices");
  return count;
}

StatusOr<DeviceInfo> device_info(int index) {
  PAGODA_ASSIGN_OR_RETURN(const int count, device_count());
  if (index < 0 || index >= count) {
    return InvalidArgument("cuda device index " + std::to_string(index) +
                           " out of range: " + std::to_string(count) + " device(s) visible");
  }
  cudaDeviceProp prop{};
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, index));
  DeviceInfo info;
  info.index = index;
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  info.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
  info.max_threads_per_block = prop.maxThreadsPerBlock;
  info.warp_size = prop.warpSize;
  return info;
}

Status memory_info(size_t* free_bytes, size_t* total_bytes) {
  PAGODA_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(free_bytes, total_bytes));
  return OkStatus();
}

ScopedDevice::ScopedDevice(int device) {
  int current = -1;
  status_ = PAGODA_CUDA_STATUS(cudaGetDevice(&current));
  if (!status_.ok()) return;
  if (current != device) status_ = PAGODA_CUDA_STATUS(cudaSetDevice(device));
}

StatusOr<Stream> Stream::create(int device) {
  ScopedDevice scoped(device);
  PAGODA_RETURN_IF_ERROR(scoped.status());
  Stream s;
  PAGODA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream_, cudaStreamNonBlocking));
  s.device_ = device;
  return s;
}

Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    reset();
    stream_ = std::exchange(o.stream_, nullptr);
    device_ = std::exchange(o.device_, -1);
  }
  return *this;
}

Status Stream::synchronize() const {
  PAGODA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return OkStatus();
}

void Stream::reset() {
  if (stream_ == nullptr) return;
  ScopedDevice scoped(device_);
  (void)cudaStreamSynchronize(stream_);
  (void)cudaStreamDestroy(stream_);
  stream_ = nullptr;
  device_ = -1;
}

StatusOr<DeviceBuffer> DeviceAllocator::allocate(size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return DeviceBuffer();
  ScopedDevice scoped(device_);
  PAGODA_RETURN_IF_ERROR(scoped.status());
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    return ResourceExhausted("cuda:" + std::to_string(device_) +
                             ": out of device memory allocating " + std::to_string(bytes) +
                             " bytes (" + format_bytes(bytes) + "); " + format_bytes(free_bytes) +
                             " free of " + format_bytes(total_bytes) + ", " +
                             format_bytes(stats_->in_use.load()) + " held by pagoda");
  }
  PAGODA_RETURN_IF_ERROR(PAGODA_CUDA_STATUS(err));
  const Status zeroed = PAGODA_CUDA_STATUS(cudaMemsetAsync(ptr, 0, bytes, stream));
  if (!zeroed.ok()) {
    (void)cudaFree(ptr);
    return zeroed;
  }
  const size_t in_use = stats_->in_use.fetch_add(bytes) + bytes;
  size_t peak = stats_->peak.load();
  while (in_use > peak && !stats_->peak.compare_exchange_weak(peak, in_use)) {
  }
  return DeviceBuffer(ptr, bytes, [device = device_, bytes, stats = stats_](void* p) {
    ScopedDevice scoped(device);
    (void)cudaFree(p);  // synchronizes the device: pending work on p finishes first
    stats->in_use.fetch_sub(bytes);
  });
}

Status copy_host_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  return copy(dst, src, bytes, cudaMemcpyHostToDevice, stream);
}

Status copy_host_to_device_async(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  return queue_copy("copy_from_host_async", dst, src, bytes, cudaMemcpyHostToDevice, stream);
}

StatusOr<DeviceBuffer> allocate_pinned(size_t bytes) {
  if (bytes == 0) return DeviceBuffer();
  void* ptr = nullptr;
  const cudaError_t err = cudaHostAlloc(&ptr, bytes, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return ResourceExhausted("cuda: cannot allocate " + std::to_string(bytes) +
                             " bytes of page-locked host memory: " + cudaGetErrorString(err));
  }
  std::memset(ptr, 0, bytes);
  return DeviceBuffer(ptr, bytes, [](void* p) { (void)cudaFreeHost(p); });
}

Status copy_device_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  return copy(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
}

Status copy_device_to_host_async(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  return queue_copy("copy_to_host_async", dst, src, bytes, cudaMemcpyDeviceToHost, stream);
}

Status copy_device_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  return copy(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
}

}  // namespace pagoda::cuda
