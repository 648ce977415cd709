// pagoda-bench: speed measurements that print numbers (never timed tests).
//
//   pagoda-bench model [--shape tinyllama-1.1b] [--dtype bf16] [--threads N]
//                      [--prompt-len 512] [--decode-tokens 32] [--device cpu]
//
// Builds a synthetic model at a real shape, measures this machine's memory read bandwidth in
// the same run, and prints prefill tokens/s for one prompt and decode tokens/s at batch 1,
// with decode as a fraction of the bandwidth roofline (weight bytes read per token / bandwidth).
// The other modes live beside it: offline (offline_bench.cc; with --sim-step-ms on a simulated
// device, simulated_device.h), device (device_bench.cc: GPU decode and prefill against the
// card's measured copy bandwidth and bf16 GEMM peak).
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_modes.h"
#include "bench/synthetic_rig.h"
#include "core/flags.h"
#include "core/thread_pool.h"
#include "kernels/backend_factory.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/llama.h"
#include "models/synthetic.h"

namespace pagoda {
namespace {

using Clock = std::chrono::steady_clock;

double now_seconds() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// One sequence: slots are its positions (block table 0, 1, 2, ...).
ForwardBatch single_sequence_batch(const std::vector<int32_t>& tokens, int start_pos,
                                   int block_size, int max_blocks) {
  ForwardBatch b;
  const int n = static_cast<int>(tokens.size());
  b.token_ids = tokens;
  for (int i = 0; i < n; ++i) {
    b.positions.push_back(start_pos + i);
    b.slot_mapping.push_back(start_pos + i);
  }
  b.max_blocks_per_seq = max_blocks;
  for (int i = 0; i < max_blocks; ++i) b.block_tables.push_back(i);
  (void)block_size;
  b.seq_lens = {start_pos + n};
  b.query_start = {0, n};
  b.sample_rows = {n - 1};
  return b;
}

}  // namespace

Status run_model_bench(const std::vector<std::string>& args) {
  PAGODA_ASSIGN_OR_RETURN(
      Flags flags,
      Flags::parse(args, {"shape", "dtype", "threads", "prompt-len", "decode-tokens", "device"}));
  PAGODA_ASSIGN_OR_RETURN(int64_t prompt_len, flags.get_int("prompt-len", 512, 1, 1 << 16));
  PAGODA_ASSIGN_OR_RETURN(int64_t decode_tokens, flags.get_int("decode-tokens", 32, 1, 1 << 16));
  PAGODA_ASSIGN_OR_RETURN(
      std::unique_ptr<SyntheticRig> rig,
      build_synthetic_rig(flags, "tinyllama-1.1b", "bf16", prompt_len + decode_tokens,
                          "--prompt-len + --decode-tokens"));
  const std::string& shape = rig->shape;
  const DType dtype = rig->dtype;
  const int64_t threads = rig->threads;
  const LoadedModel& loaded = rig->loaded;
  const ModelConfig& config = loaded.config;
  Backend* backend = rig->backend.get();
  LlamaModel* model = rig->model.get();

  const double bandwidth = measure_read_bandwidth_gbs(static_cast<int>(threads), size_t{512} << 20);
  const double bytes = weight_bytes_per_token(loaded);

  const int block_size = 16;
  const int total = static_cast<int>(prompt_len + decode_tokens);
  const int blocks = (total + block_size - 1) / block_size;
  PAGODA_ASSIGN_OR_RETURN(KvCache cache,
                          KvCache::create(backend, model->kv_cache_shape(blocks, block_size)));
  std::vector<int32_t> prompt(prompt_len);
  for (int i = 0; i < prompt_len; ++i) prompt[i] = (i * 7919 + 11) % config.vocab_size;
  std::vector<float> logits;

  // Warm-up on a short prefix (touches the weights once; page cache, allocations).
  PAGODA_RETURN_IF_ERROR(
      model->forward(single_sequence_batch({1}, 0, block_size, blocks), cache, &logits));

  double t0 = now_seconds();
  PAGODA_RETURN_IF_ERROR(
      model->forward(single_sequence_batch(prompt, 0, block_size, blocks), cache, &logits));
  const double prefill_s = now_seconds() - t0;

  t0 = now_seconds();
  int32_t token = 1;
  for (int i = 0; i < decode_tokens; ++i) {
    PAGODA_RETURN_IF_ERROR(model->forward(
        single_sequence_batch({token}, static_cast<int>(prompt_len) + i, block_size, blocks), cache,
        &logits));
    token = static_cast<int32_t>((token * 31 + i) % config.vocab_size);
  }
  const double decode_s = now_seconds() - t0;

  const double decode_tps = decode_tokens / decode_s;
  const double roofline_tps = bandwidth * 1e9 / bytes;
  const double flops_per_token = 2.0 * bytes / dtype_size(dtype);
  std::printf(
      "| shape | dtype | backend | threads | read GB/s | weight MB/token | prefill %lld tok/s | "
      "prefill GFLOP/s | decode tok/s | roofline tok/s | decode / roofline |\n",
      static_cast<long long>(prompt_len));
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %s | %s | %lld | %.2f | %.1f | %.2f | %.1f | %.3f | %.3f | %.1f%% |\n",
              shape.c_str(), dtype_name(dtype), backend->name().c_str(),
              static_cast<long long>(threads), bandwidth, bytes / 1e6, prompt_len / prefill_s,
              prompt_len * flops_per_token / prefill_s / 1e9, decode_tps, roofline_tps,
              100.0 * decode_tps / roofline_tps);
  return OkStatus();
}

namespace {

constexpr const char* kUsage =
    "usage: pagoda-bench model [--shape tinyllama-1.1b|llama3-1b|llama3-8b|stories260K]\n"
    "                          [--dtype bf16|f16|f32] [--threads N] [--prompt-len N]\n"
    "                          [--decode-tokens N] [--device cpu]\n"
    "       pagoda-bench offline [--shape stories260K] [--dtype f32] [--threads N]\n"
    "                          [--num-requests 64] [--input-len 64] [--output-len 64]\n"
    "                          [--max-num-seqs 256] [--max-batched-tokens 2048] [--kv-cache-mb "
    "512]\n"
    "                          [--temperature 0] [--top-p 1] [--repetition-penalty 1]\n"
    "                          [--logprobs 0] [--device-sampling true]\n"
    "                          [--async-scheduling false] [--compare-async false]\n"
    "                          [--sim-step-ms 0] [--sim-token-us 0]\n"
    "                          (--sim-step-ms X: a simulated device over the CPU backend, X ms\n"
    "                          per step plus --sim-token-us per token, ops free on the host;\n"
    "                          --compare-async true: async scheduling off and on side by side)\n"
    "       pagoda-bench device [--shape llama3-1b] [--dtype bf16] [--device cuda:0/bf16]\n"
    "                          [--batches 1,8,64] [--context 1024] [--prompt-len 2048]\n"
    "                          [--decode-steps 32] [--threads N] [--json FILE]\n"
    "                          (GPU decode/prefill speed against the card's measured copy\n"
    "                          bandwidth and bf16 GEMM peak; builds with CUDA only)\n";

}  // namespace
}  // namespace pagoda

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(pagoda::kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string mode = args[0];
  args.erase(args.begin());
  pagoda::Status s;
  if (mode == "model") {
    s = pagoda::run_model_bench(args);
  } else if (mode == "offline") {
    s = pagoda::run_offline_bench(args);
  } else if (mode == "device") {
    s = pagoda::run_device_bench(args);
#ifdef PAGODA_WITH_SERVER
  } else if (mode == "serve-overhead") {
    s = pagoda::run_serve_overhead_bench(args);
#endif
  } else {
    std::fprintf(stderr, "pagoda-bench: unknown mode '%s'\n%s", mode.c_str(), pagoda::kUsage);
    return 2;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "pagoda-bench: %s\n", s.to_string().c_str());
    return 2;
  }
  return 0;
}
