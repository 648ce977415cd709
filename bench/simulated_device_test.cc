// The simulated device's clock (bench/simulated_device.h). Only lower bounds on how long a wait
// lasts: a loaded machine can make any wait longer, never shorter, so these cannot flake.
#include "bench/simulated_device.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "kernels/backend_factory.h"

namespace pagoda {
namespace {

using Clock = SimulatedDevice::Clock;

std::unique_ptr<SimulatedDevice> make_device(double step_ms, double token_us) {
  auto inner = make_backend("cpu", 1);
  EXPECT_TRUE(inner.ok()) << inner.status().to_string();
  return std::make_unique<SimulatedDevice>(std::move(inner).value(), step_ms, token_us);
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// An embedding op over `tokens` ids: what opens a step.
Status open_step(SimulatedDevice& dev, std::vector<int32_t>& ids) {
  const int64_t n = static_cast<int64_t>(ids.size());
  return dev.embedding({TensorView(nullptr, DType::kF32, {16, 4}),
                        TensorView(ids.data(), DType::kI32, {n}),
                        TensorView(nullptr, DType::kF32, {n, 4})});
}

TEST(SimulatedDeviceTest, SynchronizeWaitsForTheStep) {
  auto dev = make_device(5.0, 0.0);
  std::vector<int32_t> ids = {1, 2, 3};
  const auto t0 = Clock::now();
  ASSERT_TRUE(open_step(*dev, ids).ok());
  ASSERT_TRUE(dev->synchronize().ok());
  EXPECT_GE(ms_since(t0), 5.0);
  EXPECT_EQ(dev->stats().steps, 1);
  EXPECT_DOUBLE_EQ(dev->stats().busy_seconds, 0.005);
}

TEST(SimulatedDeviceTest, StepsQueueBehindEachOtherAndCostPerToken) {
  // 1 ms + 4 tokens x 1000 us = 5 ms a step; two queued at once end after 10 ms.
  auto dev = make_device(1.0, 1000.0);
  std::vector<int32_t> ids = {1, 2, 3, 4};
  const auto t0 = Clock::now();
  ASSERT_TRUE(open_step(*dev, ids).ok());
  ASSERT_TRUE(open_step(*dev, ids).ok());
  int32_t out = -1;
  ASSERT_TRUE(dev->copy_to_host(&out, ids.data(), sizeof(out)).ok());  // waits like synchronize
  EXPECT_GE(ms_since(t0), 10.0);
  EXPECT_EQ(out, 1);  // and then copies
  EXPECT_EQ(dev->stats().steps, 2);
}

TEST(SimulatedDeviceTest, OpsTouchNoMemoryAndAsyncCopiesDoNotWait) {
  auto dev = make_device(1.0, 0.0);
  EXPECT_NE(dev->name().find("simulated device over cpu"), std::string::npos) << dev->name();
  EXPECT_FALSE(dev->supports_graphs());
  auto buf = dev->allocate(64 * sizeof(float));
  ASSERT_TRUE(buf.ok());
  std::vector<float> logits(2 * 8, 1.5f);
  const TensorView lv(logits.data(), DType::kF32, {2, 8});
  const TensorView ids(buf->data(), DType::kI32, {2});
  ASSERT_TRUE(dev->argmax({lv, ids}).ok());
  ASSERT_TRUE(dev->matmul({lv, lv, {}, lv}).ok());
  for (float v : logits) EXPECT_EQ(v, 1.5f);
  int32_t host[2] = {7, 7};
  ASSERT_TRUE(dev->copy_to_host_async(host, buf->data(), sizeof(host)).ok());
  EXPECT_EQ(host[0], 0);             // allocate() zeroes; argmax wrote nothing
  EXPECT_EQ(dev->stats().steps, 0);  // only the embedding op opens a step
  ASSERT_TRUE(dev->synchronize().ok());
  EXPECT_EQ(dev->stats().waits, 0);  // no step: nothing to wait for
}

}  // namespace
}  // namespace pagoda
