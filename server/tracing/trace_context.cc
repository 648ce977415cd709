#include "server/tracing/trace_context.h"

#include <algorithm>
#include <random>

namespace pagoda::tracing {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is not allowed by the spec
}

bool parse_hex(std::string_view text, std::span<uint8_t> out) {
  if (text.size() != out.size() * 2) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = hex_value(text[2 * i]);
    int lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// splitmix64 seeded per thread from random_device: ids need uniqueness, not secrecy.
uint64_t next_random() {
  thread_local uint64_t state = [] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }();
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void fill_random(std::span<uint8_t> out) {
  do {
    for (size_t i = 0; i < out.size(); i += 8) {
      uint64_t r = next_random();
      for (size_t j = 0; j < 8 && i + j < out.size(); ++j) out[i + j] = uint8_t(r >> (8 * j));
    }
  } while (is_zero(out));
}

}  // namespace

StatusOr<TraceContext> parse_traceparent(std::string_view tp, std::string_view tracestate) {
  // version(2) '-' trace-id(32) '-' parent-id(16) '-' flags(2) = 55
  constexpr size_t kLen = 55;
  if (tp.size() < 2) return InvalidArgument("traceparent: too short");
  uint8_t version = 0;
  if (!parse_hex(tp.substr(0, 2), std::span<uint8_t>(&version, 1))) {
    return InvalidArgument("traceparent: bad version");
  }
  if (version == 0xff) return InvalidArgument("traceparent: version ff is invalid");
  if (version == 0 ? tp.size() != kLen
                   : (tp.size() < kLen || (tp.size() > kLen && tp[kLen] != '-'))) {
    return InvalidArgument("traceparent: wrong length");
  }
  if (tp[2] != '-' || tp[35] != '-' || tp[52] != '-') {
    return InvalidArgument("traceparent: bad separators");
  }
  TraceContext ctx;
  if (!parse_hex(tp.substr(3, 32), ctx.trace_id))
    return InvalidArgument("traceparent: bad trace id");
  if (!parse_hex(tp.substr(36, 16), ctx.span_id))
    return InvalidArgument("traceparent: bad parent id");
  uint8_t flags = 0;
  if (!parse_hex(tp.substr(53, 2), std::span<uint8_t>(&flags, 1))) {
    return InvalidArgument("traceparent: bad flags");
  }
  if (is_zero(ctx.trace_id)) return InvalidArgument("traceparent: all-zero trace id");
  if (is_zero(ctx.span_id)) return InvalidArgument("traceparent: all-zero parent id");
  ctx.sampled = (flags & 0x01) != 0;
  ctx.tracestate = std::string(tracestate);
  return ctx;
}

std::string format_traceparent(const TraceContext& context) {
  return "00-" + to_hex(context.trace_id) + "-" + to_hex(context.span_id) +
         (context.sampled ? "-01" : "-00");
}

TraceId new_trace_id() {
  TraceId id;
  fill_random(id);
  return id;
}

SpanId new_span_id() {
  SpanId id;
  fill_random(id);
  return id;
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

bool is_zero(std::span<const uint8_t> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

Sampler::Sampler(double ratio) : ratio_(std::clamp(ratio, 0.0, 1.0)) {
  // 2^64 * ratio, computed in long double; ratio 1 samples everything (see should_sample).
  threshold_ =
      ratio_ >= 1.0
          ? UINT64_MAX
          : static_cast<uint64_t>(static_cast<long double>(ratio_) * 18446744073709551616.0L);
}

bool Sampler::should_sample(const TraceId& trace_id) const {
  if (ratio_ >= 1.0) return true;
  if (ratio_ <= 0.0) return false;
  uint64_t v = 0;
  for (size_t i = 8; i < 16; ++i) v = v << 8 | trace_id[i];
  return v < threshold_;
}

}  // namespace pagoda::tracing
