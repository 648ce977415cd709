// pagoda-bench device: the GPU speed benchmark that scripts/device-check.sh runs.
//
//   pagoda-bench device [--shape llama3-1b] [--dtype bf16] [--device cuda:0/bf16]
//                       [--batches 1,8,64] [--context 1024] [--prompt-len 2048]
//                       [--decode-steps 32] [--threads N] [--json FILE]
//
// In one run, on a synthetic model at a real shape (random bf16 weights; speed does not depend
// on the values), it measures:
//   - the card's ceilings: device-to-device copy bandwidth (read + write bytes) and cuBLASLt
//     bf16 GEMM TFLOP/s (kernels/cuda/ceilings.h), so that the numbers below are fractions of
//     what this very card does, not of a datasheet;
//   - decode at each batch size B: B sequences, each with `context` tokens already in the KV
//     cache, advanced one token per step for --decode-steps steps; ms/step and output tokens/s,
//     the fraction of the bandwidth floor (weights + KV read per step / copy bandwidth) and, at
//     B = 1, the roofline: weight bytes read per token / bandwidth;
//   - prefill: one sequence of --prompt-len tokens in one forward; tokens/s and model FLOP
//     utilisation against the measured GEMM peak.
// The KV is never computed: the cache comes zeroed from the allocator and the batches point at
// it as if `context` tokens were there. Attention reads the same bytes whatever they hold.
// Then the same decode steps again, replayed as step graphs (CUDA graphs; the first step of
// each batch size captures): the "graph ms/step" column and its speedup over eager launches.
// Decode steps are greedy, as the engine runs greedy requests: the argmax of each row is taken
// on the device and only the ids come back (no [B, vocab] logits copy). A step's time includes
// that and the host-to-device upload of the step's indices.
//
// Output: progress on stderr; on stdout the ceilings, the formulas and, last, a Markdown table.
// --json FILE writes the same numbers. Bad flags, no CUDA in the build, or no device → a message
// and exit 2 (main.cc), checked before any model is built.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_modes.h"
#include "bench/synthetic_rig.h"
#include "core/flags.h"
#include "models/llama.h"
#include "models/synthetic.h"
#ifdef PAGODA_WITH_CUDA
#include <nlohmann/json.hpp>

#include "kernels/cuda/ceilings.h"
#endif

namespace pagoda {
namespace {

constexpr int kMaxBatch = 4096;
constexpr int kBlockSize = 16;  // the engine's default (DESIGN.md §2)

struct Options {
  std::string shape;
  std::string device;  // as given, "cuda[:N][/bf16]"
  int device_index = 0;
  std::vector<int> batches;
  int context = 0;
  int prompt_len = 0;
  int decode_steps = 0;
  std::string json_path;
};

// "1,8,64" → {1, 8, 64}: each in [1, kMaxBatch], at least one.
StatusOr<std::vector<int>> parse_batches(const std::string& s) {
  const Status bad =
      InvalidArgument("--batches must be a comma-separated list of integers in [1, " +
                      std::to_string(kMaxBatch) + "], got '" + s + "'");
  std::vector<int> out;
  size_t begin = 0;
  while (begin <= s.size()) {
    const size_t comma = std::min(s.find(',', begin), s.size());
    const std::string item = s.substr(begin, comma - begin);
    if (item.empty() || item.size() > 6 ||
        item.find_first_not_of("0123456789") != std::string::npos)
      return bad;
    const int v = std::stoi(item);
    if (v < 1 || v > kMaxBatch) return bad;
    out.push_back(v);
    begin = comma + 1;
  }
  return out;
}

// "cuda", "cuda:N", "cuda/bf16", "cuda:N/bf16" → N. Only bf16 activations: the ceilings and the
// MFU are for the bf16 path (an f32 run would be measured against the wrong peak).
StatusOr<int> parse_cuda_device(const std::string& s) {
  const Status bad = InvalidArgument(
      "--device must be cuda[:N][/bf16] (the device benchmark measures the bf16 GPU path), got '" +
      s + "'");
  std::string spec = s;
  if (const size_t slash = spec.find('/'); slash != std::string::npos) {
    if (spec.substr(slash + 1) != "bf16") return bad;
    spec = spec.substr(0, slash);
  }
  if (spec == "cuda") return 0;
  if (spec.rfind("cuda:", 0) != 0 || spec.size() == 5 || spec.size() > 8 ||
      spec.find_first_not_of("0123456789", 5) != std::string::npos)
    return bad;
  return std::stoi(spec.substr(5));
}

// Everything the run needs, checked before any device or model work.
StatusOr<Options> parse_options(const Flags& flags) {
  Options o;
  o.shape = flags.get_string("shape", "llama3-1b");
  PAGODA_ASSIGN_OR_RETURN(ModelConfig config, synthetic_config(o.shape));
  if (const std::string dtype = flags.get_string("dtype", "bf16"); dtype != "bf16")
    return InvalidArgument(
        "--dtype must be bf16 for the device benchmark (the CUDA GEMMs take "
        "bf16 weights), got '" +
        dtype + "'");
  o.device = flags.get_string("device", "cuda:0/bf16");
  PAGODA_ASSIGN_OR_RETURN(o.device_index, parse_cuda_device(o.device));
  PAGODA_ASSIGN_OR_RETURN(o.batches, parse_batches(flags.get_string("batches", "1,8,64")));
  PAGODA_ASSIGN_OR_RETURN(int64_t context, flags.get_int("context", 1024, 1, 1 << 20));
  PAGODA_ASSIGN_OR_RETURN(int64_t prompt_len, flags.get_int("prompt-len", 2048, 1, 1 << 20));
  PAGODA_ASSIGN_OR_RETURN(int64_t steps, flags.get_int("decode-steps", 32, 1, 100000));
  PAGODA_RETURN_IF_ERROR(flags.get_int("threads", 1, 1, 1024).status());
  if (context + steps > config.max_position_embeddings)
    return InvalidArgument("--context + --decode-steps exceed the context of " + o.shape + " (" +
                           std::to_string(config.max_position_embeddings) + " tokens)");
  if (prompt_len > config.max_position_embeddings)
    return InvalidArgument("--prompt-len exceeds the context of " + o.shape + " (" +
                           std::to_string(config.max_position_embeddings) + " tokens)");
  o.context = static_cast<int>(context);
  o.prompt_len = static_cast<int>(prompt_len);
  o.decode_steps = static_cast<int>(steps);
  if (flags.has("json") && flags.get_string("json", "").empty())
    return InvalidArgument("--json needs a file name");
  o.json_path = flags.get_string("json", "");
  return o;
}

#ifdef PAGODA_WITH_CUDA

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// B one-token rows at decode step `step`: row i is sequence i, which owns the blocks
// [i * blocks_per_seq, (i + 1) * blocks_per_seq) and has context + step tokens before this one.
ForwardBatch decode_batch(int B, int context, int step, int blocks_per_seq, int vocab) {
  ForwardBatch b;
  const int pos = context + step;
  b.max_blocks_per_seq = blocks_per_seq;
  b.query_start.push_back(0);
  for (int i = 0; i < B; ++i) {
    const int first_block = i * blocks_per_seq;
    b.token_ids.push_back(static_cast<int32_t>((int64_t{i} * 7919 + step * 104729 + 1) % vocab));
    b.positions.push_back(pos);
    b.slot_mapping.push_back((first_block + pos / kBlockSize) * kBlockSize + pos % kBlockSize);
    for (int k = 0; k < blocks_per_seq; ++k) b.block_tables.push_back(first_block + k);
    b.seq_lens.push_back(pos + 1);
    b.query_start.push_back(i + 1);
    b.sample_rows.push_back(i);
  }
  b.num_logit_rows = 0;  // greedy: ids only (forward's argmax_ids)
  return b;
}

// One sequence of `tokens` new tokens from position 0 in blocks [0, blocks); the last row sampled.
ForwardBatch prefill_batch(int tokens, int blocks, int vocab) {
  ForwardBatch b;
  b.max_blocks_per_seq = blocks;
  for (int i = 0; i < tokens; ++i) {
    b.token_ids.push_back(static_cast<int32_t>((int64_t{i} * 7919 + 11) % vocab));
    b.positions.push_back(i);
    b.slot_mapping.push_back(i);
  }
  for (int k = 0; k < blocks; ++k) b.block_tables.push_back(k);
  b.seq_lens = {tokens};
  b.query_start = {0, tokens};
  b.sample_rows = {tokens - 1};
  return b;
}

struct DecodeRow {
  int batch = 0;
  double ms_per_step = 0;
  double tokens_per_s = 0;
  double bytes_per_step = 0;      // weights + KV read (average context over the steps)
  double bandwidth_fraction = 0;  // (bytes_per_step / copy bandwidth) / step time
  double mfu = 0;
  double graph_ms_per_step = 0;  // the same steps replayed as a step graph; 0: not measured
};

std::string utc_now() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

constexpr const char* kCopyConvention =
    "device-to-device cudaMemcpyAsync of 1 GiB, (read + write bytes = 2 x 1 GiB) / time, best of "
    "10, CUDA events";
constexpr const char* kGemmConvention =
    "cuBLASLt bf16 x bf16 -> bf16, f32 accumulate, m = n = k = 8192, 2mnk / time, best of the "
    "heuristic's top 4 algorithms, 10 back-to-back runs each";
constexpr const char* kFlopsFormula =
    "FLOPs = 2 * P_matmul * T + 2 * hidden * vocab * R + 4 * layers * heads * head_dim * A, where "
    "P_matmul = the layers' matrix parameters, T = tokens computed, R = rows sent through the LM "
    "head (1 for the prefill, B per decode step), A = sum over tokens of the keys attended "
    "(causal prefill: T(T+1)/2)";

Status run_on_device(const Flags& flags, const Options& o) {
  PAGODA_ASSIGN_OR_RETURN(const std::string card, cuda_device_name(o.device_index));
  std::ofstream json_file;
  if (!o.json_path.empty()) {  // fail before minutes of work, not after
    json_file.open(o.json_path);
    if (!json_file) return InvalidArgument("--json: cannot write '" + o.json_path + "'");
  }

  std::fprintf(stderr, "measuring %s: copy bandwidth, bf16 GEMM peak...\n", card.c_str());
  PAGODA_ASSIGN_OR_RETURN(const double bandwidth_gbs,
                          cuda_copy_bandwidth_gbs(o.device_index, size_t{1} << 30));
  PAGODA_ASSIGN_OR_RETURN(const double gemm_tflops,
                          cuda_bf16_gemm_tflops(o.device_index, 8192, 8192, 8192));

  // Host threads only make the random weights here; all of them make that quick for 8B.
  const int host_threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 64);
  PAGODA_ASSIGN_OR_RETURN(
      std::unique_ptr<SyntheticRig> rig,
      build_synthetic_rig(flags, "llama3-1b", "bf16",
                          std::max(o.context + o.decode_steps, o.prompt_len),
                          "--context + --decode-steps or --prompt-len", host_threads, o.device));
  const ModelConfig& c = rig->loaded.config;
  Backend* backend = rig->backend.get();
  LlamaModel* model = rig->model.get();

  // Sizes (bf16: 2 bytes). KV read per context token: K and V of every layer.
  const double act_bytes = static_cast<double>(dtype_size(backend->activation_dtype()));
  const double weight_bytes = weight_bytes_per_token(rig->loaded);
  const double kv_bytes_per_token = 2.0 * c.num_layers * c.num_kv_heads * c.head_dim * act_bytes;
  const double d = c.hidden_size, q_dim = double{1} * c.num_heads * c.head_dim,
               kv_dim = double{1} * c.num_kv_heads * c.head_dim;
  const double matmul_params =
      c.num_layers * (2 * d * q_dim + 2 * d * kv_dim + 3 * d * c.intermediate_size);
  const double lm_head_flops_per_row = 2.0 * d * c.vocab_size;
  const double attn_flops_per_key = 4.0 * c.num_layers * c.num_heads * c.head_dim;
  double params = 0;
  for (const auto& [name, t] : rig->loaded.weights.tensors())
    if (!rig->loaded.weights.is_view(name)) params += t.numel();  // fused parts counted once

  // Workspace for the largest step first, then the KV cache (as the engine does): no device
  // allocation happens inside a timed step.
  const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  const int decode_blocks = (o.context + o.decode_steps + kBlockSize - 1) / kBlockSize;
  const int prefill_blocks = (o.prompt_len + kBlockSize - 1) / kBlockSize;
  const int64_t num_blocks = std::max<int64_t>(int64_t{max_batch} * decode_blocks, prefill_blocks);
  if (num_blocks > (int64_t{1} << 31) / kBlockSize)
    return InvalidArgument("--batches x (--context + --decode-steps) is too many tokens of KV");
  PAGODA_RETURN_IF_ERROR(model->reserve(std::max(o.prompt_len, max_batch), max_batch,
                                        static_cast<int>(num_blocks), max_batch));
  const KvCacheShape kv_shape = model->kv_cache_shape(static_cast<int>(num_blocks), kBlockSize);
  const double kv_need = static_cast<double>(kv_shape.bytes_per_block()) * num_blocks;
  PAGODA_ASSIGN_OR_RETURN(const size_t free_bytes, backend->available_memory_bytes());
  // Headroom for what is allocated on first use: the cuBLASLt workspace, cuBLAS/kernel modules.
  constexpr double kHeadroom = 512.0 * (1 << 20);
  if (kv_need + kHeadroom > static_cast<double>(free_bytes)) {
    char msg[256];
    std::snprintf(
        msg, sizeof(msg),
        "the KV cache for batch %d at %d tokens needs %.1f GiB (+ 0.5 GiB headroom); %.1f "
        "GiB free on the card: use a smaller --batches or --context",
        max_batch, o.context + o.decode_steps, kv_need / (1 << 30),
        static_cast<double>(free_bytes) / (1 << 30));
    return ResourceExhausted(msg);
  }
  PAGODA_ASSIGN_OR_RETURN(KvCache cache, KvCache::create(backend, kv_shape));
  std::vector<float> logits;
  std::vector<int32_t> greedy_ids;

  // ---- decode --------------------------------------------------------------------------
  std::vector<DecodeRow> decode;
  // Step s attends context + s + 1 keys; the mean over the steps:
  const double mean_keys = o.context + (o.decode_steps + 1) / 2.0;
  for (const int B : o.batches) {
    std::fprintf(stderr, "decode: batch %d, %d steps at context %d...\n", B, o.decode_steps,
                 o.context);
    // Warm-up: the first step of a shape makes cuBLASLt plans and loads kernels.
    PAGODA_RETURN_IF_ERROR(model->forward(
        decode_batch(B, o.context, 0, decode_blocks, c.vocab_size), cache, &logits, &greedy_ids));
    // Batches are built before the clock starts: their host cost is not the model's.
    std::vector<ForwardBatch> steps;
    for (int s = 0; s < o.decode_steps; ++s)
      steps.push_back(decode_batch(B, o.context, s, decode_blocks, c.vocab_size));
    const auto t0 = Clock::now();
    for (const ForwardBatch& b : steps)
      PAGODA_RETURN_IF_ERROR(model->forward(b, cache, &logits, &greedy_ids));
    const double step_s = seconds_since(t0) / o.decode_steps;
    DecodeRow r;
    r.batch = B;
    r.ms_per_step = step_s * 1e3;
    r.tokens_per_s = B / step_s;
    r.bytes_per_step = weight_bytes + B * mean_keys * kv_bytes_per_token;
    r.bandwidth_fraction = r.bytes_per_step / (bandwidth_gbs * 1e9) / step_s;
    const double flops =
        B * (2 * matmul_params + lm_head_flops_per_row + attn_flops_per_key * mean_keys);
    r.mfu = flops / step_s / (gemm_tflops * 1e12);
    decode.push_back(r);
  }

  // ---- decode again, each step replayed as a step graph (CUDA graph) -----------------------
  // The same batches; the first step of each batch size captures (untimed), the rest replay.
  LlamaModel::GraphStats graph_stats;
  if (backend->supports_graphs()) {
    std::vector<int> buckets(o.batches.begin(), o.batches.end());
    std::sort(buckets.begin(), buckets.end());
    buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
    PAGODA_RETURN_IF_ERROR(model->enable_decode_graphs(buckets, decode_blocks));
    for (DecodeRow& r : decode) {
      std::fprintf(stderr, "decode with graphs: batch %d...\n", r.batch);
      PAGODA_RETURN_IF_ERROR(
          model->forward(decode_batch(r.batch, o.context, 0, decode_blocks, c.vocab_size), cache,
                         &logits, &greedy_ids));
      std::vector<ForwardBatch> steps;
      for (int s = 0; s < o.decode_steps; ++s)
        steps.push_back(decode_batch(r.batch, o.context, s, decode_blocks, c.vocab_size));
      const auto t0 = Clock::now();
      for (const ForwardBatch& b : steps)
        PAGODA_RETURN_IF_ERROR(model->forward(b, cache, &logits, &greedy_ids));
      r.graph_ms_per_step = seconds_since(t0) / o.decode_steps * 1e3;
    }
    graph_stats = model->graph_stats();
  }

  // ---- prefill -------------------------------------------------------------------------
  constexpr int kPrefillRuns = 3;
  std::fprintf(stderr, "prefill: %d tokens, 1 + %d runs...\n", o.prompt_len, kPrefillRuns);
  const ForwardBatch prompt = prefill_batch(o.prompt_len, prefill_blocks, c.vocab_size);
  PAGODA_RETURN_IF_ERROR(model->forward(prompt, cache, &logits));  // warm-up
  const auto t0 = Clock::now();
  for (int i = 0; i < kPrefillRuns; ++i)
    PAGODA_RETURN_IF_ERROR(model->forward(prompt, cache, &logits));
  const double prefill_s = seconds_since(t0) / kPrefillRuns;
  const double T = o.prompt_len;
  const double prefill_flops =
      2 * matmul_params * T + lm_head_flops_per_row + attn_flops_per_key * T * (T + 1) / 2;
  const double prefill_mfu = prefill_flops / prefill_s / (gemm_tflops * 1e12);

  // At batch 1 the roofline: weights only.
  const DecodeRow* b1 = nullptr;
  for (const DecodeRow& r : decode)
    if (r.batch == 1) b1 = &r;
  const double weight_roofline_tps = bandwidth_gbs * 1e9 / weight_bytes;

  // ---- report --------------------------------------------------------------------------
  std::printf("card: %s (%s)\n", card.c_str(), backend->name().c_str());
  std::printf("copy bandwidth: %.1f GB/s (%s)\n", bandwidth_gbs, kCopyConvention);
  std::printf("bf16 GEMM peak: %.1f TFLOP/s (%s)\n", gemm_tflops, kGemmConvention);
  std::printf(
      "model: synthetic %s bf16, %.1f M parameters, %.3f GB of weights read per decode step, "
      "%.1f KiB of KV read per context token\n",
      rig->shape.c_str(), params / 1e6, weight_bytes / 1e9, kv_bytes_per_token / 1024);
  std::printf(
      "decode: %d steps per batch after 1 warm-up step; each row attends context + 1 .. context "
      "+ %d keys; %% BW = (weights + KV bytes read per step) / copy bandwidth / step time\n",
      o.decode_steps, o.decode_steps);
  std::printf("MFU = FLOPs / time / bf16 GEMM peak; %s\n", kFlopsFormula);
  if (b1 != nullptr) {
    std::printf(
        "batch-1 decode: %.1f tok/s = %.1f%% of the weight-bandwidth roofline (copy bandwidth / "
        "weight bytes per token = %.1f tok/s)\n",
        b1->tokens_per_s, 100 * b1->tokens_per_s / weight_roofline_tps, weight_roofline_tps);
  }
  std::printf("step graphs: %lld captures, %lld replays, %lld failed captures\n",
              static_cast<long long>(graph_stats.captures),
              static_cast<long long>(graph_stats.replays),
              static_cast<long long>(graph_stats.failures));
  std::printf(
      "\n| %s bf16 on %s | batch | context | ms/step | tok/s | %% BW | MFU | graph ms/step | "
      "graph speedup |\n",
      rig->shape.c_str(), card.c_str());
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const DecodeRow& r : decode) {
    std::printf("| decode | %d | %d | %.3f | %.1f | %.1f%% | %.2f%% | ", r.batch, o.context,
                r.ms_per_step, r.tokens_per_s, 100 * r.bandwidth_fraction, 100 * r.mfu);
    if (r.graph_ms_per_step > 0) {
      std::printf("%.3f | %.2fx |\n", r.graph_ms_per_step, r.ms_per_step / r.graph_ms_per_step);
    } else {
      std::printf("- | - |\n");
    }
  }
  std::printf("| prefill %d | 1 | 0 | %.3f | %.1f | - | %.1f%% | - | - |\n", o.prompt_len,
              prefill_s * 1e3, T / prefill_s, 100 * prefill_mfu);

  if (json_file.is_open()) {
    nlohmann::json j;
    j["mode"] = "device";
    j["date"] = utc_now();
    j["card"] = card;
    j["device"] = backend->name();
    j["shape"] = rig->shape;
    j["dtype"] = "bf16";
    j["ceilings"] = {{"copy_bandwidth_gbs", bandwidth_gbs},
                     {"copy_bandwidth_convention", kCopyConvention},
                     {"bf16_gemm_tflops", gemm_tflops},
                     {"bf16_gemm_convention", kGemmConvention}};
    j["model"] = {{"parameters", params},
                  {"matmul_parameters", matmul_params},
                  {"weight_bytes_per_token", weight_bytes},
                  {"kv_bytes_per_context_token", kv_bytes_per_token}};
    j["flops_formula"] = kFlopsFormula;
    j["decode"] = nlohmann::json::array();
    for (const DecodeRow& r : decode) {
      j["decode"].push_back({{"batch", r.batch},
                             {"context", o.context},
                             {"steps", o.decode_steps},
                             {"ms_per_step", r.ms_per_step},
                             {"tokens_per_s", r.tokens_per_s},
                             {"bytes_read_per_step", r.bytes_per_step},
                             {"bandwidth_fraction", r.bandwidth_fraction},
                             {"mfu", r.mfu},
                             {"graph_ms_per_step", r.graph_ms_per_step}});
    }
    if (b1 != nullptr) {
      j["decode_batch1"] = {{"tokens_per_s", b1->tokens_per_s},
                            {"weight_roofline_tokens_per_s", weight_roofline_tps},
                            {"weight_roofline_fraction", b1->tokens_per_s / weight_roofline_tps}};
    }
    j["prefill"] = {{"tokens", o.prompt_len}, {"runs", kPrefillRuns},
                    {"ms", prefill_s * 1e3},  {"tokens_per_s", T / prefill_s},
                    {"flops", prefill_flops}, {"mfu", prefill_mfu}};
    json_file << j.dump(2) << "\n";
    json_file.close();
    if (!json_file) return Internal("--json: writing '" + o.json_path + "' failed");
    std::fprintf(stderr, "wrote %s\n", o.json_path.c_str());
  }
  return OkStatus();
}

#endif  // PAGODA_WITH_CUDA

}  // namespace

Status run_device_bench(const std::vector<std::string>& args) {
  PAGODA_ASSIGN_OR_RETURN(Flags flags,
                          Flags::parse(args, {"shape", "dtype", "device", "batches", "context",
                                              "prompt-len", "decode-steps", "threads", "json"}));
  PAGODA_ASSIGN_OR_RETURN(const Options options, parse_options(flags));
#ifdef PAGODA_WITH_CUDA
  return run_on_device(flags, options);
#else
  (void)options;
  return FailedPrecondition(
      "device: this build has no CUDA (configure with -DPAGODA_CUDA=ON where nvcc exists)");
#endif
}

}  // namespace pagoda
