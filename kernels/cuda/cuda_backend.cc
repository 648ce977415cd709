// CudaBackend: Backend on one CUDA device and one non-blocking stream. Every op is queued on
// that stream; copies and synchronize() wait for it. Each op validates its arguments and
// queues its kernel through the launcher in launchers.h.
#include "kernels/cuda/cuda_backend.h"

#include <string>
#include <utility>

#include "kernels/cuda/device.h"
#include "kernels/cuda/launchers.h"

namespace pagoda {
namespace {

class CudaBackend final : public Backend {
 public:
  CudaBackend(cuda::DeviceInfo info, cuda::Stream stream, DType activations)
      : info_(std::move(info)),
        stream_(std::move(stream)),
        allocator_(info_.index),
        activations_(activations) {}

  ~CudaBackend() override {
    cuda::ScopedDevice scoped(info_.index);
    (void)stream_.synchronize();
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return info_.describe(); }
  DType activation_dtype() const override { return activations_; }

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

  Status embedding(const EmbeddingArgs& a) override { return run(cuda::embedding_cuda, a); }
  Status rms_norm(const RmsNormArgs& a) override { return run(cuda::rms_norm_cuda, a); }
  Status matmul(const MatmulArgs& a) override { return run(cuda::matmul_cuda, a); }
  Status rope(const RopeArgs& a) override { return run(cuda::rope_cuda, a); }
  Status swiglu(const SwigluArgs& a) override { return run(cuda::swiglu_cuda, a); }
  Status add(const AddArgs& a) override { return run(cuda::add_cuda, a); }
  Status kv_write(const KvWriteArgs& a) override { return run(cuda::kv_write_cuda, a); }
  Status attention(const AttentionArgs& a) override { return run(cuda::attention_cuda, a); }
  Status gather_rows(const GatherRowsArgs& a) override { return run(cuda::gather_rows_cuda, a); }
  Status argmax(const ArgmaxArgs& a) override { return run(cuda::argmax_cuda, a); }

 private:
  // Makes this backend's device current and queues the op on its stream.
  template <typename Args>
  Status run(Status (*launcher)(const Args&, cudaStream_t), const Args& a) {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return launcher(a, stream_.get());
  }

  cuda::DeviceInfo info_;
  cuda::Stream stream_;
  cuda::DeviceAllocator allocator_;
  DType activations_;
};

}  // namespace

bool cuda_device_available() {
  return cuda::device_count().ok();
}

StatusOr<std::unique_ptr<Backend>> make_cuda_backend(int device_index, DType activations) {
  if (activations != DType::kBF16 && activations != DType::kF32)
    return InvalidArgument(std::string("cuda: activations must be bf16 or f32, not ") +
                           dtype_name(activations));
  PAGODA_ASSIGN_OR_RETURN(cuda::DeviceInfo info, cuda::device_info(device_index));
  if (info.cc_major < 8) {
    return FailedPrecondition("cuda: " + info.describe() +
                              " is too old: pagoda needs compute capability 8.0 or newer (bf16)");
  }
  PAGODA_ASSIGN_OR_RETURN(cuda::Stream stream, cuda::Stream::create(device_index));
  return std::unique_ptr<Backend>(new CudaBackend(std::move(info), std::move(stream), activations));
}

}  // namespace pagoda
