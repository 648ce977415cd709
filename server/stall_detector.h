// StallDetector: decides whether the engine is stalled — work pending and no step completed for
// longer than a timeout. Pure logic over the numbers it is fed (no clock of its own), so it is
// tested by tables of observations; `pagoda serve` feeds it EngineStats every 100 ms and flips
// readiness when the answer changes.
#pragma once

#include <chrono>
#include <cstdint>

namespace pagoda {

class StallDetector {
 public:
  using Clock = std::chrono::steady_clock;
  explicit StallDetector(std::chrono::duration<double> timeout) : timeout_(timeout) {}

  // One observation: steps completed so far and whether any request is running or waiting.
  // Returns true while stalled.
  bool observe(int64_t steps, bool work_pending, Clock::time_point now) {
    // The clock restarts on progress, while idle, and when work (re)appears.
    if (!seen_ || steps != last_steps_ || !work_pending || !was_pending_) {
      seen_ = true;
      last_steps_ = steps;
      last_progress_ = now;
    }
    was_pending_ = work_pending;
    return now - last_progress_ > timeout_;
  }

 private:
  std::chrono::duration<double> timeout_;
  bool seen_ = false;
  bool was_pending_ = false;
  int64_t last_steps_ = 0;
  Clock::time_point last_progress_{};
};

}  // namespace pagoda
