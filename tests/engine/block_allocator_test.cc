#include "engine/block_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace pagoda {
namespace {

TEST(BlockAllocatorTest, AllOrNothing) {
  BlockAllocator a(4);
  std::vector<int32_t> got;
  EXPECT_TRUE(a.allocate(3, &got));
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_FALSE(a.allocate(2, &got));  // only one left: nothing is taken
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(a.num_free(), 1);
  a.free(std::vector<int32_t>{1});
  std::vector<int32_t> more;
  EXPECT_TRUE(a.allocate(2, &more));
  EXPECT_EQ(more, (std::vector<int32_t>{1, 3}));  // last freed is reused first
  EXPECT_EQ(a.num_free(), 0);
}

TEST(BlockAllocatorDeathTest, DoubleFreeIsCaught) {
  BlockAllocator a(2);
  std::vector<int32_t> got;
  ASSERT_TRUE(a.allocate(1, &got));
  a.free(got);
  EXPECT_DEATH(a.free(got), "CHECK failed");
}

// Random allocate/free traffic: blocks held are always distinct, and everything comes back.
TEST(BlockAllocatorTest, RandomTrafficNeverLeaksOrDuplicates) {
  std::mt19937 rng(5);
  BlockAllocator a(37);
  std::vector<std::vector<int32_t>> owners(8);
  for (int step = 0; step < 5000; ++step) {
    auto& o = owners[rng() % owners.size()];
    if (rng() % 3 == 0) {
      a.free(o);
      o.clear();
    } else {
      const int n = static_cast<int>(rng() % 6);
      const int before = a.num_free();
      const bool ok = a.allocate(n, &o);
      EXPECT_EQ(ok, n <= before);
    }
    std::set<int32_t> held;
    size_t count = 0;
    for (const auto& v : owners) {
      held.insert(v.begin(), v.end());
      count += v.size();
    }
    ASSERT_EQ(held.size(), count);
    ASSERT_EQ(static_cast<int>(count) + a.num_free(), 37);
  }
  for (auto& o : owners) a.free(o);
  EXPECT_EQ(a.num_free(), 37);
}

}  // namespace
}  // namespace pagoda
