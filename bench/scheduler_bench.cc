// Scheduler overhead per step: schedule() + update() with N running requests in steady decode,
// no model. Target (issue 3): under 100 us per step at 1024 running requests.
#include <benchmark/benchmark.h>

#include "engine/scheduler.h"

namespace pagoda {
namespace {

void BM_ScheduleUpdateDecodeStep(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const bool prefix_caching = state.range(1) != 0;
  SchedulerConfig c;
  c.block_size = 16;
  c.max_model_len = 4096;
  c.max_num_seqs = n;
  c.max_num_batched_tokens = 2 * n;
  c.num_blocks =
      n * ((64 + 3100) / 16 + 1) + 1024;  // every request can grow through the timed loop
  c.enable_prefix_caching = prefix_caching;
  Scheduler s(c);
  for (int i = 0; i < n; ++i) {
    NewRequest r;
    r.id = i;
    r.prompt.assign(64, 0);
    for (int k = 0; k < 64; ++k) r.prompt[k] = (i * 131 + k) % 32000;
    r.max_tokens = 4000;
    r.arrival = i;
    (void)s.add(std::move(r));
  }
  std::vector<SampledToken> sampled;
  // Prefill everything first so the timed loop is pure decode.
  while (s.num_waiting() > 0 || s.num_running() < n) {
    StepPlan p = s.schedule();
    sampled.clear();
    for (const auto& q : p.seqs)
      if (q.sample) sampled.push_back({q.id, 7, false});
    s.update(p, sampled);
  }
  int64_t token = 0;
  for (auto _ : state) {
    StepPlan p = s.schedule();
    sampled.clear();
    for (const auto& q : p.seqs)
      if (q.sample) sampled.push_back({q.id, static_cast<int32_t>(++token % 32000), false});
    auto ended = s.update(p, sampled);
    benchmark::DoNotOptimize(ended);
    if (p.seqs.size() != static_cast<size_t>(n)) {
      state.SkipWithError("not every request was scheduled");
      break;
    }
  }
  state.counters["running"] = s.num_running();
}
BENCHMARK(BM_ScheduleUpdateDecodeStep)
    ->ArgsProduct({{256, 1024}, {0, 1}})
    ->ArgNames({"running", "prefix_cache"})
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(3000);

}  // namespace
}  // namespace pagoda

BENCHMARK_MAIN();
