// measure_read_bandwidth_gbs: the roofline's denominator. Each of num_threads threads sums its
// contiguous share of one buffer with plain AVX2 loads, as kStreams streams at once (the access
// pattern of a decode matmul streaming several weight rows); best of kReps timed passes after
// one warm-up pass.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"

namespace pagoda {
namespace {

constexpr int kReps = 5;

// Sums n floats (n a multiple of kStreams * 16) at p, read as kStreams contiguous streams
// advancing together: one stream per core leaves bandwidth on the table (too few misses in
// flight); a decode matmul reads 4-8 weight rows at once, and so does this.
constexpr int kStreams = 8;
constexpr size_t kStep = 16;  // floats per stream per iteration

float sum_floats(const float* p, size_t n) {
  const size_t per = n / kStreams;
  __m256 acc[kStreams];
  for (int s = 0; s < kStreams; ++s) acc[s] = _mm256_setzero_ps();
  for (size_t i = 0; i < per; i += kStep) {
    for (int s = 0; s < kStreams; ++s) {
      acc[s] = _mm256_add_ps(acc[s], _mm256_load_ps(p + s * per + i));
      acc[s] = _mm256_add_ps(acc[s], _mm256_load_ps(p + s * per + i + 8));
    }
  }
  __m256 total = acc[0];
  for (int s = 1; s < kStreams; ++s) total = _mm256_add_ps(total, acc[s]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

}  // namespace

double measure_read_bandwidth_gbs(int num_threads, size_t bytes) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  num_threads = std::max(1, num_threads);
  constexpr size_t kBlock = kStreams * kStep * sizeof(float);  // one loop iteration
  const size_t blocks = std::max<size_t>(bytes / kBlock, static_cast<size_t>(num_threads));
  const size_t total = blocks * kBlock;
  float* buf = static_cast<float*>(std::aligned_alloc(64, total));
  if (buf == nullptr) return 0.0;
  ThreadPool pool(num_threads);
  // First touch from the threads that will read, with non-zero data.
  pool.parallel_for(static_cast<int64_t>(blocks), 1, [&](int64_t b, int64_t e) {
    float* p = buf + b * kStreams * kStep;
    const size_t n = static_cast<size_t>(e - b) * kStreams * kStep;
    for (size_t i = 0; i < n; ++i) p[i] = 1.0f + static_cast<float>(i & 7);
  });
  std::vector<float> sinks(static_cast<size_t>(num_threads) * 16, 0.0f);
  double best = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep <= kReps; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    pool.parallel_for(static_cast<int64_t>(blocks), 1, [&](int64_t b, int64_t e) {
      const float s =
          sum_floats(buf + b * kStreams * kStep, static_cast<size_t>(e - b) * kStreams * kStep);
      // One sink per chunk, a cache line apart, so the sum is not optimised away.
      sinks[static_cast<size_t>(b * num_threads / static_cast<int64_t>(blocks)) * 16] += s;
    });
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rep > 0) best = std::min(best, secs);  // rep 0 is the warm-up
  }
  volatile float keep = sinks[0];
  (void)keep;
  std::free(buf);
  return static_cast<double>(total) / best / 1e9;
}

}  // namespace pagoda
