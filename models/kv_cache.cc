#include "models/kv_cache.h"

namespace pagoda {

StatusOr<KvCache> KvCache::create(Backend* backend, const KvCacheShape& shape) {
  if (shape.num_layers <= 0 || shape.num_blocks <= 0 || shape.block_size <= 0 ||
      shape.num_kv_heads <= 0 || shape.head_dim <= 0) {
    return InvalidArgument("kv cache: every dimension must be positive (layers " +
                           std::to_string(shape.num_layers) + ", blocks " +
                           std::to_string(shape.num_blocks) + ", block_size " +
                           std::to_string(shape.block_size) + ")");
  }
  KvCache cache;
  cache.shape_ = shape;
  cache.device_ = backend->device();
  const size_t layer_bytes = shape.bytes_per_block() / (2ull * shape.num_layers) * shape.num_blocks;
  for (int l = 0; l < shape.num_layers; ++l) {
    PAGODA_ASSIGN_OR_RETURN(DeviceBuffer k, backend->allocate(layer_bytes));
    PAGODA_ASSIGN_OR_RETURN(DeviceBuffer v, backend->allocate(layer_bytes));
    cache.k_.push_back(std::move(k));
    cache.v_.push_back(std::move(v));
  }
  return cache;
}

TensorView KvCache::view(const DeviceBuffer& b) const {
  return TensorView(b.data(), shape_.dtype,
                    {shape_.num_blocks, shape_.block_size, shape_.num_kv_heads, shape_.head_dim},
                    device_);
}

}  // namespace pagoda
