// KvCache: the paged K/V storage of one model on one backend. Per layer, K and V are
// [num_blocks, block_size, num_kv_heads, head_dim]; which blocks a sequence owns is decided
// above (engine/block_allocator.h) and reaches the model as block tables and slot mappings.
#pragma once

#include <vector>

#include "kernels/ops.h"

namespace pagoda {

struct KvCacheShape {
  int num_layers = 0;
  int num_blocks = 0;
  int block_size = 16;
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kF32;

  size_t bytes_per_block() const {  // K and V, all layers
    return 2ull * num_layers * block_size * num_kv_heads * head_dim * dtype_size(dtype);
  }
};

class KvCache {
 public:
  static StatusOr<KvCache> create(Backend* backend, const KvCacheShape& shape);

  const KvCacheShape& shape() const { return shape_; }
  TensorView k(int layer) const { return view(k_[layer]); }  // [num_blocks, block_size, KV, hd]
  TensorView v(int layer) const { return view(v_[layer]); }  // [num_blocks, block_size, KV, hd]

 private:
  TensorView view(const DeviceBuffer& b) const;

  KvCacheShape shape_;
  Device device_ = Device::kCpu;
  std::vector<DeviceBuffer> k_;
  std::vector<DeviceBuffer> v_;
};

}  // namespace pagoda
