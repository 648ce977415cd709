// pagoda-bench offline: N requests of fixed input/output lengths through the Engine at once, on
// a synthetic model; prints output tokens/s and, measured in the same run, the single-request
// decode rate, so the gain from batching shows as a ratio. Greedy by default; --temperature T
// (with --top-p) samples, seeded, on the backend or, with --device-sampling false, on the host;
// --async-scheduling true plans each step while the one before runs (EngineConfig);
// --logprobs K asks for K top logprobs per token (on the backend, or with --device-sampling
// false from logits copied back to the host).
//
// --sim-step-ms X [--sim-token-us Y] runs the model on a simulated device over the CPU backend
// (bench/simulated_device.h): ops cost no host time, each step keeps the "device" busy for
// X ms + Y us per token, and waiting for results blocks until it is done. The engine's host
// work is then the only real work, and the table shows how long each step left the device idle.
// --compare-async true runs the batch with async scheduling off, then on, in the same process
// (no single-request run), and prints how much host time per step async scheduling took off the
// critical path. Nothing here runs on a GPU.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_modes.h"
#include "bench/simulated_device.h"
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
  int64_t steps = 0, lookahead_steps = 0, wasted_rows = 0;
  SimulatedDevice::Stats device;  // zeros on a real backend
  Status error;                   // the first request that did not end at its length
};

// Sampling of every request: greedy unless temperature > 0 (then seeded, with top_p).
struct Sampling {
  float temperature = 0.0f;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;  // 1: off
  int logprobs = 0;                 // top logprobs per token (0: none)
};

// sim: the model's backend when it is the simulated device (its counters cover this run), else
// null.
StatusOr<RunResult> run_requests(LlamaModel* model, SimulatedDevice* sim,
                                 const EngineConfig& config, int num_requests, int input_len,
                                 int output_len, const Sampling& sampling) {
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(model, nullptr, config));
  const int vocab = model->config().vocab_size;
  std::vector<RequestHandle> handles;
  if (sim != nullptr) sim->reset_stats();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < num_requests; ++i) {
    Request r;
    r.prompt_ids.resize(input_len);
    for (int k = 0; k < input_len; ++k) r.prompt_ids[k] = (i * 7919 + k * 104729) % vocab;
    r.params.temperature = sampling.temperature;
    r.params.top_p = sampling.top_p;
    r.params.repetition_penalty = sampling.repetition_penalty;
    r.params.logprobs = sampling.logprobs;
    if (sampling.temperature > 0) r.params.seed = 1000 + i;
    r.params.ignore_eos = true;
    r.params.max_tokens = output_len;
    PAGODA_ASSIGN_OR_RETURN(RequestHandle h, engine->submit(std::move(r)));
    handles.push_back(std::move(h));
  }
  // Every stream is drained as it goes, round robin (as a server writes each one out), not one
  // request after another: that would leave the later requests' messages queued for the whole
  // run, and the engine thread would pay for the growing heap (page faults in emit).
  RunResult res;
  std::vector<RequestHandle*> open;
  for (auto& h : handles) open.push_back(&h);
  while (!open.empty()) {
    std::erase_if(open, [&](RequestHandle* h) {
      auto out = h->outputs->next_merged();
      res.output_tokens += static_cast<int64_t>(out->new_token_ids.size());
      if (out->finished && out->finish_reason != FinishReason::kLength && res.error.ok())
        res.error =
            Internal(std::string("request ended with ") + finish_reason_name(out->finish_reason));
      return out->finished;
    });
  }
  PAGODA_RETURN_IF_ERROR(res.error);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Complete: the engine publishes its stats before it emits a step's final messages.
  const EngineStats stats = engine->stats();
  res.preemptions = stats.preemptions;
  res.steps = stats.steps;
  res.lookahead_steps = stats.lookahead_steps;
  res.wasted_rows = stats.wasted_rows;
  if (sim != nullptr) res.device = sim->stats();
  return res;
}

// The flags of the simulated device, checked before any model work. step_ms == 0: off.
struct SimFlags {
  double step_ms = 0, token_us = 0;
};

StatusOr<SimFlags> sim_flags(const Flags& flags) {
  SimFlags f;
  PAGODA_ASSIGN_OR_RETURN(f.step_ms, flags.get_double("sim-step-ms", 0.0, -1e300, 1e300));
  PAGODA_ASSIGN_OR_RETURN(f.token_us, flags.get_double("sim-token-us", 0.0, -1e300, 1e300));
  if (f.step_ms < 0 || f.step_ms > 10000)
    return InvalidArgument("--sim-step-ms must be in [0, 10000] (ms per step; 0: off), got " +
                           flags.get_string("sim-step-ms", ""));
  if (f.token_us < 0 || f.token_us > 1e6)
    return InvalidArgument("--sim-token-us must be in [0, 1e6] (us per token of a step), got " +
                           flags.get_string("sim-token-us", ""));
  if (f.token_us > 0 && f.step_ms == 0)
    return InvalidArgument("--sim-token-us needs --sim-step-ms > 0 (the simulated device)");
  const std::string device = flags.get_string("device", "cpu");
  if (f.step_ms > 0 && device != "cpu")
    return InvalidArgument(
        "--sim-step-ms simulates a device over the CPU backend: --device must be cpu, got '" +
        device + "'");
  return f;
}

// The wall time per step that the simulated device was not running a step: the host's share of
// the critical path (plus submission, the last delivery and the timer's wake-up slack).
double idle_ms_per_step(const RunResult& r) {
  return (r.seconds - r.device.busy_seconds) * 1e3 / std::max<int64_t>(r.steps, 1);
}

// How late sleep_until woke the host on average: part of every wait, in both modes.
double late_ms_per_wait(const RunResult& r) {
  return r.device.late_seconds * 1e3 / std::max<int64_t>(r.device.waits, 1);
}

// One row of the table: a batch run, and the single-request run beside it (absent with
// --compare-async).
struct Row {
  bool async = false;
  RunResult batch;
  std::optional<RunResult> single;
};

void print_table(const std::string& shape, DType dtype, const std::string& backend,
                 const Sampling& sampling, bool device_sampling, int64_t n, int64_t in_len,
                 int64_t out_len, bool simulated, const std::vector<Row>& rows) {
  std::printf(
      "| shape | dtype | backend | sampling | requests | in | out | output tok/s | "
      "single-request tok/s | batching gain | preemptions | steps | ms/step | "
      "device idle ms/step |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    const RunResult& b = row.batch;
    char how[160];
    if (sampling.temperature > 0) {
      std::snprintf(how, sizeof(how), "T %.2f, top-p %.2f, %s%s", sampling.temperature,
                    sampling.top_p, device_sampling ? "on the backend" : "on the host",
                    row.async ? ", async" : "");
    } else {
      std::snprintf(how, sizeof(how), "greedy%s", row.async ? ", async" : "");
    }
    if (sampling.repetition_penalty != 1.0f) {
      const size_t used = std::strlen(how);
      std::snprintf(how + used, sizeof(how) - used, ", rep. penalty %.2f",
                    sampling.repetition_penalty);
    }
    if (sampling.logprobs > 0) {
      const size_t used = std::strlen(how);
      // Greedy rows take the backend's argmax, and its logprobs, either way.
      const bool on_backend = device_sampling || !(sampling.temperature > 0);
      std::snprintf(how + used, sizeof(how) - used, ", %d logprobs on the %s", sampling.logprobs,
                    on_backend ? "backend" : "host");
    }
    const double batch_tps = b.output_tokens / b.seconds;
    char single[64] = "-", gain[32] = "-", idle[32] = "-";
    if (row.single) {
      const double single_tps = row.single->output_tokens / row.single->seconds;
      std::snprintf(single, sizeof(single), "%.1f", single_tps);
      std::snprintf(gain, sizeof(gain), "%.2fx", batch_tps / single_tps);
    }
    const double steps = static_cast<double>(std::max<int64_t>(b.steps, 1));
    if (simulated) std::snprintf(idle, sizeof(idle), "%.3f", idle_ms_per_step(b));
    std::printf(
        "| %s | %s | %s | %s | %lld | %lld | %lld | %.1f | %s | %s | %lld | %lld | %.3f | "
        "%s |\n",
        shape.c_str(), dtype_name(dtype), backend.c_str(), how, static_cast<long long>(n),
        static_cast<long long>(in_len), static_cast<long long>(out_len), batch_tps, single, gain,
        static_cast<long long>(b.preemptions), static_cast<long long>(b.steps),
        b.seconds * 1e3 / steps, idle);
  }
}

}  // namespace

Status run_offline_bench(const std::vector<std::string>& args) {
  PAGODA_ASSIGN_OR_RETURN(
      Flags flags,
      Flags::parse(
          args, {"shape", "dtype", "threads", "num-requests", "input-len", "output-len",
                 "max-num-seqs", "max-batched-tokens", "kv-cache-mb", "device", "temperature",
                 "top-p", "repetition-penalty", "logprobs", "device-sampling", "async-scheduling",
                 "sim-step-ms", "sim-token-us", "compare-async"}));
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
  PAGODA_ASSIGN_OR_RETURN(double rep, flags.get_double("repetition-penalty", 1.0, 1e-3, 100.0));
  sampling.repetition_penalty = static_cast<float>(rep);
  PAGODA_ASSIGN_OR_RETURN(int64_t logprobs,
                          flags.get_int("logprobs", 0, 0, SamplingParams::kMaxLogprobs));
  sampling.logprobs = static_cast<int>(logprobs);
  PAGODA_ASSIGN_OR_RETURN(const bool device_sampling,
                          bool_flag(flags, "device-sampling", /*fallback=*/true));
  PAGODA_ASSIGN_OR_RETURN(const bool async_scheduling,
                          bool_flag(flags, "async-scheduling", /*fallback=*/false));
  PAGODA_ASSIGN_OR_RETURN(const bool compare_async,
                          bool_flag(flags, "compare-async", /*fallback=*/false));
  if (compare_async && flags.has("async-scheduling"))
    return InvalidArgument(
        "--compare-async runs async scheduling off and on: drop --async-scheduling");
  PAGODA_ASSIGN_OR_RETURN(const SimFlags sim_cfg, sim_flags(flags));
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticRig> rig,
                          build_synthetic_rig(flags, "stories260K", "f32", in_len + out_len,
                                              "--input-len + --output-len"));
  SimulatedDevice* sim = nullptr;
  if (sim_cfg.step_ms > 0) {
    // The same weights on the simulated device (on the CPU they are used in place, so this
    // copies nothing); the rig's model goes first, as it points at the backend being wrapped.
    rig->model.reset();
    auto wrapped = std::make_unique<SimulatedDevice>(std::move(rig->backend), sim_cfg.step_ms,
                                                     sim_cfg.token_us);
    sim = wrapped.get();
    rig->backend = std::move(wrapped);
    PAGODA_ASSIGN_OR_RETURN(rig->model, LlamaModel::create(rig->loaded, rig->backend.get()));
  }
  LlamaModel* model = rig->model.get();

  EngineConfig ec;
  ec.max_num_seqs = static_cast<int>(max_seqs);
  ec.max_num_batched_tokens = static_cast<int>(budget);
  ec.kv_cache_bytes = static_cast<size_t>(kv_mb) << 20;
  ec.max_model_len = static_cast<int>(in_len + out_len);
  ec.enable_prefix_caching = false;  // distinct prompts; keep the comparison about batching
  ec.device_sampling = device_sampling;
  ec.async_scheduling = async_scheduling;

  const auto run = [&](const EngineConfig& config, int64_t requests, int64_t output_len) {
    return run_requests(model, sim, config, static_cast<int>(requests), static_cast<int>(in_len),
                        static_cast<int>(output_len), sampling);
  };
  std::vector<Row> rows;
  if (compare_async) {
    // An untimed warm-up of the same batch with a few output tokens first: the first run in a
    // process pays for first touches (heap, workspace pages, the host pool) that would
    // otherwise all land on the sync row (on the CPU backend, about 10% of its time).
    PAGODA_RETURN_IF_ERROR(run(ec, n, std::min<int64_t>(out_len, 4)).status());
    for (const bool async : {false, true}) {
      ec.async_scheduling = async;
      Row row{async, {}, std::nullopt};
      PAGODA_ASSIGN_OR_RETURN(row.batch, run(ec, n, out_len));
      rows.push_back(std::move(row));
    }
  } else {
    Row row{async_scheduling, {}, std::nullopt};
    PAGODA_ASSIGN_OR_RETURN(row.single, run(ec, 1, out_len));
    PAGODA_ASSIGN_OR_RETURN(row.batch, run(ec, n, out_len));
    rows.push_back(std::move(row));
  }
  std::string backend = rig->backend->name();
  if (sim != nullptr) backend += ", " + sim->timing();
  print_table(rig->shape, rig->dtype, backend, sampling, device_sampling, n, in_len, out_len,
              sim != nullptr, rows);
  if (!compare_async) return OkStatus();
  std::printf(
      "(--compare-async: an untimed warm-up, then the batch of %lld with async scheduling "
      "off and on; no single-request run)\n",
      static_cast<long long>(n));
  const RunResult& sync = rows[0].batch;
  const RunResult& async = rows[1].batch;
  // The same requests and (to a step) the same steps: ignore_eos, so no lookahead row is wasted.
  // With a simulated device, whose steps take a fixed time, the time saved per step is the host
  // work async scheduling took out of the gap between steps; on the plain CPU backend the ops
  // run inside launch() and nothing overlaps, so expect about zero there.
  const double ratio = (async.output_tokens / async.seconds) / (sync.output_tokens / sync.seconds);
  const double off_path_ms =
      (sync.seconds - async.seconds) * 1e3 / static_cast<double>(std::max<int64_t>(sync.steps, 1));
  std::printf("async/sync output tok/s: %.2fx; host ms per step off the critical path: %.2f\n",
              ratio, off_path_ms);
  std::printf(
      "(steps: sync %lld, async %lld, of which %lld planned during the step before; %lld "
      "wasted rows)\n",
      static_cast<long long>(sync.steps), static_cast<long long>(async.steps),
      static_cast<long long>(async.lookahead_steps), static_cast<long long>(async.wasted_rows));
  // The same figure from each run's own steps (async often takes one more: its first lookahead
  // is planned before all submissions are in), so an extra step does not count against it.
  if (sim != nullptr) {
    const double idle_sync = idle_ms_per_step(sync), idle_async = idle_ms_per_step(async);
    std::printf(
        "(device idle ms per step: sync %.3f, async %.3f, difference %.3f; timer wake-up "
        "slack per wait: sync %.3f, async %.3f ms)\n",
        idle_sync, idle_async, idle_sync - idle_async, late_ms_per_wait(sync),
        late_ms_per_wait(async));
  }
  return OkStatus();
}

}  // namespace pagoda
