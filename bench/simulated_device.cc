#include "bench/simulated_device.h"

#include <algorithm>
#include <cstdio>
#include <thread>

namespace pagoda {
namespace {

SimulatedDevice::Clock::duration from_seconds(double s) {
  return std::chrono::duration_cast<SimulatedDevice::Clock::duration>(
      std::chrono::duration<double>(s));
}

double seconds(SimulatedDevice::Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

SimulatedDevice::SimulatedDevice(std::unique_ptr<Backend> inner, double step_ms, double token_us)
    : inner_(std::move(inner)),
      step_(from_seconds(step_ms * 1e-3)),
      per_token_(from_seconds(token_us * 1e-6)) {}

SimulatedDevice::Stats SimulatedDevice::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void SimulatedDevice::reset_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = Stats{};
}

std::string SimulatedDevice::timing() const {
  char s[64];
  std::snprintf(s, sizeof(s), "%.2f ms/step + %.1f us/token", seconds(step_) * 1e3,
                seconds(per_token_) * 1e6);
  return s;
}

Status SimulatedDevice::embedding(const EmbeddingArgs& a) {
  // A step starts when the host queues it or when the step before ends, whichever is later
  // (one stream: steps never overlap each other).
  const int64_t tokens = a.token_ids.ndim > 0 ? a.token_ids.numel() : 0;
  const Clock::duration cost = step_ + per_token_ * tokens;
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  busy_until_ = std::max(now, busy_until_) + cost;
  ++stats_.steps;
  stats_.busy_seconds += seconds(cost);
  return OkStatus();
}

void SimulatedDevice::wait_for_device() {
  Clock::time_point until;
  {
    std::lock_guard<std::mutex> lock(mu_);
    until = busy_until_;
  }
  const Clock::time_point start = Clock::now();
  if (start >= until) return;  // the device is idle: nothing to wait for
  std::this_thread::sleep_until(until);
  const Clock::time_point woke = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.waits;
  stats_.wait_seconds += seconds(woke - start);
  stats_.late_seconds += seconds(woke - until);
}

Status SimulatedDevice::synchronize() {
  wait_for_device();
  return inner_->synchronize();
}

Status SimulatedDevice::copy_to_host(void* dst, const void* src, size_t bytes) {
  wait_for_device();  // a synchronous device-to-host copy waits for the stream
  return inner_->copy_to_host(dst, src, bytes);
}

}  // namespace pagoda
