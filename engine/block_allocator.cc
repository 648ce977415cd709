#include "engine/block_allocator.h"

#include "core/check.h"

namespace pagoda {

BlockAllocator::BlockAllocator(int num_blocks) : in_use_(num_blocks, 0) {
  PAGODA_CHECK_GE(num_blocks, 0);
  free_.reserve(num_blocks);
  // Lowest ids on top of the stack, so a fresh allocator hands out 0, 1, 2, ...
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

bool BlockAllocator::allocate(int n, std::vector<int32_t>* out) {
  PAGODA_CHECK_GE(n, 0);
  if (n > num_free()) return false;
  for (int i = 0; i < n; ++i) {
    const int32_t b = free_.back();
    free_.pop_back();
    in_use_[b] = 1;
    out->push_back(b);
  }
  return true;
}

void BlockAllocator::free(std::span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    PAGODA_CHECK_GE(b, 0);
    PAGODA_CHECK_LT(b, num_blocks());
    PAGODA_CHECK_EQ(static_cast<int>(in_use_[b]), 1);  // double free
    in_use_[b] = 0;
    free_.push_back(b);
  }
}

}  // namespace pagoda
