// The CPU backend: f32 activations, f32/f16/bf16 weights, AVX2+FMA+F16C kernels, one ThreadPool
// of its own. It is the reference every other backend is tested against.
#pragma once

#include <cstddef>
#include <memory>

#include "kernels/ops.h"

namespace pagoda {

// A CPU backend running its ops on num_threads threads (the caller's thread counts as one;
// <= 0 means std::thread::hardware_concurrency()). Aborts with a message if the CPU lacks
// AVX2, FMA or F16C (the whole build assumes x86-64-v3).
std::unique_ptr<Backend> make_cpu_backend(int num_threads);

// This machine's memory read bandwidth in GB/s (1e9 bytes/s) as num_threads threads see it:
// each thread sums its contiguous share of a `bytes`-long buffer with AVX2 loads; the best of a
// few repetitions counts. Use bytes >= 256 MiB (well beyond the caches) for a roofline; small
// sizes measure the caches. num_threads <= 0 means hardware concurrency.
double measure_read_bandwidth_gbs(int num_threads, size_t bytes);

}  // namespace pagoda
