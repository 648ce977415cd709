// ThreadPool: a fixed set of workers for data-parallel loops. parallel_for splits [0, n) into
// contiguous chunks statically, so which thread computes an index never changes the result
// computed for it (each index's arithmetic is independent of the split).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pagoda {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means everything runs inline (at most 65535).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n); chunks are at least `grain`
  // long. Blocks until all chunks are done. Not reentrant.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // Default pool for the process, sized by set_default_threads (default: hardware threads).
  static ThreadPool& global();
  static void set_default_threads(int n);

 private:
  void worker_loop(int index);

  // Workers and the caller spin briefly on these atomics before sleeping on the condition
  // variables: a decode step issues hundreds of short parallel loops, and a futex wake-up per
  // loop (20-65 us) would cost several percent of each one.
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;  // written before generation_
  int64_t job_n_ = 0;
  std::atomic<uint64_t> generation_{0};  // (loop sequence number << 16) | number of chunks
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace pagoda
