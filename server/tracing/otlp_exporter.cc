#include "server/tracing/otlp_exporter.h"

#include <nlohmann/json.hpp>

namespace pagoda::tracing {
namespace {

using json = nlohmann::json;

json attribute_json(const Attribute& a) {
  json value;
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          value["stringValue"] = v;
        } else if constexpr (std::is_same_v<T, int64_t>) {
          value["intValue"] = std::to_string(v);  // int64 is a string in proto3 JSON
        } else if constexpr (std::is_same_v<T, double>) {
          value["doubleValue"] = v;
        } else {
          value["boolValue"] = v;
        }
      },
      a.value);
  return json{{"key", a.key}, {"value", std::move(value)}};
}

json attributes_json(const std::vector<Attribute>& attributes) {
  json out = json::array();
  for (const auto& a : attributes) out.push_back(attribute_json(a));
  return out;
}

json span_json(const SpanData& s) {
  json span = {
      {"traceId", to_hex(s.trace_id)},
      {"spanId", to_hex(s.span_id)},
      {"name", s.name},
      {"kind", static_cast<int>(s.kind)},
      {"startTimeUnixNano", std::to_string(s.start_unix_nano)},
      {"endTimeUnixNano", std::to_string(s.end_unix_nano)},
      {"attributes", attributes_json(s.attributes)},
  };
  if (!is_zero(s.parent_span_id)) span["parentSpanId"] = to_hex(s.parent_span_id);
  if (!s.events.empty()) {
    json events = json::array();
    for (const auto& e : s.events) {
      events.push_back({{"name", e.name},
                        {"timeUnixNano", std::to_string(e.time_unix_nano)},
                        {"attributes", attributes_json(e.attributes)}});
    }
    span["events"] = std::move(events);
  }
  json status = {{"code", static_cast<int>(s.status_code)}};
  if (!s.status_message.empty()) status["message"] = s.status_message;
  span["status"] = std::move(status);
  return span;
}

}  // namespace

std::string otlp_json_body(const std::vector<SpanData>& spans, const std::string& service_name) {
  json list = json::array();
  for (const auto& s : spans) list.push_back(span_json(s));
  json resource = {{"attributes", json::array({attribute_json({"service.name", service_name})})}};
  json scope_spans = {{"scope", {{"name", "pagoda"}}}, {"spans", std::move(list)}};
  json body = {{"resourceSpans", json::array({{{"resource", std::move(resource)},
                                               {"scopeSpans", json::array({scope_spans})}}})}};
  // Replace invalid UTF-8 rather than throwing: span names and attributes may hold user text.
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

StatusOr<std::unique_ptr<OtlpHttpExporter>> OtlpHttpExporter::create(OtlpExporterOptions options) {
  PAGODA_ASSIGN_OR_RETURN(HttpEndpoint endpoint, parse_http_url(options.endpoint));
  if (options.max_queue_spans == 0) return InvalidArgument("max_queue_spans must be > 0");
  if (options.max_batch_spans == 0) return InvalidArgument("max_batch_spans must be > 0");
  if (options.request_timeout.count() <= 0) return InvalidArgument("request_timeout must be > 0");
  std::unique_ptr<OtlpHttpExporter> exporter(
      new OtlpHttpExporter(std::move(options), std::move(endpoint)));
  exporter->worker_ = std::thread([e = exporter.get()] { e->run(); });
  return exporter;
}

OtlpHttpExporter::OtlpHttpExporter(OtlpExporterOptions options, HttpEndpoint endpoint)
    : options_(std::move(options)), endpoint_(std::move(endpoint)) {
  queue_.reserve(options_.max_queue_spans);
}

OtlpHttpExporter::~OtlpHttpExporter() {
  shutdown(options_.request_timeout);
}

void OtlpHttpExporter::export_span(SpanData span) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() >= options_.max_queue_spans) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(std::move(span));
    queued_.store(queue_.size(), std::memory_order_relaxed);
    ++enqueued_;
    wake = queue_.size() >= options_.max_batch_spans;
  }
  if (wake) work_cv_.notify_one();
}

void OtlpHttpExporter::run() {
  std::vector<SpanData> batch;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Wait for a full batch, a flush, stop, or the batch delay with something queued.
    work_cv_.wait_for(lock, options_.batch_delay, [&] {
      return stop_ || queue_.size() >= options_.max_batch_spans ||
             (flush_target_ > processed_ && !queue_.empty());
    });
    if (stop_) break;
    if (queue_.empty()) continue;
    size_t n = std::min(queue_.size(), options_.max_batch_spans);
    batch.assign(std::make_move_iterator(queue_.begin()),
                 std::make_move_iterator(queue_.begin() + static_cast<ptrdiff_t>(n)));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(n));
    queued_.store(queue_.size(), std::memory_order_relaxed);
    lock.unlock();

    std::string body = otlp_json_body(batch, options_.service_name);
    StatusOr<int> code = http_post(endpoint_, "application/json", body, options_.request_timeout);
    if (code.ok() && *code >= 200 && *code < 300) {
      exported_.fetch_add(n, std::memory_order_relaxed);
    } else {
      failed_.fetch_add(n, std::memory_order_relaxed);
    }
    batch.clear();

    lock.lock();
    processed_ += n;
    done_cv_.notify_all();
  }
  // Stopping: whatever is left is dropped.
  dropped_.fetch_add(queue_.size(), std::memory_order_relaxed);
  processed_ += queue_.size();
  queue_.clear();
  queued_.store(0, std::memory_order_relaxed);
  done_cv_.notify_all();
}

bool OtlpHttpExporter::flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = enqueued_;
  if (processed_ >= target) return true;
  flush_target_ = std::max(flush_target_, target);
  work_cv_.notify_one();
  return done_cv_.wait_for(lock, timeout, [&] { return processed_ >= target; });
}

void OtlpHttpExporter::shutdown(std::chrono::milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  flush(timeout);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_one();
  if (worker_.joinable()) worker_.join();  // at most one in-flight POST (request_timeout)
}

OtlpExporterStats OtlpHttpExporter::stats() const {
  return {exported_.load(std::memory_order_relaxed), dropped_.load(std::memory_order_relaxed),
          failed_.load(std::memory_order_relaxed), queued_.load(std::memory_order_relaxed)};
}

}  // namespace pagoda::tracing
