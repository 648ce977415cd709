// RequestTrace: the spans of one request (DESIGN.md §7) — request (root), auth, tokenize,
// policy.input, queue, one prefill span per prefill chunk (recomputes after a preemption
// included), decode (with its token count), detokenize (one span over the streaming stretch with
// the time spent in it), policy.output — with the OpenTelemetry GenAI attribute names;
// preemptions are timed events on the root span. Engine stages come from the final output's
// timings and timeline, so the engine thread does no tracing work. Everything is a no-op when
// tracing is off.
#pragma once

#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>

#include "engine/request.h"
#include "server/tracing/span.h"

namespace pagoda {

class RequestTrace {
 public:
  // Continues the caller's trace from `traceparent` metadata when it parses; else a new one.
  RequestTrace(const tracing::Tracer* tracer, grpc::ServerContext* ctx);
  ~RequestTrace();

  bool enabled() const { return root_.has_value(); }
  std::string trace_id() const { return root_ ? root_->trace_id_hex() : ""; }

  // A span over [now, end of the returned object's life).
  class Stage {
   public:
    Stage(Stage&&) = default;
    ~Stage() {
      if (span_) span_->end();
    }
    tracing::Span* span() { return span_ ? &*span_ : nullptr; }

   private:
    friend class RequestTrace;
    explicit Stage(std::optional<tracing::Span> span) : span_(std::move(span)) {}
    std::optional<tracing::Span> span_;
  };
  Stage stage(std::string_view name);

  void set_request(const Request& r, const std::string& model, const std::string& tenant);
  // Adds the engine stages from the final output's timings and ends the root span.
  void finish(const RequestOutput& final, const std::string& policy_outcome);
  void fail(const grpc::Status& status);

 private:
  const tracing::Tracer* tracer_ = nullptr;
  std::optional<tracing::Span> root_;
};

}  // namespace pagoda
