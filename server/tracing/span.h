// Spans and the Tracer that makes them. A Span is a move-only handle: when its trace is not
// sampled it holds only its context (ids for propagation) and every call on it is a no-op, so an
// unsampled request costs two id draws and no allocation. A sampled span hands its data to the
// exporter when it ends (explicitly or in its destructor).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "server/tracing/trace_context.h"

namespace pagoda::tracing {

using AttributeValue = std::variant<std::string, int64_t, double, bool>;

struct Attribute {
  std::string key;
  AttributeValue value;
};

struct SpanEvent {
  std::string name;
  uint64_t time_unix_nano = 0;
  std::vector<Attribute> attributes;
};

enum class SpanStatusCode { kUnset = 0, kOk = 1, kError = 2 };    // OTLP's numbering
enum class SpanKind { kInternal = 1, kServer = 2, kClient = 3 };  // OTLP's numbering

// A finished span as the exporter sees it. parent_span_id is all zero for a root span.
struct SpanData {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent_span_id{};
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  uint64_t start_unix_nano = 0;
  uint64_t end_unix_nano = 0;
  std::vector<Attribute> attributes;
  std::vector<SpanEvent> events;
  SpanStatusCode status_code = SpanStatusCode::kUnset;
  std::string status_message;
};

// Receives finished, sampled spans. Must not block (called on the caller's thread).
class SpanExporter {
 public:
  virtual ~SpanExporter() = default;
  virtual void export_span(SpanData span) = 0;
};

uint64_t now_unix_nano();

class Span {
 public:
  Span() = default;  // an inert span: not sampled, all-zero ids
  Span(Span&& other) noexcept;
  Span& operator=(Span&& other) noexcept;
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;
  ~Span() { end(); }

  bool recording() const { return data_ != nullptr; }
  // Ids for children and for outgoing traceparent; span_id is this span's own id.
  const TraceContext& context() const { return context_; }
  std::string trace_id_hex() const { return to_hex(context_.trace_id); }

  Span& set_attribute(std::string_view key, std::string_view value);
  Span& set_attribute(std::string_view key, const char* value) {
    return set_attribute(key, std::string_view(value));
  }
  Span& set_attribute(std::string_view key, int64_t value);
  Span& set_attribute(std::string_view key, int value) {
    return set_attribute(key, int64_t{value});
  }
  Span& set_attribute(std::string_view key, double value);
  Span& set_attribute(std::string_view key, bool value);
  Span& add_event(std::string_view name, std::vector<Attribute> attributes = {},
                  uint64_t time_unix_nano = 0);  // 0: now
  Span& set_status(SpanStatusCode code, std::string_view message = {});

  // Ends the span (now, or at the given time) and hands it to the exporter. Idempotent.
  void end(uint64_t end_unix_nano = 0);

 private:
  friend class Tracer;
  void set(std::string_view key, AttributeValue value);

  TraceContext context_;
  std::unique_ptr<SpanData> data_;  // null when not sampled or already ended
  SpanExporter* exporter_ = nullptr;
};

// Creates spans. The exporter (may be null: spans are then dropped) must outlive the tracer and
// its spans. Thread-safe: holds no mutable state.
class Tracer {
 public:
  Tracer(SpanExporter* exporter, double sample_ratio)
      : exporter_(exporter), sampler_(sample_ratio) {}

  // A new trace, or a continuation of a remote parent (from parse_traceparent): the remote
  // parent's trace id and sampled flag are kept, its span id becomes our parent span id.
  Span start_root(std::string_view name, const TraceContext* remote_parent = nullptr,
                  SpanKind kind = SpanKind::kServer, uint64_t start_unix_nano = 0) const;
  Span start_child(std::string_view name, const Span& parent, uint64_t start_unix_nano = 0) const {
    return start_child(name, parent.context(), start_unix_nano);
  }
  Span start_child(std::string_view name, const TraceContext& parent,
                   uint64_t start_unix_nano = 0) const;

  const Sampler& sampler() const { return sampler_; }

 private:
  Span make(std::string_view name, const TraceId& trace_id, const SpanId& parent, bool sampled,
            const std::string& tracestate, SpanKind kind, uint64_t start) const;

  SpanExporter* exporter_;
  Sampler sampler_;
};

}  // namespace pagoda::tracing
