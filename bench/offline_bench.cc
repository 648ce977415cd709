// pagoda-bench offline: N requests of fixed input/output lengths through the Engine at once, on
// a synthetic model; prints output tokens/s and, measured in the same run, the single-request
// decode rate, so the gain from batching shows as a ratio. Greedy by default; --temperature T
// (with --top-p) samples, seeded, on the backend or, with --device-sampling false, on the host;
// --async-scheduling true plans each step while the one before runs (EngineConfig).
#include <chrono>
#include <cstdio>

#include "bench/bench_modes.h"
#include "bench/synthetic_rig.h"
#include "core/flags.h"
#include "core/thread_pool.h"
#include "engine/engine.h"
#include "kernels/backend_factory.h"
#include "models/synthetic.h"

namespace pagoda {
namespace {

// A flag that is "true" or "false" (fallback when absent).
StatusOr<bool> bool_flag(const Flags& flags, const std::string& name, bool fallback) {
  const std::string v = flags.get_string(name, fallback ? "true" : "false");
  if (v != "true" && v != "false")
    return InvalidArgument("--" + name + " must be true or false, got '" + v + "'");
  return v == "true";
}

struct RunResult {
  double seconds = 0;
  int64_t output_tokens = 0;
  int64_t preemptions = 0;
};

// Sampling of every request: greedy unless temperature > 0 (then seeded, with top_p).
struct Sampling {
  float temperature = 0.0f;
  float top_p = 1.0f;
};

StatusOr<RunResult> run_requests(LlamaModel* model, const EngineConfig& config, int num_requests,
                                 int input_len, int output_len, const Sampling& sampling) {
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(model, nullptr, config));
  const int vocab = model->config().vocab_size;
  std::vector<RequestHandle> handles;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < num_requests; ++i) {
    Request r;
    r.prompt_ids.resize(input_len);
    for (int k = 0; k < input_len; ++k) r.prompt_ids[k] = (i * 7919 + k * 104729) % vocab;
    r.params.temperature = sampling.temperature;
    r.params.top_p = sampling.top_p;
    if (sampling.temperature > 0) r.params.seed = 1000 + i;
    r.params.ignore_eos = true;
    r.params.max_tokens = output_len;
    PAGODA_ASSIGN_OR_RETURN(RequestHandle h, engine->submit(std::move(r)));
    handles.push_back(std::move(h));
  }
  RunResult res;
  for (auto& h : handles) {
    for (;;) {
      auto out = h.outputs->next();
      res.output_tokens += static_cast<int64_t>(out->new_token_ids.size());
      if (out->finished) {
        if (out->finish_reason != FinishReason::kLength)
          return Internal(std::string("request ended with ") +
                          finish_reason_name(out->finish_reason));
        break;
      }
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.preemptions = engine->stats().preemptions;
  return res;
}

}  // namespace

Status run_offline_bench(const std::vector<std::string>& args) {
  PAGODA_ASSIGN_OR_RETURN(
      Flags flags,
      Flags::parse(args, {"shape", "dtype", "threads", "num-requests", "input-len", "output-len",
                          "max-num-seqs", "max-batched-tokens", "kv-cache-mb", "device",
                          "temperature", "top-p", "device-sampling", "async-scheduling"}));
  PAGODA_ASSIGN_OR_RETURN(int64_t n, flags.get_int("num-requests", 64, 1, 1 << 20));
  PAGODA_ASSIGN_OR_RETURN(int64_t in_len, flags.get_int("input-len", 64, 1, 1 << 20));
  PAGODA_ASSIGN_OR_RETURN(int64_t out_len, flags.get_int("output-len", 64, 1, 1 << 20));
  PAGODA_ASSIGN_OR_RETURN(int64_t max_seqs, flags.get_int("max-num-seqs", 256, 1, 1 << 16));
  PAGODA_ASSIGN_OR_RETURN(int64_t budget, flags.get_int("max-batched-tokens", 2048, 1, 1 << 20));
  PAGODA_ASSIGN_OR_RETURN(int64_t kv_mb, flags.get_int("kv-cache-mb", 512, 1, 1 << 20));
  Sampling sampling;
  PAGODA_ASSIGN_OR_RETURN(double temperature, flags.get_double("temperature", 0.0, 0.0, 100.0));
  PAGODA_ASSIGN_OR_RETURN(double top_p, flags.get_double("top-p", 1.0, 1e-6, 1.0));
  sampling.temperature = static_cast<float>(temperature);
  sampling.top_p = static_cast<float>(top_p);
  PAGODA_ASSIGN_OR_RETURN(const bool device_sampling,
                          bool_flag(flags, "device-sampling", /*fallback=*/true));
  PAGODA_ASSIGN_OR_RETURN(const bool async_scheduling,
                          bool_flag(flags, "async-scheduling", /*fallback=*/false));
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticRig> rig,
                          build_synthetic_rig(flags, "stories260K", "f32", in_len + out_len,
                                              "--input-len + --output-len"));
  LlamaModel* model = rig->model.get();
  const std::string& shape = rig->shape;
  const DType dtype = rig->dtype;
  Backend* backend = rig->backend.get();

  EngineConfig ec;
  ec.max_num_seqs = static_cast<int>(max_seqs);
  ec.max_num_batched_tokens = static_cast<int>(budget);
  ec.kv_cache_bytes = static_cast<size_t>(kv_mb) << 20;
  ec.max_model_len = static_cast<int>(in_len + out_len);
  ec.enable_prefix_caching = false;  // distinct prompts; keep the comparison about batching
  ec.device_sampling = device_sampling;
  ec.async_scheduling = async_scheduling;

  PAGODA_ASSIGN_OR_RETURN(RunResult single, run_requests(model, ec, 1, static_cast<int>(in_len),
                                                         static_cast<int>(out_len), sampling));
  PAGODA_ASSIGN_OR_RETURN(RunResult batch,
                          run_requests(model, ec, static_cast<int>(n), static_cast<int>(in_len),
                                       static_cast<int>(out_len), sampling));
  const double single_tps = single.output_tokens / single.seconds;
  const double batch_tps = batch.output_tokens / batch.seconds;
  char how[112];
  if (sampling.temperature > 0) {
    std::snprintf(how, sizeof(how), "T %.2f, top-p %.2f, %s%s", sampling.temperature,
                  sampling.top_p, ec.device_sampling ? "on the backend" : "on the host",
                  ec.async_scheduling ? ", async" : "");
  } else {
    std::snprintf(how, sizeof(how), "greedy%s", ec.async_scheduling ? ", async" : "");
  }
  std::printf(
      "| shape | dtype | backend | sampling | requests | in | out | output tok/s | "
      "single-request tok/s | batching gain | preemptions |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %s | %s | %s | %lld | %lld | %lld | %.1f | %.1f | %.2fx | %lld |\n",
              shape.c_str(), dtype_name(dtype), backend->name().c_str(), how,
              static_cast<long long>(n), static_cast<long long>(in_len),
              static_cast<long long>(out_len), batch_tps, single_tps, batch_tps / single_tps,
              static_cast<long long>(batch.preemptions));
  return OkStatus();
}

}  // namespace pagoda
