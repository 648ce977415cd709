// W3C Trace Context (https://www.w3.org/TR/trace-context/): parse and format `traceparent`, carry
// `tracestate` through untouched, generate ids, and decide sampling deterministically from the
// trace id so that every span of one trace agrees.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace pagoda::tracing {

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

// What travels between processes (and from a parent span to its children).
struct TraceContext {
  TraceId trace_id{};
  SpanId span_id{};  // the parent's span id when parsed from a traceparent
  bool sampled = false;
  std::string tracestate;  // passed through as received
};

// Parses `traceparent` ("00-<32 hex>-<16 hex>-<2 hex>"); `tracestate` is copied as is. Rejects
// version ff, wrong lengths, non-lowercase-hex, all-zero trace or span ids. A higher version than
// 00 is parsed by its 00 prefix as the spec asks (more fields may follow after a '-').
StatusOr<TraceContext> parse_traceparent(std::string_view traceparent,
                                         std::string_view tracestate = {});

// "00-<trace id>-<span id>-<01|00>".
std::string format_traceparent(const TraceContext& context);

// Random, never all zero. Thread-safe; cheap (a thread-local PRNG seeded from random_device).
TraceId new_trace_id();
SpanId new_span_id();

std::string to_hex(std::span<const uint8_t> bytes);
bool is_zero(std::span<const uint8_t> bytes);

// Parent-based ratio sampling. With a parent, its sampled flag decides. Without one, the trace is
// sampled when the trace id's last 8 bytes (big-endian) fall below ratio * 2^64, so every process
// and span deciding on the same trace id with the same ratio agrees.
class Sampler {
 public:
  explicit Sampler(double ratio);  // clamped to [0, 1]
  double ratio() const { return ratio_; }
  bool should_sample(const TraceId& trace_id) const;
  bool should_sample(const TraceId& trace_id, const TraceContext* parent) const {
    return parent != nullptr ? parent->sampled : should_sample(trace_id);
  }

 private:
  double ratio_;
  uint64_t threshold_;  // sample when value < threshold_ (ratio 1 is special-cased)
};

}  // namespace pagoda::tracing
