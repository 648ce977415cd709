#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace pagoda {
namespace {

// Every index is visited exactly once, for many loops in a row, with pools larger than the
// number of chunks (idle workers must not run a loop twice or touch the next one).
TEST(ThreadPoolTest, EveryIndexExactlyOnceAcrossManyLoops) {
  for (int threads : {1, 2, 5, 9}) {
    ThreadPool pool(threads);
    for (int loop = 0; loop < 2000; ++loop) {
      const int64_t n = 1 + loop % 37;
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, 1 + loop % 5, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " loop " << loop;
    }
  }
}

TEST(ThreadPoolTest, ChunksAreContiguousAndRespectGrain) {
  ThreadPool pool(4);
  std::atomic<int> calls{0};
  pool.parallel_for(10, 6, [&](int64_t b, int64_t e) {
    calls.fetch_add(1);
    EXPECT_GE(e - b, 5);  // 10 items at grain 6 -> 2 chunks of 5
  });
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace pagoda
