// OTLP/HTTP JSON span exporter: spans are queued on the caller's thread (never blocking; a full
// queue drops and counts) and one worker thread batches them and POSTs them to the collector's
// /v1/traces endpoint. Nothing is retried: a failed POST counts its spans as failed.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/tracing/http_client.h"
#include "server/tracing/span.h"

namespace pagoda::tracing {

struct OtlpExporterOptions {
  std::string endpoint = "http://127.0.0.1:4318/v1/traces";
  std::string service_name = "pagoda";
  size_t max_queue_spans = 2048;                    // beyond this, spans are dropped (and counted)
  size_t max_batch_spans = 512;                     // spans per POST
  std::chrono::milliseconds batch_delay{500};       // a partial batch waits at most this long
  std::chrono::milliseconds request_timeout{2000};  // connect + send + status line
};

struct OtlpExporterStats {
  uint64_t exported = 0;  // accepted by the collector (2xx)
  uint64_t dropped = 0;   // queue full, or still queued when shutdown gave up
  uint64_t failed = 0;    // collector unreachable, timed out, or answered non-2xx
  uint64_t queued = 0;    // waiting in the queue now (not counting a batch being sent)
};

// Builds the OTLP JSON request body (ExportTraceServiceRequest) for a batch.
std::string otlp_json_body(const std::vector<SpanData>& spans, const std::string& service_name);

class OtlpHttpExporter final : public SpanExporter {
 public:
  // Validates the endpoint and starts the worker thread.
  static StatusOr<std::unique_ptr<OtlpHttpExporter>> create(OtlpExporterOptions options);
  ~OtlpHttpExporter() override;  // shutdown(request_timeout)

  // Never blocks beyond a short mutex hold; drops (and counts) when the queue is full or after
  // shutdown.
  void export_span(SpanData span) override;

  // Waits until every span queued before the call has been exported or counted as failed.
  // Returns false when the wait ran out first.
  bool flush(std::chrono::milliseconds timeout);
  // flush(timeout), then stops the worker; spans still queued are counted as dropped. Bounded by
  // about timeout + request_timeout. Idempotent.
  void shutdown(std::chrono::milliseconds timeout);

  // Lock-free (relaxed atomics): cheap enough to sample for metrics at any time.
  OtlpExporterStats stats() const;

 private:
  OtlpHttpExporter(OtlpExporterOptions options, HttpEndpoint endpoint);
  void run();

  const OtlpExporterOptions options_;
  const HttpEndpoint endpoint_;

  std::mutex mu_;
  std::condition_variable work_cv_;  // worker waits for spans / flush / stop
  std::condition_variable done_cv_;  // flush waits for progress
  std::vector<SpanData> queue_;
  uint64_t enqueued_ = 0;      // spans ever accepted into the queue
  uint64_t processed_ = 0;     // spans taken off the queue and finished (exported/failed/dropped)
  uint64_t flush_target_ = 0;  // worker sends without waiting for a full batch up to this
  bool stop_ = false;
  bool shut_down_ = false;

  std::atomic<uint64_t> exported_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> queued_{0};  // queue_.size(), written under mu_, read without it
  std::thread worker_;
};

}  // namespace pagoda::tracing
