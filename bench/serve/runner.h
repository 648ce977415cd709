// Drives one load run against a server through pagoda::client: warm-up requests first (not
// measured), then requests on their own threads, open loop (arrivals at a rate) or closed loop
// (fixed concurrency), bounded by a count and/or a duration, while a monitor thread polls
// GetServerInfo and prints progress. Every request's timestamps, tokens and status are kept.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/serve/arrivals.h"
#include "bench/serve/stats.h"
#include "bench/serve/workload.h"
#include "clients/cpp/client.h"

namespace pagoda::bench {

struct ServerSample {
  double t_s = 0;
  int running = 0, waiting = 0;
  double kv_usage = 0;
  uint64_t preemptions = 0;
  double prefix_cache_hit_rate = 0;
};

// The server's own view of a run, from the samples.
struct ServerView {
  size_t samples = 0;
  int max_running = 0, max_waiting = 0;
  double mean_running = 0, mean_waiting = 0;
  double mean_kv_usage = 0, max_kv_usage = 0;
  uint64_t preemptions = 0;          // during the run (last sample − first)
  double prefix_cache_hit_rate = 0;  // last sample
};
ServerView summarize_server(const std::vector<ServerSample>& samples);

struct RunConfig {
  ArrivalConfig arrivals;
  WorkloadConfig workload;
  size_t num_requests = 100;       // 0: no count bound (then duration_s must be set)
  double duration_s = 0;           // stop sending after this long; 0: no bound
  int warmup = 0;                  // requests run (one at a time) before measuring
  double grace_s = 30;             // after a duration stop: wait this long for in-flight requests
  double interrupt_grace_s = 3;    // after Ctrl-C
  double poll_interval_s = 0.25;   // GetServerInfo
  double progress_interval_s = 2;  // 0: no progress lines
  std::string label = "bench";     // progress prefix
  uint64_t first_index = 0;        // workload indices start here (sweep steps use new ones)
};

struct RunResult {
  std::vector<RequestRecord> records;  // measured requests, in send order
  size_t sent = 0;
  double send_span_s = 0;  // first to last send
  bool interrupted = false;
  std::vector<ServerSample> server;
  ServerView view;
};

// stop: 1 = stop sending and wait briefly (Ctrl-C), >= 2 = cancel in-flight requests now.
RunResult run_load(client::Client& client, const RunConfig& config, const std::atomic<int>& stop);

}  // namespace pagoda::bench
