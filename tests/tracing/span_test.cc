#include "server/tracing/span.h"

#include <gtest/gtest.h>

#include <mutex>

namespace pagoda::tracing {
namespace {

class RecordingExporter : public SpanExporter {
 public:
  void export_span(SpanData span) override {
    std::lock_guard<std::mutex> lock(mu);
    spans.push_back(std::move(span));
  }
  std::mutex mu;
  std::vector<SpanData> spans;
};

TEST(SpanTest, ChildLinksToParentAndEndsOnce) {
  RecordingExporter exporter;
  Tracer tracer(&exporter, 1.0);
  Span root = tracer.start_root("request", nullptr, SpanKind::kServer, 100);
  ASSERT_TRUE(root.recording());
  {
    Span child = tracer.start_child("tokenize", root, 110);
    child.set_attribute("gen_ai.usage.input_tokens", 42)
        .set_attribute("gen_ai.request.model", "tiny")
        .set_attribute("gen_ai.request.temperature", 0.7)
        .set_attribute("pagoda.cached", true)
        .set_attribute("gen_ai.usage.input_tokens", 43);  // overwrite, not duplicate
    child.add_event("preempted", {{"pagoda.reason", std::string("kv")}}, 115);
    child.set_status(SpanStatusCode::kError, "boom");
    child.end(120);
    child.end(130);  // no second export
  }
  root.end(200);
  ASSERT_EQ(exporter.spans.size(), 2u);
  const SpanData& c = exporter.spans[0];
  const SpanData& r = exporter.spans[1];
  EXPECT_EQ(r.name, "request");
  EXPECT_TRUE(is_zero(r.parent_span_id));
  EXPECT_EQ(r.kind, SpanKind::kServer);
  EXPECT_EQ(c.trace_id, r.trace_id);
  EXPECT_EQ(c.parent_span_id, r.span_id);
  EXPECT_NE(c.span_id, r.span_id);
  EXPECT_EQ(c.start_unix_nano, 110u);
  EXPECT_EQ(c.end_unix_nano, 120u);
  ASSERT_EQ(c.attributes.size(), 4u);
  EXPECT_EQ(std::get<int64_t>(c.attributes[0].value), 43);
  EXPECT_EQ(std::get<std::string>(c.attributes[1].value), "tiny");
  EXPECT_DOUBLE_EQ(std::get<double>(c.attributes[2].value), 0.7);
  EXPECT_TRUE(std::get<bool>(c.attributes[3].value));
  ASSERT_EQ(c.events.size(), 1u);
  EXPECT_EQ(c.events[0].name, "preempted");
  EXPECT_EQ(c.events[0].time_unix_nano, 115u);
  EXPECT_EQ(c.status_code, SpanStatusCode::kError);
  EXPECT_EQ(c.status_message, "boom");
}

TEST(SpanTest, DestructorEndsAndMoveTransfersOwnership) {
  RecordingExporter exporter;
  Tracer tracer(&exporter, 1.0);
  {
    Span a = tracer.start_root("a");
    Span b = std::move(a);
    EXPECT_FALSE(a.recording());
    EXPECT_TRUE(b.recording());
  }
  ASSERT_EQ(exporter.spans.size(), 1u);
  EXPECT_GT(exporter.spans[0].end_unix_nano, 0u);
  EXPECT_GE(exporter.spans[0].end_unix_nano, exporter.spans[0].start_unix_nano);
}

TEST(SpanTest, UnsampledSpansExportNothingButCarryIds) {
  RecordingExporter exporter;
  Tracer tracer(&exporter, 0.0);
  Span root = tracer.start_root("request");
  EXPECT_FALSE(root.recording());
  EXPECT_FALSE(is_zero(root.context().trace_id));
  EXPECT_FALSE(root.context().sampled);
  Span child = tracer.start_child("decode", root);
  child.set_attribute("x", 1).add_event("e").set_status(SpanStatusCode::kOk);
  EXPECT_EQ(child.context().trace_id, root.context().trace_id);
  child.end();
  root.end();
  EXPECT_TRUE(exporter.spans.empty());
}

TEST(SpanTest, RemoteParentIsContinued) {
  RecordingExporter exporter;
  Tracer tracer(&exporter, 0.0);  // the parent's sampled flag overrides the ratio
  auto remote =
      parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=x");
  ASSERT_TRUE(remote.ok());
  Span root = tracer.start_root("request", &*remote);
  ASSERT_TRUE(root.recording());
  EXPECT_EQ(root.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(root.context().tracestate, "vendor=x");
  std::string outgoing = format_traceparent(root.context());
  EXPECT_EQ(outgoing.substr(0, 36), "00-4bf92f3577b34da6a3ce929d0e0e4736-");
  EXPECT_EQ(outgoing.substr(36, 16), to_hex(root.context().span_id));
  root.end();
  ASSERT_EQ(exporter.spans.size(), 1u);
  EXPECT_EQ(to_hex(exporter.spans[0].parent_span_id), "00f067aa0ba902b7");
}

}  // namespace
}  // namespace pagoda::tracing
