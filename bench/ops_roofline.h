// The roofline pagoda-bench-ops compares kernels against, measured on this machine in the same
// run (never assumed from a spec sheet): the memory read bandwidth and the FMA compute peak, both
// at the thread count the kernels run with.
#pragma once

#include <cstddef>

namespace pagoda::bench {

struct Roofline {
  int threads = 0;
  size_t bandwidth_bytes = 0;  // buffer size the bandwidth was measured over
  double read_gbs = 0;         // GB/s (1e9 bytes/s), from measure_read_bandwidth_gbs
  double fma_gflops = 0;       // f32 GFLOP/s, 8-lane FMA (AVX2, the width the kernels use)
  double fma_ghz_2ports = 0;   // fma_gflops / (threads * 2 ports * 8 lanes * 2): implied clock
};

// f32 FMA peak of num_threads threads: each runs a register-resident loop of independent 8-lane
// FMA chains (enough to cover latency x ports) for about `seconds`; the best of `reps` counts.
double measure_fma_peak_gflops(int num_threads, double seconds = 0.15, int reps = 3);

// Measures both (bandwidth over `bandwidth_bytes`, which should be well beyond the last-level
// cache) and returns them.
Roofline measure_roofline(int num_threads, size_t bandwidth_bytes);

}  // namespace pagoda::bench
