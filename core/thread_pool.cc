#include "core/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <memory>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pagoda {

namespace {

int g_default_threads = 0;

// How long a thread busy-waits for the next loop (or for the workers to finish) before it
// blocks. Long enough to bridge the gap between two ops of a forward pass.
constexpr auto kSpinTime = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Spins until pred() holds or kSpinTime passes; returns pred().
template <typename Pred>
bool spin_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    for (int k = 0; k < 16; ++k) cpu_relax();
    if ((i & 15) == 15 && std::chrono::steady_clock::now() > deadline) return pred();
  }
}

void chunk_bounds(int64_t n, int chunks, int index, int64_t* begin, int64_t* end) {
  const int64_t base = n / chunks, rem = n % chunks;
  *begin = index * base + std::min<int64_t>(index, rem);
  *end = *begin + base + (index < rem ? 1 : 0);
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  const int extra = std::clamp(num_threads, 1, 0xffff) - 1;
  workers_.reserve(extra);
  for (int i = 0; i < extra; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int chunks = static_cast<int>(std::min<int64_t>(num_threads(), (n + grain - 1) / grain));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  pending_.store(chunks - 1, std::memory_order_relaxed);
  {
    // Publishing under the mutex pairs with the sleeping workers' predicate check. The chunk
    // count travels inside the generation word: a worker that is not needed for this loop
    // (index >= chunks) reads nothing else, so it never races with the next loop's setup.
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t seq = (generation_.load(std::memory_order_relaxed) >> 16) + 1;
    generation_.store(seq << 16 | static_cast<uint64_t>(chunks), std::memory_order_release);
  }
  start_cv_.notify_all();
  int64_t b, e;
  chunk_bounds(n, chunks, 0, &b, &e);
  fn(b, e);
  auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(done)) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, done);
  }
  job_ = nullptr;
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto ready = [&] {
      return stop_.load(std::memory_order_acquire) ||
             generation_.load(std::memory_order_acquire) != seen;
    };
    if (!spin_until(ready)) {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, ready);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = generation_.load(std::memory_order_acquire);
    const int chunks = static_cast<int>(seen & 0xffff);
    if (index < chunks) {
      int64_t b, e;
      chunk_bounds(job_n_, chunks, index, &b, &e);
      (*job_)(b, e);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        done_cv_.notify_one();
      }
    }
  }
}

ThreadPool& ThreadPool::global() {
  static std::unique_ptr<ThreadPool> pool = [] {
    int n = g_default_threads > 0 ? g_default_threads
                                  : static_cast<int>(std::thread::hardware_concurrency());
    return std::make_unique<ThreadPool>(std::max(1, n));
  }();
  return *pool;
}

void ThreadPool::set_default_threads(int n) {
  g_default_threads = n;
}

}  // namespace pagoda
