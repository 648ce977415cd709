// BlockAllocator: hands out KV cache block ids. Pure logic over integers: O(1) allocate and
// free, all-or-nothing allocation, double frees caught. (Reference counts and prefix caching
// arrive with the continuous-batching engine.)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace pagoda {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);

  int num_blocks() const { return static_cast<int>(in_use_.size()); }
  int num_free() const { return static_cast<int>(free_.size()); }

  // Appends n block ids to *out, or appends nothing and returns false if fewer are free.
  bool allocate(int n, std::vector<int32_t>* out);
  // Returns blocks to the pool. A block that is not in use is a broken invariant (CHECK).
  void free(std::span<const int32_t> blocks);

 private:
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<uint8_t> in_use_;
};

}  // namespace pagoda
