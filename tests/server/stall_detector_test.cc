#include "server/stall_detector.h"

#include <gtest/gtest.h>

namespace pagoda {
namespace {

// Each row: seconds since start, steps completed, work pending, expected "stalled".
struct Row {
  double t;
  int64_t steps;
  bool pending;
  bool stalled;
};

TEST(StallDetectorTest, TableOfObservations) {
  const Row rows[] = {
      {0.0, 0, false, false},  // idle: never stalled
      {5.0, 0, false, false},
      {5.1, 0, true, false},   // work arrives
      {6.0, 0, true, false},   // 0.9 s without a step: within the 2 s timeout
      {7.2, 0, true, true},    // 2.1 s without a step while work is pending
      {7.3, 1, true, false},   // a step completed: progressing again
      {9.2, 1, true, false},   // 1.9 s since that step
      {9.4, 1, true, true},    // 2.1 s
      {9.5, 1, false, false},  // the work went away (cancelled): not stalled
      {12.0, 1, true, false},  // new work after a long idle spell: the clock restarts now
      {14.0, 1, true, false},
      {14.2, 1, true, true},
  };
  StallDetector d(std::chrono::seconds(2));
  const auto t0 = StallDetector::Clock::time_point{} + std::chrono::hours(1);
  for (const Row& r : rows) {
    const auto now = t0 + std::chrono::duration_cast<StallDetector::Clock::duration>(
                              std::chrono::duration<double>(r.t));
    EXPECT_EQ(d.observe(r.steps, r.pending, now), r.stalled) << "at t=" << r.t;
  }
}

}  // namespace
}  // namespace pagoda
