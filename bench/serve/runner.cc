#include "bench/serve/runner.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

namespace pagoda::bench {

namespace {
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void run_one(client::Client& client, const RequestSpec& spec, Clock::time_point t0,
             const std::atomic<bool>& cancel, RequestRecord* rec) {
  client::GenerateOptions opt;
  opt.token_ids = spec.prompt;
  opt.max_tokens = spec.output_len;
  opt.ignore_eos = true;
  opt.return_token_ids = true;
  rec->input_tokens = static_cast<int>(spec.prompt.size());
  rec->expected_tokens = spec.output_len;
  int seen = 0;  // completion tokens counted so far
  auto on_chunk = [&](const client::Chunk& chunk) {
    const double t = seconds_since(t0);
    int k = static_cast<int>(chunk.token_ids.size());
    if (k == 0) k = std::max(0, chunk.usage.completion_tokens - seen);
    if (k > 0) {
      rec->chunk_times_s.push_back(t);
      rec->chunk_tokens.push_back(k);
      seen += k;
    }
    return !cancel.load();
  };
  client::GenerateResult result;
  rec->start_s = seconds_since(t0);
  Status status = client.generate(opt, on_chunk, &result);
  rec->end_s = seconds_since(t0);
  rec->output_tokens = std::max(result.usage.completion_tokens, seen);
  rec->cached_tokens = result.usage.cached_tokens;
  rec->ok = status.ok();
  if (!status.ok()) {
    rec->status_code = client::rpc_code_name(client::rpc_code(status));
    rec->error = status.message();
    rec->cancelled_by_client = cancel.load() && status.code() == StatusCode::kCancelled;
  }
}
}  // namespace

ServerView summarize_server(const std::vector<ServerSample>& s) {
  ServerView v;
  v.samples = s.size();
  if (s.empty()) return v;
  for (const ServerSample& x : s) {
    v.max_running = std::max(v.max_running, x.running);
    v.max_waiting = std::max(v.max_waiting, x.waiting);
    v.max_kv_usage = std::max(v.max_kv_usage, x.kv_usage);
    v.mean_running += x.running;
    v.mean_waiting += x.waiting;
    v.mean_kv_usage += x.kv_usage;
  }
  const double n = static_cast<double>(s.size());
  v.mean_running /= n;
  v.mean_waiting /= n;
  v.mean_kv_usage /= n;
  v.preemptions = s.back().preemptions - std::min(s.back().preemptions, s.front().preemptions);
  v.prefix_cache_hit_rate = s.back().prefix_cache_hit_rate;
  return v;
}

RunResult run_load(client::Client& client, const RunConfig& config, const std::atomic<int>& stop) {
  RunResult out;
  std::atomic<bool> cancel{false};
  // Warm-up: indices far from the measured ones, one at a time, not recorded.
  for (int i = 0; i < config.warmup && stop.load() == 0; ++i) {
    RequestRecord ignored;
    run_one(client, make_request(config.workload, (1ULL << 40) + config.first_index + i),
            Clock::now(), cancel, &ignored);
  }

  std::mutex mu;
  std::deque<RequestRecord> records;  // references stay valid across push_back
  std::vector<std::thread> threads;
  std::atomic<int> in_flight{0};
  std::atomic<size_t> done{0}, failed{0};
  std::atomic<bool> finished{false};
  const Clock::time_point t0 = Clock::now();

  // Monitor: server samples and progress lines.
  std::vector<ServerSample> samples;
  std::thread monitor([&] {
    double next_progress = config.progress_interval_s;
    while (!finished.load()) {
      client::CallOptions call;
      call.deadline = std::chrono::milliseconds(1000);
      auto info = client.server_info(call);
      const double t = seconds_since(t0);
      if (info.ok()) {
        samples.push_back({t, info->running, info->waiting, info->kv_cache_usage, info->preemptions,
                           info->prefix_cache_hit_rate});
      }
      if (config.progress_interval_s > 0 && t >= next_progress) {
        next_progress = t + config.progress_interval_s;
        std::fprintf(stderr, "[%s] %.1fs: %zu done (%zu failed), %d in flight",
                     config.label.c_str(), t, done.load(), failed.load(), in_flight.load());
        if (info.ok())
          std::fprintf(stderr, "; server: %d running, %d waiting, kv %.0f%%", info->running,
                       info->waiting, info->kv_cache_usage * 100);
        std::fprintf(stderr, "\n");
      }
      const auto until = Clock::now() + std::chrono::duration<double>(config.poll_interval_s);
      while (!finished.load() && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });

  auto launch = [&](uint64_t index) -> RequestRecord* {
    std::lock_guard<std::mutex> lock(mu);
    records.emplace_back();
    records.back().index = index;
    return &records.back();
  };
  auto budget_left = [&](size_t sent) {
    if (stop.load() != 0) return false;
    if (config.num_requests > 0 && sent >= config.num_requests) return false;
    if (config.duration_s > 0 && seconds_since(t0) >= config.duration_s) return false;
    return true;
  };
  double first_send = -1, last_send = 0;
  auto note_send = [&] {
    const double t = seconds_since(t0);
    if (first_send < 0) first_send = t;
    last_send = t;
  };

  if (config.arrivals.concurrency > 0) {
    // Closed loop: each worker sends its next request as soon as its last one ends.
    std::atomic<size_t> next{0};
    std::mutex send_mu;
    for (int w = 0; w < config.arrivals.concurrency; ++w) {
      threads.emplace_back([&] {
        for (;;) {
          uint64_t i;
          RequestRecord* rec;
          {
            std::lock_guard<std::mutex> lock(send_mu);
            if (!budget_left(next.load())) return;
            i = next++;
            note_send();
            rec = launch(config.first_index + i);
          }
          ++in_flight;
          run_one(client, make_request(config.workload, config.first_index + i), t0, cancel, rec);
          --in_flight;
          ++done;
          if (!rec->ok) ++failed;
        }
      });
    }
    out.sent = 0;  // set below
    // Wait for the workers, cancelling after the grace period once told to stop.
    Clock::time_point stop_seen{};
    bool stop_noted = false;
    while (in_flight.load() > 0 || budget_left(next.load())) {
      if (!budget_left(next.load()) && !stop_noted) {
        stop_noted = true;
        stop_seen = Clock::now();
      }
      if (stop.load() >= 2) cancel = true;
      if (stop_noted) {
        const double grace = stop.load() ? config.interrupt_grace_s : config.grace_s;
        if (std::chrono::duration<double>(Clock::now() - stop_seen).count() > grace) cancel = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    out.sent = next.load();
  } else {
    // Open loop: sends at the arrival process's times, each request on its own thread.
    ArrivalProcess arrivals(config.arrivals);
    double due = 0;
    size_t sent = 0;
    while (budget_left(sent)) {
      while (stop.load() == 0 && seconds_since(t0) < due) {
        const double wait = std::min(0.05, due - seconds_since(t0));
        if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
      }
      if (!budget_left(sent)) break;
      const uint64_t index = config.first_index + sent;
      RequestRecord* rec = launch(index);
      note_send();
      ++sent;
      ++in_flight;
      threads.emplace_back([&, index, rec] {
        run_one(client, make_request(config.workload, index), t0, cancel, rec);
        if (!rec->ok) ++failed;
        ++done;
        --in_flight;
      });
      due += arrivals.next_gap();
    }
    out.sent = sent;
    const Clock::time_point stop_seen = Clock::now();
    while (in_flight.load() > 0) {
      const double grace = stop.load() ? config.interrupt_grace_s : config.grace_s;
      const bool bounded = stop.load() != 0 || config.duration_s > 0;
      if (stop.load() >= 2 ||
          (bounded && std::chrono::duration<double>(Clock::now() - stop_seen).count() > grace))
        cancel = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  for (std::thread& t : threads) t.join();
  finished = true;
  monitor.join();

  out.interrupted = stop.load() != 0;
  out.send_span_s = first_send >= 0 ? last_send - first_send : 0;
  out.records.assign(records.begin(), records.end());
  out.server = std::move(samples);
  out.view = summarize_server(out.server);
  return out;
}

}  // namespace pagoda::bench
