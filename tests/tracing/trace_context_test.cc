#include "server/tracing/trace_context.h"

#include <gtest/gtest.h>

#include <set>

namespace pagoda::tracing {
namespace {

constexpr const char* kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceparentTest, ParsesAndFormatsRoundTrip) {
  auto ctx = parse_traceparent(kValid, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
  EXPECT_EQ(to_hex(ctx->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(to_hex(ctx->span_id), "00f067aa0ba902b7");
  EXPECT_TRUE(ctx->sampled);
  EXPECT_EQ(ctx->tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  EXPECT_EQ(format_traceparent(*ctx), kValid);

  auto unsampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(unsampled.ok());
  EXPECT_FALSE(unsampled->sampled);
  EXPECT_EQ(format_traceparent(*unsampled),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
}

TEST(TraceparentTest, OtherFlagBitsDoNotMeanSampled) {
  auto ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02");
  ASSERT_TRUE(ctx.ok());
  EXPECT_FALSE(ctx->sampled);
}

TEST(TraceparentTest, FutureVersionParsesByPrefix) {
  auto ctx = parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what");
  ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
  EXPECT_TRUE(ctx->sampled);
  EXPECT_FALSE(
      parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xwhat").ok());
}

TEST(TraceparentTest, RejectsMalformed) {
  const char* bad[] = {
      "",
      "00",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version ff
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   // zero trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   // zero span id
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    // short trace id
      "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",  // long trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",    // short span id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",    // short flags
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",  // v00 with extra
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",   // bad hex flags
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",   // bad hex trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9z2b7-01",   // bad hex span id
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   // uppercase
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // bad hex version
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // bad separator
      "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",   // bad separator
  };
  for (const char* tp : bad) {
    auto ctx = parse_traceparent(tp);
    EXPECT_FALSE(ctx.ok()) << "accepted: '" << tp << "'";
    if (!ctx.ok()) {
      EXPECT_EQ(ctx.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(IdsTest, NewIdsAreNonZeroAndDistinct) {
  std::set<std::string> traces, spans;
  for (int i = 0; i < 1000; ++i) {
    TraceId t = new_trace_id();
    SpanId s = new_span_id();
    EXPECT_FALSE(is_zero(t));
    EXPECT_FALSE(is_zero(s));
    traces.insert(to_hex(t));
    spans.insert(to_hex(s));
  }
  EXPECT_EQ(traces.size(), 1000u);
  EXPECT_EQ(spans.size(), 1000u);
}

// Trace ids whose last 8 bytes are evenly spread over [0, 2^64).
TraceId spread_id(uint64_t i, uint64_t n) {
  TraceId id{};
  id[0] = 1;
  uint64_t v = (UINT64_MAX / n) * i;
  for (int b = 0; b < 8; ++b) id[15 - b] = uint8_t(v >> (8 * b));
  return id;
}

TEST(SamplerTest, RatioSelectsThatShareOfTraceIds) {
  const uint64_t n = 1000;
  for (double ratio : {0.0, 0.1, 0.25, 0.5, 1.0}) {
    Sampler sampler(ratio);
    int sampled = 0;
    for (uint64_t i = 0; i < n; ++i) sampled += sampler.should_sample(spread_id(i, n));
    EXPECT_NEAR(sampled, ratio * n, 1.0) << "ratio " << ratio;
  }
}

TEST(SamplerTest, DecisionIsDeterministicPerTraceId) {
  Sampler a(0.3), b(0.3);
  for (int i = 0; i < 1000; ++i) {
    TraceId id = new_trace_id();
    bool first = a.should_sample(id);
    EXPECT_EQ(first, a.should_sample(id));
    EXPECT_EQ(first, b.should_sample(id));  // another process with the same ratio agrees
  }
  // Monotone in the ratio: sampled at 0.3 implies sampled at 0.6.
  Sampler wider(0.6);
  for (int i = 0; i < 1000; ++i) {
    TraceId id = new_trace_id();
    if (a.should_sample(id)) {
      EXPECT_TRUE(wider.should_sample(id));
    }
  }
}

TEST(SamplerTest, ParentFlagWins) {
  TraceContext parent;
  parent.trace_id = spread_id(999, 1000);  // near the top: not sampled at small ratios
  parent.span_id = new_span_id();
  parent.sampled = true;
  EXPECT_TRUE(Sampler(0.0).should_sample(parent.trace_id, &parent));
  parent.sampled = false;
  EXPECT_FALSE(Sampler(1.0).should_sample(parent.trace_id, &parent));
  EXPECT_FALSE(Sampler(0.0).should_sample(parent.trace_id, nullptr));
  EXPECT_TRUE(Sampler(1.0).should_sample(parent.trace_id, nullptr));
}

}  // namespace
}  // namespace pagoda::tracing
