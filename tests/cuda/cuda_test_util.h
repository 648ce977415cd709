// Helpers for the CUDA tests: skip without a device, random host data quantized to a dtype,
// and tensors uploaded to / downloaded from a Backend.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"

namespace pagoda::testing {

// Skips the current test when no device is visible (CI), else makes a backend on device 0.
#define PAGODA_CUDA_BACKEND_OR_SKIP(backend_var)                               \
  if (!::pagoda::cuda_device_available()) {                                    \
    GTEST_SKIP() << "no CUDA device";                                          \
  }                                                                            \
  auto backend_var##_or = ::pagoda::make_cuda_backend(0);                      \
  ASSERT_TRUE(backend_var##_or.ok()) << backend_var##_or.status().to_string(); \
  std::unique_ptr<::pagoda::Backend> backend_var = std::move(backend_var##_or).value()

// n values uniform in [lo, hi), rounded to dtype t (so a reference sees exactly what the device
// sees). Never all zeros.
inline std::vector<float> random_values(size_t n, DType t, std::mt19937& rng, float lo = -2.0f,
                                        float hi = 2.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) {
    const float r = dist(rng);
    if (t == DType::kF32) {
      x = r;
    } else {
      uint32_t h = 0;  // room for any dtype
      store_from_f32(&h, t, 0, r);
      x = load_as_f32(&h, t, 0);
    }
  }
  return v;
}

inline std::vector<uint8_t> encode(const std::vector<float>& values, DType t) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(t));
  for (size_t i = 0; i < values.size(); ++i) store_from_f32(bytes.data(), t, i, values[i]);
  return bytes;
}

inline std::vector<float> decode(const std::vector<uint8_t>& bytes, DType t) {
  std::vector<float> values(bytes.size() / dtype_size(t));
  for (size_t i = 0; i < values.size(); ++i) values[i] = load_as_f32(bytes.data(), t, i);
  return values;
}

// A device buffer and a view of (part of) it.
struct DeviceTensor {
  DeviceBuffer buffer;
  TensorView view;
};

// Uploads values as dtype t with the given shape, starting `offset_elems` elements into the
// allocation (to make deliberately misaligned views).
inline DeviceTensor upload(Backend& backend, const std::vector<float>& values, DType t,
                           std::initializer_list<int64_t> dims, size_t offset_elems = 0) {
  DeviceTensor d;
  const std::vector<uint8_t> bytes = encode(values, t);
  const size_t offset = offset_elems * dtype_size(t);
  auto buf = backend.allocate(bytes.size() + offset + 16);
  EXPECT_TRUE(buf.ok()) << buf.status().to_string();
  if (!buf.ok()) return d;
  d.buffer = std::move(buf).value();
  void* data = static_cast<char*>(d.buffer.data()) + offset;
  const Status s = backend.copy_from_host(data, bytes.data(), bytes.size());
  EXPECT_TRUE(s.ok()) << s.to_string();
  d.view = TensorView(data, t, dims, Device::kCuda);
  return d;
}

// Uploads i32 indices (token ids, positions, slots) as a [n] view, bytes as they are.
inline DeviceTensor upload_ids(Backend& backend, const std::vector<int32_t>& ids) {
  DeviceTensor d;
  auto buf = backend.allocate(ids.size() * sizeof(int32_t) + 16);
  EXPECT_TRUE(buf.ok()) << buf.status().to_string();
  if (!buf.ok()) return d;
  d.buffer = std::move(buf).value();
  const Status s =
      backend.copy_from_host(d.buffer.data(), ids.data(), ids.size() * sizeof(int32_t));
  EXPECT_TRUE(s.ok()) << s.to_string();
  d.view =
      TensorView(d.buffer.data(), DType::kI32, {static_cast<int64_t>(ids.size())}, Device::kCuda);
  return d;
}

inline std::vector<float> download(Backend& backend, const TensorView& v) {
  std::vector<uint8_t> bytes(v.nbytes());
  const Status s = backend.copy_to_host(bytes.data(), v.data, bytes.size());
  EXPECT_TRUE(s.ok()) << s.to_string();
  return decode(bytes, v.dtype);
}

// Fills a device tensor with 0xff bytes: NaN in f32, f16 and bf16.
inline void poison(Backend& backend, const TensorView& v) {
  const std::vector<uint8_t> bytes(v.nbytes(), 0xff);
  const Status s = backend.copy_from_host(v.data, bytes.data(), bytes.size());
  EXPECT_TRUE(s.ok()) << s.to_string();
}

}  // namespace pagoda::testing
