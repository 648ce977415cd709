// CudaBackend: Backend on one CUDA device and one non-blocking stream. Every op is queued on
// that stream; copies and synchronize() wait for it. Ops not written yet return Unimplemented.
#include "kernels/cuda/cuda_backend.h"

#include <string>
#include <utility>

#include "kernels/cuda/device.h"
#include "kernels/cuda/launchers.h"

namespace pagoda {
namespace {

Status not_yet(const char* op) {
  return Unimplemented(std::string("cuda ") + op + ": not yet implemented");
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(cuda::DeviceInfo info, cuda::Stream stream)
      : info_(std::move(info)), stream_(std::move(stream)), allocator_(info_.index) {}

  ~CudaBackend() override {
    cuda::ScopedDevice scoped(info_.index);
    (void)stream_.synchronize();
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return info_.describe(); }
  DType activation_dtype() const override { return DType::kBF16; }

  StatusOr<DeviceBuffer> allocate(size_t bytes) override {
    return allocator_.allocate(bytes, stream_.get());
  }
  Status copy_from_host(void* dst, const void* src, size_t bytes) override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::copy_host_to_device(dst, src, bytes, stream_.get());
  }
  Status copy_to_host(void* dst, const void* src, size_t bytes) override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::copy_device_to_host(dst, src, bytes, stream_.get());
  }
  Status synchronize() override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return stream_.synchronize();
  }

  StatusOr<size_t> available_memory_bytes() const override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    size_t free_bytes = 0, total_bytes = 0;
    PAGODA_RETURN_IF_ERROR(cuda::memory_info(&free_bytes, &total_bytes));
    return free_bytes;
  }

  Status rms_norm(const RmsNormArgs& a) override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::rms_norm_cuda(a, stream_.get());
  }

  Status embedding(const EmbeddingArgs&) override { return not_yet("embedding"); }
  Status matmul(const MatmulArgs&) override { return not_yet("matmul"); }
  Status rope(const RopeArgs&) override { return not_yet("rope"); }
  Status swiglu(const SwigluArgs&) override { return not_yet("swiglu"); }
  Status add(const AddArgs&) override { return not_yet("add"); }
  Status kv_write(const KvWriteArgs&) override { return not_yet("kv_write"); }
  Status attention(const AttentionArgs&) override { return not_yet("attention"); }
  Status gather_rows(const GatherRowsArgs&) override { return not_yet("gather_rows"); }

 private:
  cuda::DeviceInfo info_;
  cuda::Stream stream_;
  cuda::DeviceAllocator allocator_;
};

}  // namespace

bool cuda_device_available() {
  return cuda::device_count().ok();
}

StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device_index) {
  PAGODA_ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::device_info(device_index));
  if (info.cc_major < 8) {
    return FailedPrecondition("cuda: " + info.describe() +
                              " is too old: pagoda needs compute capability 8.0 or newer (bf16)");
  }
  PAGODA_ASSIGN_OR_RETURN(cuda::Stream stream, cuda::Stream::create(device_index));
  return std::unique_ptr<Backend>(new CudaBackend(std::move(info), std::move(stream)));
}

}  // namespace pagoda
