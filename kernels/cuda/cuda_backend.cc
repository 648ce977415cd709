// CudaBackend: Backend on one CUDA device and one non-blocking stream. Every op is queued on
// that stream; copies and synchronize() wait for it. Each op validates its arguments and
// queues its kernel through the launcher in launchers.h.
#include "kernels/cuda/cuda_backend.h"

#include <map>
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
    if (capturing_) {
      cudaGraph_t broken = nullptr;
      if (cudaStreamEndCapture(stream_.get(), &broken) == cudaSuccess && broken != nullptr)
        (void)cudaGraphDestroy(broken);
    }
    (void)stream_.synchronize();
    for (auto& [key, exec] : graphs_) (void)cudaGraphExecDestroy(exec);
    // The stream's scratch (nothing runs on it now, and no graph is left to hold it).
    cuda::attention_release_scratch(stream_.get());
    cuda::matmul_release_workspace(stream_.get());
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return info_.describe(); }
  DType activation_dtype() const override { return activations_; }

  StatusOr<DeviceBuffer> allocate(size_t bytes) override {
    if (capturing_) return FailedPrecondition("cuda allocate: not allowed while capturing a graph");
    return allocator_.allocate(bytes, stream_.get());
  }
  Status copy_from_host(void* dst, const void* src, size_t bytes) override {
    if (capturing_)
      return FailedPrecondition("cuda copy_from_host: not allowed while capturing a graph");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::copy_host_to_device(dst, src, bytes, stream_.get());
  }
  Status copy_from_host_async(void* dst, const void* src, size_t bytes) override {
    if (capturing_)
      return FailedPrecondition("cuda copy_from_host_async: not allowed while capturing a graph");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::copy_host_to_device_async(dst, src, bytes, stream_.get());
  }
  StatusOr<DeviceBuffer> allocate_staging(size_t bytes) override {
    if (capturing_)
      return FailedPrecondition("cuda allocate_staging: not allowed while capturing a graph");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::allocate_pinned(bytes);
  }
  Status copy_to_host(void* dst, const void* src, size_t bytes) override {
    if (capturing_)
      return FailedPrecondition("cuda copy_to_host: not allowed while capturing a graph");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::copy_device_to_host(dst, src, bytes, stream_.get());
  }
  Status copy_to_host_async(void* dst, const void* src, size_t bytes) override {
    if (capturing_)
      return FailedPrecondition("cuda copy_to_host_async: not allowed while capturing a graph");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return cuda::copy_device_to_host_async(dst, src, bytes, stream_.get());
  }
  // Allowed while capturing: a device-to-device copy is recorded into the graph like an op.
  Status copy_on_device_async(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return OkStatus();
    if (dst == nullptr || src == nullptr) {
      return InvalidArgument(
          "cuda copy_on_device_async: null pointer (dst " + std::to_string(dst != nullptr) +
          ", src " + std::to_string(src != nullptr) + ") for " + std::to_string(bytes) + " bytes");
    }
    const auto* d = static_cast<const char*>(dst);
    const auto* s = static_cast<const char*>(src);
    if (d != s && d < s + bytes && s < d + bytes)
      return InvalidArgument("cuda copy_on_device_async: dst and src overlap");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    PAGODA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_.get()));
    return OkStatus();
  }
  Status synchronize() override {
    if (capturing_)
      return FailedPrecondition("cuda synchronize: not allowed while capturing a graph");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return stream_.synchronize();
  }

  Status reserve_scratch() override {
    if (capturing_) return FailedPrecondition("cuda reserve_scratch: not while capturing a graph");
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    PAGODA_RETURN_IF_ERROR(cuda::matmul_reserve_workspace(stream_.get()));
    return cuda::attention_reserve_scratch(stream_.get());
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
  Status rope_kv_write(const RopeKvWriteArgs& a) override {
    return run(cuda::rope_kv_write_cuda, a);
  }
  Status attention(const AttentionArgs& a) override { return run(cuda::attention_cuda, a); }
  Status gather_rows(const GatherRowsArgs& a) override { return run(cuda::gather_rows_cuda, a); }
  Status argmax(const ArgmaxArgs& a) override { return run(cuda::argmax_cuda, a); }
  Status sample(const SampleArgs& a) override { return run(cuda::sample_cuda, a); }
  Status logprobs(const LogprobsArgs& a) override { return run(cuda::logprobs_cuda, a); }

  // CUDA graphs. Thread-local capture mode: another thread's CUDA calls (a second backend, a
  // copy elsewhere in the process) neither join nor invalidate this capture.
  bool supports_graphs() const override { return true; }
  Status begin_capture() override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    if (capturing_) return FailedPrecondition("cuda begin_capture: already capturing");
    PAGODA_CUDA_RETURN_IF_ERROR(
        cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    return OkStatus();
  }
  Status end_capture(int64_t key) override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    if (!capturing_) return FailedPrecondition("cuda end_capture: not capturing");
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    // Ends the capture even when an op broke it (then the error says so and no graph is kept).
    // The old graph of this key goes only now: no graph call while the stream captures.
    const cudaError_t ended = cudaStreamEndCapture(stream_.get(), &graph);
    drop_graph(key);
    PAGODA_CUDA_RETURN_IF_ERROR(ended);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    PAGODA_CUDA_RETURN_IF_ERROR(made);
    graphs_[key] = exec;
    return OkStatus();
  }
  Status replay_graph(int64_t key) override {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return NotFound("cuda replay_graph: no graph " + std::to_string(key));
    PAGODA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream_.get()));
    return OkStatus();
  }

 private:
  // Makes this backend's device current and queues the op on its stream.
  template <typename Args>
  Status run(Status (*launcher)(const Args&, cudaStream_t), const Args& a) {
    cuda::ScopedDevice scoped(info_.index);
    PAGODA_RETURN_IF_ERROR(scoped.status());
    return launcher(a, stream_.get());
  }

  void drop_graph(int64_t key) {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return;
    (void)cudaGraphExecDestroy(it->second);
    graphs_.erase(it);
  }

  cuda::DeviceInfo info_;
  cuda::Stream stream_;
  bool capturing_ = false;
  std::map<int64_t, cudaGraphExec_t> graphs_;
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
