// pagoda-bench-ops: kernel benchmarks of the CPU backend (Google Benchmark) printing achieved
// GB/s or FLOP/s beside the roofline measured at start in the same run:
//   read_GB/s   measure_read_bandwidth_gbs over a buffer beyond the last-level cache
//   fma_GFLOP/s a register-resident 8-lane FMA loop on the same number of threads
// Counters: "GB/s" / "FLOP/s" are rates over real time (the kernels run on a thread pool, so CPU
// time of the calling thread means nothing); "of_bw" / "of_peak" are the fractions of the
// roofline. Memory-bound benchmarks that should stream from DRAM (decode matmul, decode
// attention) cycle through enough copies of their data to exceed the working-set size; rms_norm
// and swiglu run on hot activations, as in a model step, so their of_bw can exceed 1 (cache).
//
// Flags (besides Google Benchmark's): --threads=N (or PAGODA_BENCH_THREADS; default 2),
// --ws_mib=M (or PAGODA_BENCH_WS_MIB; default 1024): bytes streamed per cycle of copies and the
// size the bandwidth is measured over.
//
// TODO(gpu): a CUDA variant plugs in at make_ops_backend() below: make_backend("cuda", 0), time
// each iteration with cudaEvent pairs and state.SetIterationTime() under ->UseManualTime(), and
// replace measure_roofline() with a device-to-device copy bandwidth kernel and an FMA loop
// kernel (or tensor-core GEMM peak) run on the device. Everything else (shapes, byte and FLOP
// counts, counters) is backend-neutral and stays as it is.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/ops_roofline.h"
#include "kernels/backend_factory.h"
#include "kernels/ops.h"

namespace pagoda::bench {
namespace {

int g_threads = 2;
size_t g_ws_bytes = size_t{1024} << 20;
Roofline g_roof;
std::unique_ptr<Backend> g_backend;

// Backend memory filled with small non-zero values of dtype t (no denormals, no NaNs); pages
// are touched so that reads hit real memory.
DeviceBuffer make_filled(size_t bytes, DType t, uint32_t seed) {
  auto buf = g_backend->allocate(std::max<size_t>(bytes, 64));
  if (!buf.ok()) {
    std::fprintf(stderr, "allocate(%zu) failed: %s\n", bytes, buf.status().to_string().c_str());
    std::abort();
  }
  // One pattern chunk, copied over the buffer (fast even for a GiB).
  constexpr size_t kChunk = 1 << 20;
  std::vector<char> pattern(kChunk);
  std::mt19937 rng(seed);
  if (t == DType::kF32) {
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    auto* f = reinterpret_cast<float*>(pattern.data());
    for (size_t i = 0; i < kChunk / 4; ++i) f[i] = d(rng);
  } else {
    // f16: 0x3800 | m in [0.5, 1); bf16: 0x3F00 | m in [0.5, 1); sign bit random.
    auto* h = reinterpret_cast<uint16_t*>(pattern.data());
    for (size_t i = 0; i < kChunk / 2; ++i) {
      const uint32_t r = rng();
      const uint16_t base = t == DType::kF16 ? 0x3800 : 0x3F00;
      const uint16_t mask = t == DType::kF16 ? 0x3FF : 0x7F;
      h[i] = static_cast<uint16_t>(base | (r & mask) | ((r >> 16) & 1 ? 0x8000 : 0));
    }
  }
  for (size_t off = 0; off < bytes; off += kChunk) {
    (void)g_backend->copy_from_host(static_cast<char*>(buf->data()) + off, pattern.data(),
                                    std::min(kChunk, bytes - off));
  }
  return std::move(*buf);
}

// The streaming pool: g_ws_bytes of backend memory, filled once, that decode matmul and decode
// attention cycle through so that every iteration reads memory the previous ones evicted. Each
// 16-bit half is 0x3C00 | m (sign random): a normal number read as f16 (1..1.25), bf16
// (~0.008) or, pairwise, f32 (~0.008), so one fill serves every dtype.
DeviceBuffer g_pool;

DeviceBuffer make_pool(size_t bytes) {
  auto buf = g_backend->allocate(bytes);
  if (!buf.ok()) {
    std::fprintf(stderr, "allocate(%zu) failed: %s\n", bytes, buf.status().to_string().c_str());
    std::abort();
  }
  constexpr size_t kChunk = 1 << 20;
  std::vector<uint16_t> pattern(kChunk / 2);
  std::mt19937 rng(12345);
  for (auto& h : pattern) {
    const uint32_t r = rng();
    h = static_cast<uint16_t>(0x3C00 | (r & 0xFF) | ((r >> 16) & 1 ? 0x8000 : 0));
  }
  for (size_t off = 0; off < bytes; off += kChunk) {
    (void)g_backend->copy_from_host(static_cast<char*>(buf->data()) + off, pattern.data(),
                                    std::min(kChunk, bytes - off));
  }
  return std::move(*buf);
}

// How many copies of `bytes` fit in the streaming pool (at least 1; more if the pool is
// smaller than one copy is an error the caller reports).
int copies_for(size_t bytes) {
  return static_cast<int>(g_pool.size() / bytes);
}

void check(benchmark::State& state, const Status& s) {
  if (!s.ok()) state.SkipWithError(s.to_string().c_str());
}

// Wall time of a benchmark loop, for the roofline fractions.
struct WallTimer {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

void set_bandwidth(benchmark::State& state, double bytes_per_iter, double secs) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes_per_iter, benchmark::Counter::kIsIterationInvariantRate);
  const double gbs = bytes_per_iter * static_cast<double>(state.iterations()) / secs / 1e9;
  state.counters["of_bw"] = gbs / g_roof.read_gbs;
}

// Decode matmul [1, K] x [N, K]^T: weight bytes streamed from memory.
void BM_DecodeMatmul(benchmark::State& state, int64_t K, int64_t N, DType wt) {
  const size_t wbytes = static_cast<size_t>(N * K) * dtype_size(wt);
  const int copies = copies_for(wbytes);
  if (copies < 2) return state.SkipWithError("--ws_mib too small for two copies of the weight");
  void* w = g_pool.data();
  DeviceBuffer x = make_filled(static_cast<size_t>(K) * 4, DType::kF32, 2);
  DeviceBuffer out = make_filled(static_cast<size_t>(N) * 4, DType::kF32, 3);
  MatmulArgs a;
  a.x = TensorView(x.data(), DType::kF32, {1, K});
  a.out = TensorView(out.data(), DType::kF32, {1, N});
  int c = 0;
  a.w = TensorView(w, wt, {N, K});
  check(state, g_backend->matmul(a));  // warm-up
  WallTimer timer;
  for (auto _ : state) {
    a.w = TensorView(static_cast<char*>(w) + wbytes * c, wt, {N, K});
    c = (c + 1) % copies;
    check(state, g_backend->matmul(a));
  }
  check(state, g_backend->synchronize());
  set_bandwidth(state, static_cast<double>(wbytes), timer.seconds());
  state.counters["copies"] = copies;
}

// Prefill matmul [T, K] x [N, K]^T: 2 T N K FLOP against the FMA peak.
void BM_PrefillMatmul(benchmark::State& state, int64_t T, int64_t K, int64_t N, DType wt) {
  DeviceBuffer w = make_filled(static_cast<size_t>(N * K) * dtype_size(wt), wt, 1);
  DeviceBuffer x = make_filled(static_cast<size_t>(T * K) * 4, DType::kF32, 2);
  DeviceBuffer out = make_filled(static_cast<size_t>(T * N) * 4, DType::kF32, 3);
  MatmulArgs a;
  a.x = TensorView(x.data(), DType::kF32, {T, K});
  a.w = TensorView(w.data(), wt, {N, K});
  a.out = TensorView(out.data(), DType::kF32, {T, N});
  const double flops = 2.0 * static_cast<double>(T * N * K);
  WallTimer timer;
  for (auto _ : state) check(state, g_backend->matmul(a));
  check(state, g_backend->synchronize());
  const double secs = timer.seconds();
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_peak"] =
      flops * static_cast<double>(state.iterations()) / secs / 1e9 / g_roof.fma_gflops;
}

// Paged attention decode: B sequences of `ctx` context, one new token each, GQA n_heads/n_kv,
// block 16, cache dtype cd (f32 unless named). Bytes = the K and V of every context position
// read once.
void BM_AttentionDecode(benchmark::State& state, int64_t B, int64_t ctx, int64_t head_dim,
                        DType cd = DType::kF32) {
  constexpr int64_t kHeads = 32, kKvHeads = 4, kBlock = 16;
  const int64_t blocks_per_seq = (ctx + kBlock - 1) / kBlock;
  const int64_t blocks = B * blocks_per_seq;
  const size_t block_bytes = static_cast<size_t>(kBlock * kKvHeads * head_dim) * dtype_size(cd);
  const int copies = copies_for(2 * block_bytes * blocks);
  if (copies < 1) return state.SkipWithError("--ws_mib too small for the KV cache");
  const int64_t pool_blocks = blocks * copies;
  char* kc = static_cast<char*>(g_pool.data());
  char* vc = kc + block_bytes * pool_blocks;
  DeviceBuffer q = make_filled(static_cast<size_t>(B * kHeads * head_dim) * 4, DType::kF32, 6);
  DeviceBuffer out = make_filled(static_cast<size_t>(B * kHeads * head_dim) * 4, DType::kF32, 7);
  // One block table per copy, each a random permutation of its share of the pool (paged, not
  // contiguous), on the backend's device.
  std::vector<int32_t> host_tables(static_cast<size_t>(pool_blocks));
  std::iota(host_tables.begin(), host_tables.end(), 0);
  std::mt19937 rng(8);
  for (int c = 0; c < copies; ++c)
    std::shuffle(host_tables.begin() + c * blocks, host_tables.begin() + (c + 1) * blocks, rng);
  std::vector<int32_t> host_lens(static_cast<size_t>(B), static_cast<int32_t>(ctx));
  std::vector<int32_t> host_starts(static_cast<size_t>(B + 1));
  std::iota(host_starts.begin(), host_starts.end(), 0);
  auto upload = [](const std::vector<int32_t>& v) {
    auto r = g_backend->allocate(v.size() * 4);
    DeviceBuffer b = std::move(*r);
    (void)g_backend->copy_from_host(b.data(), v.data(), v.size() * 4);
    return b;
  };
  DeviceBuffer tables = upload(host_tables), lens = upload(host_lens), starts = upload(host_starts);
  AttentionArgs a;
  a.q = TensorView(q.data(), DType::kF32, {B, kHeads, head_dim});
  a.k_cache = TensorView(kc, cd, {pool_blocks, kBlock, kKvHeads, head_dim});
  a.v_cache = TensorView(vc, cd, {pool_blocks, kBlock, kKvHeads, head_dim});
  a.seq_lens = TensorView(lens.data(), DType::kI32, {B});
  a.query_start = TensorView(starts.data(), DType::kI32, {B + 1});
  a.out = TensorView(out.data(), DType::kF32, {B, kHeads, head_dim});
  a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const double kv_bytes = 2.0 * static_cast<double>(B * ctx * kKvHeads * head_dim) * dtype_size(cd);
  int c = 0;
  WallTimer timer;
  for (auto _ : state) {
    a.block_tables = TensorView(static_cast<int32_t*>(tables.data()) + c * blocks, DType::kI32,
                                {B, blocks_per_seq});
    c = (c + 1) % copies;
    check(state, g_backend->attention(a));
  }
  check(state, g_backend->synchronize());
  set_bandwidth(state, kv_bytes, timer.seconds());
  state.counters["copies"] = copies;
}

// Paged attention prefill: one sequence computing a chunk of q_len tokens at the end of a
// `ctx` context (causal), GQA 32/4, block 16, f32 cache, hot in cache (a chunk's K/V is read
// by all its rows: compute-bound). FLOP = 4 * head_dim * n_heads * (keys over all rows).
void BM_AttentionPrefill(benchmark::State& state, int64_t q_len, int64_t ctx, int64_t head_dim) {
  constexpr int64_t kHeads = 32, kKvHeads = 4, kBlock = 16;
  const int64_t blocks = (ctx + kBlock - 1) / kBlock;
  const size_t cache_bytes = static_cast<size_t>(blocks * kBlock * kKvHeads * head_dim) * 4;
  DeviceBuffer kc = make_filled(cache_bytes, DType::kF32, 4);
  DeviceBuffer vc = make_filled(cache_bytes, DType::kF32, 5);
  const size_t act = static_cast<size_t>(q_len * kHeads * head_dim) * 4;
  DeviceBuffer q = make_filled(act, DType::kF32, 6), out = make_filled(act, DType::kF32, 7);
  std::vector<int32_t> host_table(static_cast<size_t>(blocks));
  std::iota(host_table.begin(), host_table.end(), 0);
  std::shuffle(host_table.begin(), host_table.end(), std::mt19937(9));
  auto upload = [](const std::vector<int32_t>& v) {
    auto r = g_backend->allocate(v.size() * 4);
    DeviceBuffer b = std::move(*r);
    (void)g_backend->copy_from_host(b.data(), v.data(), v.size() * 4);
    return b;
  };
  DeviceBuffer table = upload(host_table), len = upload({static_cast<int32_t>(ctx)}),
               starts = upload({0, static_cast<int32_t>(q_len)});
  AttentionArgs a;
  a.q = TensorView(q.data(), DType::kF32, {q_len, kHeads, head_dim});
  a.k_cache = TensorView(kc.data(), DType::kF32, {blocks, kBlock, kKvHeads, head_dim});
  a.v_cache = TensorView(vc.data(), DType::kF32, {blocks, kBlock, kKvHeads, head_dim});
  a.block_tables = TensorView(table.data(), DType::kI32, {1, blocks});
  a.seq_lens = TensorView(len.data(), DType::kI32, {1});
  a.query_start = TensorView(starts.data(), DType::kI32, {2});
  a.out = TensorView(out.data(), DType::kF32, {q_len, kHeads, head_dim});
  a.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  // Rows see ctx - q_len + 1 .. ctx keys.
  const double keys = static_cast<double>(q_len) * static_cast<double>(2 * ctx - q_len + 1) / 2;
  const double flops = 4.0 * static_cast<double>(head_dim * kHeads) * keys;
  WallTimer timer;
  for (auto _ : state) check(state, g_backend->attention(a));
  check(state, g_backend->synchronize());
  const double secs = timer.seconds();
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_peak"] =
      flops * static_cast<double>(state.iterations()) / secs / 1e9 / g_roof.fma_gflops;
}

// rms_norm with residual over [T, dim]: reads input, residual, weight; writes residual, out.
void BM_RmsNorm(benchmark::State& state, int64_t T, int64_t dim) {
  const size_t act = static_cast<size_t>(T * dim) * 4;
  DeviceBuffer in = make_filled(act, DType::kF32, 1), res = make_filled(act, DType::kF32, 2),
               out = make_filled(act, DType::kF32, 3),
               w = make_filled(static_cast<size_t>(dim) * 4, DType::kF32, 4);
  RmsNormArgs a;
  a.input = TensorView(in.data(), DType::kF32, {T, dim});
  a.residual = TensorView(res.data(), DType::kF32, {T, dim});
  a.weight = TensorView(w.data(), DType::kF32, {dim});
  a.out = TensorView(out.data(), DType::kF32, {T, dim});
  WallTimer timer;
  for (auto _ : state) check(state, g_backend->rms_norm(a));
  check(state, g_backend->synchronize());
  set_bandwidth(state, 4.0 * static_cast<double>(act) + static_cast<double>(dim) * 4,
                timer.seconds());
}

// swiglu over [T, H]: reads gate and up, writes out.
void BM_Swiglu(benchmark::State& state, int64_t T, int64_t H) {
  const size_t act = static_cast<size_t>(T * H) * 4;
  DeviceBuffer gate = make_filled(act, DType::kF32, 1), up = make_filled(act, DType::kF32, 2),
               out = make_filled(act, DType::kF32, 3);
  SwigluArgs a;
  a.gate = TensorView(gate.data(), DType::kF32, {T, H});
  a.up = TensorView(up.data(), DType::kF32, {T, H});
  a.out = TensorView(out.data(), DType::kF32, {T, H});
  WallTimer timer;
  for (auto _ : state) check(state, g_backend->swiglu(a));
  check(state, g_backend->synchronize());
  set_bandwidth(state, 3.0 * static_cast<double>(act), timer.seconds());
}

struct Shape {
  const char* model;
  int64_t K, N;
};
// tinyllama-1.1b MLP up/gate (2048 -> 5632) and attention projection (2048 -> 2048); llama3-8b
// MLP up/gate (4096 -> 14336).
constexpr Shape kMatmulShapes[] = {
    {"tinyllama", 2048, 5632}, {"tinyllama", 2048, 2048}, {"llama3-8b", 4096, 14336}};
constexpr DType kWeightDtypes[] = {DType::kF32, DType::kF16, DType::kBF16};

std::string shape_name(const Shape& s) {
  return std::string(s.model) + "/K" + std::to_string(s.K) + "xN" + std::to_string(s.N);
}

void register_all(double min_time) {
  auto tune = [&](benchmark::internal::Benchmark* b) {
    b->UseRealTime()->MinTime(min_time)->Unit(benchmark::kMillisecond);
  };
  for (const Shape& s : kMatmulShapes)
    for (DType t : kWeightDtypes)
      tune(benchmark::RegisterBenchmark(
          ("decode_matmul/" + shape_name(s) + "/" + dtype_name(t)).c_str(),
          [s, t](benchmark::State& st) { BM_DecodeMatmul(st, s.K, s.N, t); }));
  for (int64_t T : {128, 512})
    for (const Shape& s : kMatmulShapes)
      for (DType t : kWeightDtypes)
        tune(benchmark::RegisterBenchmark(
            ("prefill_matmul/T" + std::to_string(T) + "/" + shape_name(s) + "/" + dtype_name(t))
                .c_str(),
            [T, s, t](benchmark::State& st) { BM_PrefillMatmul(st, T, s.K, s.N, t); }));
  for (int64_t hd : {64, 128})
    for (int64_t ctx : {512, 2048})
      for (int64_t B : {1, 8, 32})
        tune(benchmark::RegisterBenchmark(
            ("attention_decode/B" + std::to_string(B) + "/ctx" + std::to_string(ctx) +
             "/h32kv4/hd" + std::to_string(hd))
                .c_str(),
            [B, ctx, hd](benchmark::State& st) { BM_AttentionDecode(st, B, ctx, hd); }));
  for (int64_t hd : {64, 128})  // a half-precision cache: half the bytes per key
    tune(benchmark::RegisterBenchmark(
        ("attention_decode/B32/ctx2048/h32kv4/hd" + std::to_string(hd) + "/bf16").c_str(),
        [hd](benchmark::State& st) { BM_AttentionDecode(st, 32, 2048, hd, DType::kBF16); }));
  for (auto [q_len, ctx] : {std::pair<int64_t, int64_t>{512, 512}, {256, 2048}})
    tune(benchmark::RegisterBenchmark(
        ("attention_prefill/T" + std::to_string(q_len) + "/ctx" + std::to_string(ctx) +
         "/h32kv4/hd64")
            .c_str(),
        [q_len, ctx](benchmark::State& st) { BM_AttentionPrefill(st, q_len, ctx, 64); }));
  for (int64_t dim : {2048, 5632}) {
    tune(benchmark::RegisterBenchmark(("rms_norm/T512/dim" + std::to_string(dim)).c_str(),
                                      [dim](benchmark::State& st) { BM_RmsNorm(st, 512, dim); }));
    tune(benchmark::RegisterBenchmark(("swiglu/T512/H" + std::to_string(dim)).c_str(),
                                      [dim](benchmark::State& st) { BM_Swiglu(st, 512, dim); }));
  }
}

std::unique_ptr<Backend> make_ops_backend() {
  // TODO(gpu): the CUDA variant selects "cuda" here (see the header comment).
  auto b = make_backend("cpu", g_threads);
  if (!b.ok()) {
    std::fprintf(stderr, "make_backend: %s\n", b.status().to_string().c_str());
    std::exit(1);
  }
  return std::move(*b);
}

// Takes --name=value out of argv (Google Benchmark rejects flags it does not know).
bool take_flag(int* argc, char** argv, const char* name, std::string* value) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      *value = argv[i] + prefix.size();
      for (int j = i; j + 1 < *argc; ++j) argv[j] = argv[j + 1];
      --*argc;
      return true;
    }
  }
  return false;
}

}  // namespace
}  // namespace pagoda::bench

int main(int argc, char** argv) {
  using namespace pagoda::bench;
  std::string v;
  if (const char* e = std::getenv("PAGODA_BENCH_THREADS")) g_threads = std::atoi(e);
  if (take_flag(&argc, argv, "threads", &v)) g_threads = std::atoi(v.c_str());
  if (const char* e = std::getenv("PAGODA_BENCH_WS_MIB")) g_ws_bytes = size_t(std::atol(e)) << 20;
  if (take_flag(&argc, argv, "ws_mib", &v)) g_ws_bytes = size_t(std::atol(v.c_str())) << 20;
  double min_time = 0.2;
  if (take_flag(&argc, argv, "ops_min_time", &v)) min_time = std::atof(v.c_str());
  g_threads = std::max(1, g_threads);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  g_backend = make_ops_backend();
  g_roof = measure_roofline(g_threads, g_ws_bytes);
  g_pool = make_pool(g_ws_bytes);
  char buf[64];
  benchmark::AddCustomContext("backend", g_backend->name());
  benchmark::AddCustomContext("threads", std::to_string(g_threads));
  benchmark::AddCustomContext("working_set_MiB", std::to_string(g_ws_bytes >> 20));
  std::snprintf(buf, sizeof buf, "%.2f", g_roof.read_gbs);
  benchmark::AddCustomContext("roofline_read_GB/s", buf);
  std::snprintf(buf, sizeof buf, "%.1f", g_roof.fma_gflops);
  benchmark::AddCustomContext("roofline_fma_GFLOP/s", buf);
  std::snprintf(buf, sizeof buf, "%.2f", g_roof.fma_ghz_2ports);
  benchmark::AddCustomContext("implied_clock_GHz(2 FMA ports x 8 lanes)", buf);

  register_all(min_time);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_pool.reset();
  g_backend.reset();
  return 0;
}
