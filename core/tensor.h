// TensorView: a non-owning view of a dense, row-major tensor (up to 4 dims) on some device.
// Strides are implied by the shape (contiguous); ops that need strided access say so.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/check.h"
#include "core/dtype.h"

namespace pagoda {

enum class Device : uint8_t { kCpu = 0, kCuda = 1 };

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int ndim = 0;
  std::array<int64_t, 4> shape{0, 0, 0, 0};

  TensorView() = default;
  TensorView(void* d, DType t, std::initializer_list<int64_t> dims, Device dev = Device::kCpu)
      : data(d), dtype(t), device(dev), ndim(static_cast<int>(dims.size())) {
    PAGODA_CHECK_LE(dims.size(), 4u);
    int i = 0;
    for (int64_t v : dims) shape[i++] = v;
  }

  int64_t dim(int i) const {
    PAGODA_CHECK_LT(i, ndim);
    return shape[i];
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool empty() const { return data == nullptr; }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  // Pointer to row r of the leading dimension.
  void* row(int64_t r) const {
    return static_cast<char*>(data) + static_cast<size_t>(r) * (nbytes() / shape[0]);
  }
  // "[2, 3] bf16"
  std::string describe() const;
};

}  // namespace pagoda
