#include "server/generation_service.h"

#include <cmath>

#include "core/utf8.h"
#include "server/request_trace.h"

namespace pagoda {

namespace v1 = ::pagoda::v1;

grpc::Status to_grpc(const Status& s) {
  using grpc::StatusCode;
  StatusCode code = StatusCode::UNKNOWN;
  switch (s.code()) {
    case pagoda::StatusCode::kOk: return grpc::Status::OK;
    case pagoda::StatusCode::kInvalidArgument: code = StatusCode::INVALID_ARGUMENT; break;
    case pagoda::StatusCode::kNotFound: code = StatusCode::NOT_FOUND; break;
    case pagoda::StatusCode::kOutOfRange: code = StatusCode::OUT_OF_RANGE; break;
    case pagoda::StatusCode::kResourceExhausted: code = StatusCode::RESOURCE_EXHAUSTED; break;
    case pagoda::StatusCode::kFailedPrecondition: code = StatusCode::FAILED_PRECONDITION; break;
    case pagoda::StatusCode::kUnimplemented: code = StatusCode::UNIMPLEMENTED; break;
    case pagoda::StatusCode::kInternal: code = StatusCode::INTERNAL; break;
    case pagoda::StatusCode::kDataLoss: code = StatusCode::DATA_LOSS; break;
    case pagoda::StatusCode::kUnavailable: code = StatusCode::UNAVAILABLE; break;
    case pagoda::StatusCode::kCancelled: code = StatusCode::CANCELLED; break;
  }
  return grpc::Status(code, s.message());
}

namespace {

grpc::Status invalid(const std::string& field, const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, field + ": " + what);
}

v1::FinishReason to_wire(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kStopSequence: return v1::FINISH_REASON_STOP_SEQUENCE;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kTimeLimit: return v1::FINISH_REASON_TIME_LIMIT;
    case FinishReason::kContentFilter: return v1::FINISH_REASON_CONTENT_FILTER;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_ERROR;
}

int64_t unix_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

double seconds(EngineClock::time_point a, EngineClock::time_point b) {
  if (a == EngineClock::time_point{} || b == EngineClock::time_point{} || b < a) return 0;
  return std::chrono::duration<double>(b - a).count();
}

// Sampling and stop fields of the wire request → engine params. Range checks that the engine
// also makes are left to it (one source of truth); wire-only fields are checked here.
grpc::Status fill_params(const v1::GenerateRequest& req, int prompt_len, int context, int vocab,
                         Request* r) {
  SamplingParams& p = r->params;
  const v1::SamplingParams& s = req.sampling();
  if (s.has_temperature()) p.temperature = s.temperature();
  if (s.has_top_k()) p.top_k = s.top_k();
  if (s.has_top_p()) p.top_p = s.top_p();
  if (s.has_min_p()) p.min_p = s.min_p();
  if (s.has_repetition_penalty()) p.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) p.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) p.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) p.seed = s.seed();
  if (s.has_temperature() && !(s.temperature() <= 100))
    return invalid("sampling.temperature",
                   "must be in [0, 100], got " + std::to_string(s.temperature()));
  const v1::StopParams& st = req.stop();
  if (st.has_max_tokens()) {
    if (st.max_tokens() == 0) return invalid("stop.max_tokens", "must be at least 1");
    if (st.max_tokens() > static_cast<uint32_t>(context))
      return invalid("stop.max_tokens", std::to_string(st.max_tokens()) +
                                            " exceeds the context of " + std::to_string(context));
    p.max_tokens = static_cast<int>(st.max_tokens());
  } else {
    p.max_tokens = std::max(1, context - prompt_len);  // as much as fits
  }
  for (const std::string& stop : st.stop()) r->stop_strings.push_back(stop);
  for (uint32_t id : st.stop_token_ids()) {
    if (id >= static_cast<uint32_t>(vocab))
      return invalid("stop.stop_token_ids", "id " + std::to_string(id) +
                                                " is outside the vocabulary [0, " +
                                                std::to_string(vocab) + ")");
    p.stop_token_ids.push_back(static_cast<int>(id));
  }
  p.ignore_eos = st.ignore_eos();
  p.logprobs = static_cast<int>(std::min<uint32_t>(req.logprobs(), 1u << 20));  // range: engine
  if (req.priority() < -1000 || req.priority() > 1000)
    return invalid("priority", "must be in [-1000, 1000], got " + std::to_string(req.priority()));
  r->priority = req.priority();
  r->cache_salt = req.cache_salt();
  return grpc::Status::OK;
}

// Per-request metrics (metrics/README.md): inter-token latency from the arrival of outputs at
// the server, spread evenly over the tokens a merged output carries; the rest at the end.
void record_metrics(metrics::PagodaMetrics& m, const RequestOutput& out, const std::string& tenant,
                    EngineClock::time_point* last_output, bool* first_token_seen) {
  const auto now = EngineClock::now();
  const size_t n = out.new_token_ids.size();
  if (n > 0) {
    if (*first_token_seen) {
      const double gap = std::chrono::duration<double>(now - *last_output).count() / n;
      for (size_t i = 0; i < n; ++i) m.inter_token_latency->observe(gap);
    } else if (n > 1) {
      const double gap = std::chrono::duration<double>(now - *last_output).count() / (n - 1);
      for (size_t i = 1; i < n; ++i) m.inter_token_latency->observe(gap);
    }
    *first_token_seen = true;
    *last_output = now;
  }
  if (!out.finished) return;
  const RequestTimings& t = out.timings;
  m.prompt_tokens(tenant)->inc(out.usage.prompt_tokens);
  m.generation_tokens(tenant)->inc(out.usage.completion_tokens);
  m.requests_finished(finish_reason_name(out.finish_reason))->inc();
  m.e2e_request_latency->observe(seconds(t.queued, t.finished));
  if (t.scheduled != EngineClock::time_point{})
    m.request_queue_time->observe(seconds(t.queued, t.scheduled));
  if (out.usage.completion_tokens > 0)
    m.time_to_first_token->observe(seconds(t.queued, t.first_token));
}

}  // namespace

grpc::Status authenticate_caller(const ServerState& state, grpc::ServerContext* ctx,
                                 std::string* tenant, bool* admin) {
  const auth::Authenticator* a = state.authenticator();
  if (a == nullptr) {
    *tenant = "default";
    *admin = false;
    return grpc::Status::OK;
  }
  std::optional<std::string_view> header;
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("authorization"); it != md.end())
    header = std::string_view(it->second.data(), it->second.size());
  const auth::AuthResult r = a->authenticate(header);
  if (!r.principal) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, r.error);
  *tenant = r.principal->tenant;
  *admin = r.principal->admin;
  return grpc::Status::OK;
}

grpc::Status GenerationService::authenticate(grpc::ServerContext* ctx, std::string* tenant) const {
  bool admin = false;
  return authenticate_caller(*state_, ctx, tenant, &admin);
}

Status GenerationService::record_usage(const std::string& request_id, const std::string& tenant,
                                       const Usage& usage, const std::string& finish_reason,
                                       const std::string& policy_outcome,
                                       std::chrono::system_clock::time_point received_wall) {
  ledger::Ledger* l = state_->ledger();
  if (l == nullptr) return OkStatus();
  ledger::LedgerRow row;
  row.request_id = request_id;
  row.tenant = tenant;
  row.model_id = state_->identity().id;
  row.model_revision = state_->identity().revision;
  row.prompt_tokens = usage.prompt_tokens;
  row.completion_tokens = usage.completion_tokens;
  row.cached_tokens = usage.cached_tokens;
  row.finish_reason = finish_reason;
  row.policy_outcome = policy_outcome;
  row.received_unix_ms = unix_ms(received_wall);
  row.finished_unix_ms = unix_ms(std::chrono::system_clock::now());
  const Status committed = l->append(std::move(row))->wait();
  if (committed.ok()) return committed;
  return Unavailable("the usage ledger could not record the request: " + committed.message());
}

grpc::Status GenerationService::check_model(const std::string& model) const {
  if (!model.empty() && model != state_->identity().id)
    return invalid("model", "unknown model '" + model + "' (this server serves '" +
                                state_->identity().id + "')");
  return grpc::Status::OK;
}

grpc::Status GenerationService::run(
    grpc::ServerContext* ctx, const v1::GenerateRequest& req,
    const std::function<bool(const RequestOutput&, const std::string&)>& on_output) {
  const auto received = EngineClock::now();
  if (state_->draining())
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is draining");
  Engine* engine = state_->engine();
  if (engine == nullptr)
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  RequestTrace trace(state_->tracer(), ctx);
  grpc::Status result = run_traced(ctx, req, on_output, received, &trace);
  trace.fail(result);
  return result;
}

grpc::Status GenerationService::run_traced(
    grpc::ServerContext* ctx, const v1::GenerateRequest& req,
    const std::function<bool(const RequestOutput&, const std::string&)>& on_output,
    EngineClock::time_point received, RequestTrace* trace) {
  Engine* engine = state_->engine();
  const std::string request_id = state_->next_request_id();
  std::string tenant;
  {
    RequestTrace::Stage span = trace->stage("auth");
    if (grpc::Status s = authenticate(ctx, &tenant); !s.ok()) return s;
  }
  if (grpc::Status s = check_model(req.model()); !s.ok()) return s;

  const auto received_wall = std::chrono::system_clock::now() - (EngineClock::now() - received);
  Request r;
  r.arrival = received;
  std::optional<RequestTrace::Stage> tokenize_span;
  if (req.input_case() == v1::GenerateRequest::kText)
    tokenize_span.emplace(trace->stage("tokenize"));
  switch (req.input_case()) {
    case v1::GenerateRequest::kText: {
      if (req.text().empty()) return invalid("text", "is empty");
      const Tokenizer* tok = state_->tokenizer();
      StatusOr<std::vector<int>> ids =
          tok->encode(req.text(), req.has_add_bos() ? req.add_bos() : true);
      if (!ids.ok()) return invalid("text", ids.status().message());
      r.prompt_ids = std::move(ids).value();
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      if (req.token_ids().ids().empty()) return invalid("token_ids", "is empty");
      for (uint32_t id : req.token_ids().ids()) {
        if (id >= static_cast<uint32_t>(state_->identity().vocab_size))
          return invalid("token_ids", "id " + std::to_string(id) +
                                          " is outside the vocabulary [0, " +
                                          std::to_string(state_->identity().vocab_size) + ")");
        r.prompt_ids.push_back(static_cast<int>(id));
      }
      break;
    default: return invalid("input", "set text or token_ids");
  }
  tokenize_span.reset();
  // Policy (input): decided on the prompt text with its token count; a redacted prompt is
  // tokenized again. Token-id prompts are checked on their decoded text and can be blocked,
  // not redacted.
  std::string policy_outcome = "allow";  // for the ledger
  std::shared_ptr<const policy::PolicySet> policies;
  const policy::Policy* pol = nullptr;
  if (policy::PolicyStore* store = state_->policies()) {
    policies = store->current();
    pol = &policies->for_tenant(tenant);
    const bool is_text = req.input_case() == v1::GenerateRequest::kText;
    const std::string text = is_text ? req.text() : state_->tokenizer()->decode(r.prompt_ids);
    policy::InputContext pctx;
    pctx.prompt_tokens = static_cast<int64_t>(r.prompt_ids.size());
    RequestTrace::Stage policy_span = trace->stage("policy.input");
    const policy::InputResult in = pol->filter_input(text, pctx);
    if (tracing::Span* ps = policy_span.span()) {
      for (const policy::Decision& d : in.decisions)
        if (d.action != policy::Action::kAllow)
          ps->add_event("policy.decision", {{"filter", d.filter},
                                            {"action", std::string(policy::action_name(d.action))},
                                            {"reason", d.reason}});
    }
    if (const policy::Decision* block = in.block()) {
      const auto code = policy::block_status(*block) == policy::BlockStatus::kPermissionDenied
                            ? grpc::StatusCode::PERMISSION_DENIED
                            : grpc::StatusCode::FAILED_PRECONDITION;
      Usage usage;
      usage.prompt_tokens = static_cast<int>(r.prompt_ids.size());
      const Status recorded = record_usage(request_id, tenant, usage, "content_filter",
                                           "block:" + block->reason, received_wall);
      if (!recorded.ok()) return to_grpc(recorded);
      return grpc::Status(code, "policy " + pol->name() + ": " + block->reason + " (filter " +
                                    block->filter + ")" +
                                    (block->detail.empty() ? "" : ": " + block->detail));
    }
    for (const policy::Decision& d : in.decisions)
      if (d.action == policy::Action::kRedact) policy_outcome = "redact";
    if (is_text && in.text != text) {
      StatusOr<std::vector<int>> ids =
          state_->tokenizer()->encode(in.text, req.has_add_bos() ? req.add_bos() : true);
      if (!ids.ok()) return invalid("text", ids.status().message());
      r.prompt_ids = std::move(ids).value();
    }
  }
  const int prompt_len = static_cast<int>(r.prompt_ids.size());
  const int context = state_->identity().context_length;
  if (prompt_len >= context)
    return invalid(req.input_case() == v1::GenerateRequest::kText ? "text" : "token_ids",
                   "the prompt has " + std::to_string(prompt_len) + " tokens; the context holds " +
                       std::to_string(context) + " (prompt + completion)");
  if (grpc::Status s = fill_params(req, prompt_len, context, state_->identity().vocab_size, &r);
      !s.ok())
    return s;
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
    const auto left = ctx->deadline() - std::chrono::system_clock::now();
    r.deadline = EngineClock::now() + std::chrono::duration_cast<EngineClock::duration>(left);
  }

  // Per-tenant limits: reserve prompt + max tokens now; released with the actual counts.
  auth::Limiter* limiter = state_->limiter();
  auth::Ticket limit_ticket;
  if (limiter != nullptr) {
    const auth::Admission a =
        limiter->admit(tenant, prompt_len, r.params.max_tokens, auth::LimitClock::now());
    if (!a.status.ok()) {
      if (auto secs = a.retry_after_seconds())
        ctx->AddTrailingMetadata("retry-after", std::to_string(*secs));
      return to_grpc(a.status);
    }
    limit_ticket = a.ticket;
  }
  int64_t completion_tokens = 0;
  struct ReleaseOnExit {
    auth::Limiter* limiter;
    const auth::Ticket& ticket;
    int prompt;
    const int64_t& completion;
    ~ReleaseOnExit() {
      if (limiter != nullptr)
        (void)limiter->release(ticket, prompt, completion, auth::LimitClock::now());
    }
  } release_limits{limiter, limit_ticket, prompt_len, completion_tokens};

  trace->set_request(r, state_->identity().id, tenant);
  std::string why;
  if (!state_->admit(prompt_len, &why))
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, why);
  bool queued = true;
  auto leave = [&] {
    if (queued) state_->leave_queue(prompt_len);
    queued = false;
  };
  StatusOr<RequestHandle> handle = engine->submit(std::move(r));
  if (!handle.ok()) {
    leave();
    return to_grpc(handle.status());
  }
  state_->track(handle->id);
  bool client_gone = false;
  Status error;
  metrics::PagodaMetrics* m = state_->metrics();
  auto last_output = EngineClock::now();
  bool first_token_seen = false;
  // Policy (output): text passes through the filter stream before it is sent. Under output
  // rules, token ids and logprobs are withheld: they would reveal what the filters hold back.
  std::optional<policy::OutputFilterStream> out_filter;
  // Its span covers the stream it filters, with the time spent filtering and each decision.
  std::optional<RequestTrace::Stage> out_filter_span;
  std::chrono::nanoseconds out_filter_busy{0};
  if (pol != nullptr && !pol->output_rules()->empty()) {
    out_filter.emplace(pol->output_stream());
    out_filter_span.emplace(trace->stage("policy.output"));
  }
  FinishReason policy_end = FinishReason::kNone;
  for (;;) {
    // Merged: when the client reads slower than the engine decodes, one write carries them all.
    std::optional<RequestOutput> out = handle->outputs->next_merged(std::chrono::milliseconds(50));
    if (!out) {
      if (!client_gone && ctx->IsCancelled()) {
        client_gone = true;
        (void)engine->cancel(handle->id);
      }
      continue;
    }
    leave();
    completion_tokens = out->usage.completion_tokens;
    if (out_filter) {
      out->new_token_ids.clear();
      out->logprobs.clear();
      if (policy_end != FinishReason::kNone) {
        out->text.clear();  // generated after the filter ended the stream: never sent
      } else {
        const auto filter_start = EngineClock::now();
        out->text = out_filter->push(out->text);
        if (out->finished) out->text += out_filter->finish();
        out_filter_busy += EngineClock::now() - filter_start;
        if (out_filter->blocked() || out_filter->stopped()) {
          policy_end = out_filter->blocked() ? FinishReason::kContentFilter : FinishReason::kStop;
          if (!out->finished) (void)engine->cancel(handle->id);
        }
      }
      if (out->finished && policy_end != FinishReason::kNone) out->finish_reason = policy_end;
      if (out->finished) {
        tracing::Span* ps = out_filter_span->span();
        for (const policy::Decision& d : out_filter->decisions()) {
          if (d.action == policy::Action::kAllow) continue;
          policy_outcome = std::string(policy::action_name(d.action)) + ":" + d.reason;
          if (ps != nullptr)
            ps->add_event("policy.decision",
                          {{"filter", d.filter},
                           {"action", std::string(policy::action_name(d.action))},
                           {"reason", d.reason}});
        }
        if (ps != nullptr)
          ps->set_attribute("pagoda.policy.busy_seconds",
                            std::chrono::duration<double>(out_filter_busy).count());
        out_filter_span.reset();
      }
    }
    if (out->finished) {
      trace->finish(*out, policy_outcome);
      out->trace_id = trace->trace_id();
    }
    if (out->finished && state_->ledger() != nullptr) {
      // The final response waits for its ledger row to be durable (a client that saw it can
      // find it in the ledger, also after kill -9).
      const Status committed =
          record_usage(request_id, tenant, out->usage, finish_reason_name(out->finish_reason),
                       policy_outcome, received_wall);
      if (!committed.ok()) {
        state_->untrack(handle->id);
        return to_grpc(committed);
      }
    }
    if (m != nullptr) record_metrics(*m, *out, tenant, &last_output, &first_token_seen);
    if (out->finished && out->finish_reason == FinishReason::kError) error = out->error;
    if (!client_gone && !on_output(*out, request_id)) {
      client_gone = true;
      (void)engine->cancel(handle->id);
    }
    if (out->finished) break;
  }
  state_->untrack(handle->id);
  if (!error.ok())
    return grpc::Status(grpc::StatusCode::INTERNAL, "generation failed: " + error.message());
  if (client_gone) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  return grpc::Status::OK;
}

namespace {

void fill_chunk(const RequestOutput& out, const std::string& request_id, bool token_ids,
                const ModelIdentity& model, const Tokenizer* tok, v1::GenerateResponse* resp) {
  for (const TokenLogprobs& lp : out.logprobs) {
    v1::TokenLogprob* w = resp->add_logprobs();
    w->set_token_id(static_cast<uint32_t>(lp.token_id));
    w->set_logprob(lp.logprob);
    for (const auto& [id, logprob] : lp.top) {
      v1::TopLogprob* t = w->add_top();
      t->set_token_id(static_cast<uint32_t>(id));
      t->set_logprob(logprob);
      t->set_token(sanitize_utf8(tok->piece_bytes(id)));
    }
  }
  resp->set_request_id(request_id);
  resp->mutable_text()->append(out.text);
  if (token_ids)
    for (int id : out.new_token_ids) resp->add_token_ids(static_cast<uint32_t>(id));
  v1::Usage* u = resp->mutable_usage();
  u->set_prompt_tokens(out.usage.prompt_tokens);
  u->set_completion_tokens(out.usage.completion_tokens);
  u->set_cached_tokens(out.usage.cached_tokens);
  if (out.finished) {
    resp->set_finish_reason(to_wire(out.finish_reason));
    const RequestTimings& t = out.timings;
    v1::Timings* w = resp->mutable_timings();
    w->set_queue_seconds(seconds(t.queued, t.scheduled));
    w->set_first_token_seconds(seconds(t.queued, t.first_token));
    w->set_decode_seconds(seconds(t.first_token, t.finished));
    w->set_total_seconds(seconds(t.queued, t.finished));
    resp->set_model_id(model.id);
    resp->set_model_revision(model.revision);
    resp->set_trace_id(out.trace_id);
  }
}

}  // namespace

grpc::Status GenerationService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  return run(ctx, *req, [&](const RequestOutput& out, const std::string& request_id) {
    if (!out.finished && out.text.empty() && !req->return_token_ids() && req->logprobs() == 0)
      return true;  // nothing the client asked for (e.g. text held back for a stop string)
    v1::GenerateResponse chunk;
    fill_chunk(out, request_id, req->return_token_ids(), state_->identity(), state_->tokenizer(),
               &chunk);
    return writer->Write(chunk);
  });
}

grpc::Status GenerationService::Complete(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                         v1::GenerateResponse* resp) {
  return run(ctx, *req, [&](const RequestOutput& out, const std::string& request_id) {
    fill_chunk(out, request_id, req->return_token_ids(), state_->identity(), state_->tokenizer(),
               resp);
    return true;
  });
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                         v1::TokenizeResponse* resp) {
  std::string tenant;
  if (grpc::Status s = authenticate(ctx, &tenant); !s.ok()) return s;
  if (state_->engine() == nullptr)
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  if (grpc::Status s = check_model(req->model()); !s.ok()) return s;
  const Tokenizer* tok = state_->tokenizer();
  StatusOr<std::vector<int>> ids =
      tok->encode(req->text(), req->has_add_bos() ? req->add_bos() : true);
  if (!ids.ok()) return invalid("text", ids.status().message());
  for (int id : *ids) {
    resp->add_token_ids(static_cast<uint32_t>(id));
    resp->add_pieces(sanitize_utf8(tok->piece_bytes(id)));
  }
  return grpc::Status::OK;
}

grpc::Status GenerationService::Detokenize(grpc::ServerContext* ctx,
                                           const v1::DetokenizeRequest* req,
                                           v1::DetokenizeResponse* resp) {
  std::string tenant;
  if (grpc::Status s = authenticate(ctx, &tenant); !s.ok()) return s;
  if (state_->engine() == nullptr)
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  if (grpc::Status s = check_model(req->model()); !s.ok()) return s;
  std::vector<int> ids;
  for (uint32_t id : req->token_ids()) {
    if (id >= static_cast<uint32_t>(state_->identity().vocab_size))
      return invalid("token_ids", "id " + std::to_string(id) + " is outside the vocabulary");
    ids.push_back(static_cast<int>(id));
  }
  resp->set_text(sanitize_utf8(state_->tokenizer()->decode(ids)));
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                                             v1::ModelInfo* resp) {
  if (state_->engine() == nullptr)
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  const ModelIdentity& m = state_->identity();
  resp->set_id(m.id);
  resp->set_revision(m.revision);
  resp->set_context_length(static_cast<uint32_t>(m.context_length));
  resp->set_vocab_size(static_cast<uint32_t>(m.vocab_size));
  resp->set_dtype(m.dtype);
  resp->set_architecture(m.architecture);
  resp->set_backend(m.backend);
  resp->set_max_logprobs(static_cast<uint32_t>(m.max_logprobs));
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetServerInfo(grpc::ServerContext*, const v1::GetServerInfoRequest*,
                                              v1::ServerInfo* resp) {
  resp->set_uptime_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - state_->started()).count());
  resp->set_version(PAGODA_VERSION);
  resp->set_draining(state_->draining());
  if (Engine* e = state_->engine()) {
    const EngineStats s = e->stats();
    const int blocks = e->scheduler_config().num_blocks;
    resp->set_running(static_cast<uint32_t>(s.running));
    resp->set_waiting(static_cast<uint32_t>(s.waiting));
    resp->set_kv_cache_usage(s.kv_usage);
    resp->set_preemptions(static_cast<uint64_t>(s.preemptions));
    resp->set_prefix_cache_hit_rate(s.prefix_hit_rate);
    resp->set_num_kv_blocks(static_cast<uint32_t>(blocks));
    resp->set_kv_blocks_in_use(static_cast<uint32_t>(std::lround(s.kv_usage * blocks)));
  }
  return grpc::Status::OK;
}

}  // namespace pagoda
