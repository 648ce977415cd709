#include "server/request_trace.h"

#include <chrono>

namespace pagoda {

namespace {

// Unix nanoseconds of a steady-clock instant (the engine's timings are steady).
uint64_t unix_nanos(EngineClock::time_point t) {
  const auto steady_now = EngineClock::now();
  const auto wall_now = std::chrono::system_clock::now();
  const auto wall =
      wall_now + std::chrono::duration_cast<std::chrono::system_clock::duration>(t - steady_now);
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(wall.time_since_epoch()).count());
}

bool set(EngineClock::time_point t) {
  return t != EngineClock::time_point{};
}

}  // namespace

RequestTrace::RequestTrace(const tracing::Tracer* tracer, grpc::ServerContext* ctx)
    : tracer_(tracer) {
  if (tracer_ == nullptr) return;
  std::optional<tracing::TraceContext> parent;
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("traceparent"); it != md.end()) {
    std::string_view state;
    if (auto s = md.find("tracestate"); s != md.end())
      state = std::string_view(s->second.data(), s->second.size());
    StatusOr<tracing::TraceContext> p =
        tracing::parse_traceparent(std::string_view(it->second.data(), it->second.size()), state);
    if (p.ok()) parent = *p;  // an invalid header starts a new trace (W3C: ignore it)
  }
  root_.emplace(tracer_->start_root("request", parent ? &*parent : nullptr));
  ctx->AddTrailingMetadata("trace-id", root_->trace_id_hex());
}

RequestTrace::~RequestTrace() {
  if (root_) root_->end();
}

RequestTrace::Stage RequestTrace::stage(std::string_view name) {
  if (!root_) return Stage(std::nullopt);
  return Stage(tracer_->start_child(name, *root_));
}

void RequestTrace::set_request(const Request& r, const std::string& model,
                               const std::string& tenant) {
  if (!root_) return;
  root_->set_attribute("gen_ai.request.model", model);
  root_->set_attribute("gen_ai.request.max_tokens", int64_t{r.params.max_tokens});
  root_->set_attribute("gen_ai.request.temperature", static_cast<double>(r.params.temperature));
  root_->set_attribute("gen_ai.request.top_p", static_cast<double>(r.params.top_p));
  root_->set_attribute("pagoda.tenant", tenant);
}

void RequestTrace::finish(const RequestOutput& out, const std::string& policy_outcome) {
  if (!root_) return;
  const RequestTimings& t = out.timings;
  auto child = [&](const char* name, EngineClock::time_point a, EngineClock::time_point b) {
    if (!set(a) || !set(b) || b < a) return;
    tracing::Span s = tracer_->start_child(name, *root_, unix_nanos(a));
    s.end(unix_nanos(b));
  };
  child("queue", t.queued, set(t.scheduled) ? t.scheduled : t.finished);
  const RequestTimeline* timeline = out.timeline.get();
  if (timeline != nullptr) {
    // One span per prefill chunk: a long prompt split over steps shows each step it shared.
    int index = 0;
    for (const PrefillChunk& c : timeline->prefill_chunks) {
      if (!set(c.start) || c.end < c.start) continue;
      tracing::Span s = tracer_->start_child("prefill", *root_, unix_nanos(c.start));
      s.set_attribute("pagoda.prefill.chunk", int64_t{index++});
      s.set_attribute("pagoda.prefill.start_position", int64_t{c.start_position});
      s.set_attribute("pagoda.prefill.tokens", int64_t{c.num_tokens});
      if (c.recompute) s.set_attribute("pagoda.prefill.recompute", true);
      s.end(unix_nanos(c.end));
    }
  } else {
    child("prefill", t.scheduled, t.first_token);
  }
  if (set(t.first_token)) {
    tracing::Span decode = tracer_->start_child("decode", *root_, unix_nanos(t.first_token));
    decode.set_attribute("pagoda.decode_tokens", int64_t{out.usage.completion_tokens - 1});
    decode.end(unix_nanos(t.finished));
    // Detokenization is incremental, a token at a time inside the decode steps: one span over
    // that stretch, carrying the time actually spent in it (not one span per token).
    if (timeline != nullptr && timeline->detokenized_tokens > 0) {
      tracing::Span d = tracer_->start_child("detokenize", *root_, unix_nanos(t.first_token));
      d.set_attribute("pagoda.detokenize.tokens", timeline->detokenized_tokens);
      d.set_attribute("pagoda.detokenize.busy_seconds",
                      std::chrono::duration<double>(timeline->detokenize_busy).count());
      d.end(unix_nanos(t.finished));
    }
  }
  root_->set_attribute("gen_ai.usage.input_tokens", int64_t{out.usage.prompt_tokens});
  root_->set_attribute("gen_ai.usage.output_tokens", int64_t{out.usage.completion_tokens});
  root_->set_attribute("gen_ai.response.finish_reasons",
                       std::string(finish_reason_name(out.finish_reason)));
  root_->set_attribute("pagoda.cached_tokens", int64_t{out.usage.cached_tokens});
  root_->set_attribute("pagoda.policy_outcome", policy_outcome);
  if (set(t.scheduled))
    root_->set_attribute("pagoda.queue_seconds",
                         std::chrono::duration<double>(t.scheduled - t.queued).count());
  if (out.num_preemptions > 0) {
    root_->set_attribute("pagoda.preemptions", int64_t{out.num_preemptions});
    if (timeline != nullptr) {
      int64_t n = 0;
      for (EngineClock::time_point at : timeline->preempted_at)
        root_->add_event("preempted", {{"pagoda.preemption", ++n}}, unix_nanos(at));
    }
  }
  if (out.finish_reason == FinishReason::kError)
    root_->set_status(tracing::SpanStatusCode::kError, out.error.message());
}

void RequestTrace::fail(const grpc::Status& status) {
  if (!root_ || status.ok()) return;
  root_->set_status(tracing::SpanStatusCode::kError, status.error_message());
  root_->set_attribute("rpc.grpc.status_code", int64_t{static_cast<int>(status.error_code())});
}

}  // namespace pagoda
