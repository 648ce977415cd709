// Roofline measurement for pagoda-bench-ops: see ops_roofline.h.
#include "bench/ops_roofline.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace pagoda::bench {
namespace {

// 12 independent accumulators: covers a 4-cycle FMA latency on 2 ports (8 in flight) with
// headroom, and fits the 16 ymm registers with the two multiplicands.
constexpr int kChains = 12;
constexpr int64_t kInner = 1024;  // FMAs per chain between clock checks

// Runs FMA chains until `seconds` have passed; returns the number of FMA instructions issued.
int64_t fma_loop(double seconds, float* sink) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f);
  const __m256 b = _mm256_set1_ps(1e-7f);
  int64_t fmas = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto until = start + std::chrono::duration<double>(seconds);
  do {
    for (int64_t k = 0; k < kInner; ++k) {
      for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    fmas += kInner * kChains;
  } while (std::chrono::steady_clock::now() < until);
  __m256 total = acc[0];
  for (int i = 1; i < kChains; ++i) total = _mm256_add_ps(total, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, total);
  *sink = lanes[0] + lanes[7];
  return fmas;
}

}  // namespace

double measure_fma_peak_gflops(int num_threads, double seconds, int reps) {
  num_threads = std::max(1, num_threads);
  double best = 0;
  for (int rep = 0; rep <= reps; ++rep) {  // rep 0 warms the cores up (frequency ramp)
    std::vector<int64_t> counts(num_threads, 0);
    std::vector<float> sinks(static_cast<size_t>(num_threads) * 16, 0.0f);
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < num_threads; ++t) {
      workers.emplace_back([&, t] {
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) {
        }
        counts[t] = fma_loop(seconds, &sinks[static_cast<size_t>(t) * 16]);
      });
    }
    while (ready.load() < num_threads) {
    }
    const auto start = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    for (auto& w : workers) w.join();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    int64_t fmas = 0;
    for (int64_t c : counts) fmas += c;
    volatile float keep = sinks[0];
    (void)keep;
    if (rep > 0) best = std::max(best, static_cast<double>(fmas) * 8 * 2 / secs / 1e9);
  }
  return best;
}

Roofline measure_roofline(int num_threads, size_t bandwidth_bytes) {
  Roofline r;
  r.threads = num_threads;
  r.bandwidth_bytes = bandwidth_bytes;
  r.read_gbs = measure_read_bandwidth_gbs(num_threads, bandwidth_bytes);
  r.fma_gflops = measure_fma_peak_gflops(num_threads);
  r.fma_ghz_2ports = r.fma_gflops / (num_threads * 2.0 * 8 * 2);
  return r;
}

}  // namespace pagoda::bench
