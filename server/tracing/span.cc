#include "server/tracing/span.h"

#include <chrono>

namespace pagoda::tracing {

uint64_t now_unix_nano() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

Span::Span(Span&& other) noexcept
    : context_(std::move(other.context_)),
      data_(std::move(other.data_)),
      exporter_(other.exporter_) {}

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    end();
    context_ = std::move(other.context_);
    data_ = std::move(other.data_);
    exporter_ = other.exporter_;
  }
  return *this;
}

void Span::set(std::string_view key, AttributeValue value) {
  if (!data_) return;
  for (auto& a : data_->attributes) {
    if (a.key == key) {
      a.value = std::move(value);
      return;
    }
  }
  data_->attributes.push_back({std::string(key), std::move(value)});
}

Span& Span::set_attribute(std::string_view key, std::string_view value) {
  if (data_) set(key, std::string(value));
  return *this;
}
Span& Span::set_attribute(std::string_view key, int64_t value) {
  set(key, value);
  return *this;
}
Span& Span::set_attribute(std::string_view key, double value) {
  set(key, value);
  return *this;
}
Span& Span::set_attribute(std::string_view key, bool value) {
  set(key, value);
  return *this;
}

Span& Span::add_event(std::string_view name, std::vector<Attribute> attributes,
                      uint64_t time_unix_nano) {
  if (data_) {
    data_->events.push_back({std::string(name), time_unix_nano ? time_unix_nano : now_unix_nano(),
                             std::move(attributes)});
  }
  return *this;
}

Span& Span::set_status(SpanStatusCode code, std::string_view message) {
  if (data_) {
    data_->status_code = code;
    data_->status_message = code == SpanStatusCode::kError ? std::string(message) : std::string();
  }
  return *this;
}

void Span::end(uint64_t end_unix_nano) {
  if (!data_) return;
  std::unique_ptr<SpanData> data = std::move(data_);
  data->end_unix_nano = end_unix_nano ? end_unix_nano : now_unix_nano();
  if (exporter_ != nullptr) exporter_->export_span(std::move(*data));
}

Span Tracer::make(std::string_view name, const TraceId& trace_id, const SpanId& parent,
                  bool sampled, const std::string& tracestate, SpanKind kind,
                  uint64_t start) const {
  Span span;
  span.context_.trace_id = trace_id;
  span.context_.span_id = new_span_id();
  span.context_.sampled = sampled;
  span.context_.tracestate = tracestate;
  span.exporter_ = exporter_;
  if (sampled) {
    span.data_ = std::make_unique<SpanData>();
    span.data_->trace_id = trace_id;
    span.data_->span_id = span.context_.span_id;
    span.data_->parent_span_id = parent;
    span.data_->name = std::string(name);
    span.data_->kind = kind;
    span.data_->start_unix_nano = start ? start : now_unix_nano();
  }
  return span;
}

Span Tracer::start_root(std::string_view name, const TraceContext* remote_parent, SpanKind kind,
                        uint64_t start_unix_nano) const {
  if (remote_parent != nullptr) {
    return make(name, remote_parent->trace_id, remote_parent->span_id,
                sampler_.should_sample(remote_parent->trace_id, remote_parent),
                remote_parent->tracestate, kind, start_unix_nano);
  }
  TraceId trace_id = new_trace_id();
  return make(name, trace_id, SpanId{}, sampler_.should_sample(trace_id), std::string(), kind,
              start_unix_nano);
}

Span Tracer::start_child(std::string_view name, const TraceContext& parent,
                         uint64_t start_unix_nano) const {
  return make(name, parent.trace_id, parent.span_id, parent.sampled, parent.tracestate,
              SpanKind::kInternal, start_unix_nano);
}

}  // namespace pagoda::tracing
