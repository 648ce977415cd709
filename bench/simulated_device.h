// SimulatedDevice: a Backend that stands for a device of known speed, so that the real Engine
// (scheduler, batch building, step-input packing, update, emit) can be timed on a machine
// without a GPU, with and without async scheduling (pagoda-bench offline --sim-step-ms).
//
// Why: on the CPU backend the ops run inside launch(), so the host never works while the
// "device" does and async scheduling cannot hide anything. Here the ops cost no host time and
// the device runs on a clock instead:
//  - the embedding op (the first op of every forward; its ids give T, the step's tokens) opens a
//    step: busy_until = max(now, busy_until) + step_ms + token_us * T. Every other op returns
//    OkStatus at once, checks nothing and touches no memory (argmax/sample leave the ids as the
//    buffer holds them: zeros from allocate(); a benchmark that uses this sets ignore_eos).
//  - synchronize() and copy_to_host() (the calls that wait for a stream on a GPU) sleep until
//    busy_until, then do their work. Memory, uploads and the queued copies go to the wrapped
//    backend at once: the data does not matter, since the ops compute nothing.
// What it measures: how long the host keeps the device idle between steps (the engine's own
// per-step work on the critical path). What it does not model: kernel speed beyond the fixed
// per-step and per-token cost, copy bandwidth and latency, kernel launch latency (a real
// eager step queues a few hundred launches; here they are free), step graphs (none), and the
// OS timer's wake-up slack (sleep_until may return tens of µs late: stats().late_seconds).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "kernels/ops.h"

namespace pagoda {

class SimulatedDevice final : public Backend {
 public:
  using Clock = std::chrono::steady_clock;

  // step_ms, token_us >= 0 (the caller checks its flags). Wraps `inner` for memory and copies.
  SimulatedDevice(std::unique_ptr<Backend> inner, double step_ms, double token_us);

  struct Stats {
    int64_t steps = 0;        // embedding ops: steps the device ran
    double busy_seconds = 0;  // sum of the steps' simulated durations
    int64_t waits = 0;        // synchronize / copy_to_host calls that had to sleep
    double wait_seconds = 0;  // host time spent asleep in them
    double late_seconds = 0;  // how much later than busy_until those sleeps returned
  };
  Stats stats() const;
  void reset_stats();
  // "2.00 ms/step + 0.0 us/token": the device's speed, for tables.
  std::string timing() const;

  Device device() const override { return inner_->device(); }
  std::string name() const override { return "simulated device over " + inner_->name(); }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  StatusOr<DeviceBuffer> allocate(size_t bytes) override { return inner_->allocate(bytes); }
  StatusOr<DeviceBuffer> allocate_staging(size_t bytes) override {
    return inner_->allocate_staging(bytes);
  }
  Status copy_from_host(void* dst, const void* src, size_t bytes) override {
    return inner_->copy_from_host(dst, src, bytes);
  }
  Status copy_from_host_async(void* dst, const void* src, size_t bytes) override {
    return inner_->copy_from_host_async(dst, src, bytes);
  }
  Status copy_to_host(void* dst, const void* src, size_t bytes) override;
  Status copy_to_host_async(void* dst, const void* src, size_t bytes) override {
    return inner_->copy_to_host_async(dst, src, bytes);
  }
  Status synchronize() override;
  StatusOr<size_t> available_memory_bytes() const override {
    return inner_->available_memory_bytes();
  }
  Status reserve_scratch() override { return inner_->reserve_scratch(); }

  Status embedding(const EmbeddingArgs& a) override;
  Status rms_norm(const RmsNormArgs&) override { return OkStatus(); }
  Status matmul(const MatmulArgs&) override { return OkStatus(); }
  Status rope(const RopeArgs&) override { return OkStatus(); }
  Status swiglu(const SwigluArgs&) override { return OkStatus(); }
  Status add(const AddArgs&) override { return OkStatus(); }
  Status kv_write(const KvWriteArgs&) override { return OkStatus(); }
  Status rope_kv_write(const RopeKvWriteArgs&) override { return OkStatus(); }
  Status attention(const AttentionArgs&) override { return OkStatus(); }
  Status gather_rows(const GatherRowsArgs&) override { return OkStatus(); }
  Status argmax(const ArgmaxArgs&) override { return OkStatus(); }
  Status sample(const SampleArgs&) override { return OkStatus(); }
  Status logprobs(const LogprobsArgs&) override { return OkStatus(); }
  Status copy_on_device_async(void*, const void*, size_t) override { return OkStatus(); }

 private:
  void wait_for_device();  // sleeps until busy_until_

  std::unique_ptr<Backend> inner_;
  const Clock::duration step_, per_token_;
  // The engine calls the backend from one thread at a time, but from two over its life (the
  // caller's for create/reserve, the loop's for steps), and stats() is read from a third.
  mutable std::mutex mu_;
  Clock::time_point busy_until_{};
  Stats stats_;
};

}  // namespace pagoda
