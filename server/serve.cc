#include "server/serve.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "core/thread_pool.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "server/admin_service.h"
#include "server/auth/key_store.h"
#include "server/generation_service.h"
#include "server/metrics/http_server.h"
#include "server/stall_detector.h"
#include "server/tracing/otlp_exporter.h"

namespace pagoda {

namespace {

constexpr const char* kReadiness = "pagoda.v1.Generation";

// Content hash of the weights (names, shapes, dtypes, bytes): FNV-1a over 64-bit words.
std::string weights_revision(const LoadedModel& m) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 0x100000001b3ull; };
  for (const auto& [name, t] : m.weights.tensors()) {
    // A fused projection's parts are views of it: their bytes are hashed there, once.
    if (m.weights.is_view(name)) continue;
    for (char c : name) mix(static_cast<unsigned char>(c));
    mix(static_cast<uint64_t>(t.dtype));
    for (int i = 0; i < t.ndim; ++i) mix(static_cast<uint64_t>(t.shape[i]));
    const auto* p = static_cast<const unsigned char*>(t.data);
    const size_t n = t.nbytes();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      mix(w);
    }
    for (; i < n; ++i) mix(p[i]);
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, h);
  return buf;
}

std::string default_model_id(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

struct LoadedServing {
  std::unique_ptr<LoadedModel> loaded;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Engine> engine;
};

StatusOr<LoadedServing> load_and_warm(const ServeConfig& c, const std::string& model_path,
                                      ModelIdentity* identity) {
  LoadedServing s;
  PAGODA_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(model_path));
  s.loaded = std::make_unique<LoadedModel>(std::move(loaded));
  const std::string tok_path = c.tokenizer.empty() ? s.loaded->tokenizer_path : c.tokenizer;
  if (tok_path.empty())
    return NotFound("no tokenizer.model beside " + model_path + "; pass --tokenizer FILE");
  PAGODA_ASSIGN_OR_RETURN(s.tokenizer, load_sentencepiece_tokenizer(tok_path));
  PAGODA_ASSIGN_OR_RETURN(s.backend, make_backend(c.device, c.threads));
  PAGODA_ASSIGN_OR_RETURN(s.model, LlamaModel::create(*s.loaded, s.backend.get()));
  if (c.engine.decode_graphs && !s.backend->supports_graphs())
    std::fprintf(stderr, "pagoda serve: --cuda-graphs has no effect on %s (no step graphs)\n",
                 s.backend->name().c_str());
  PAGODA_ASSIGN_OR_RETURN(s.engine, Engine::create(s.model.get(), s.tokenizer.get(), c.engine));
  // Warm-up: one real step through the whole path before readiness says SERVING.
  Request warm;
  warm.prompt_ids = {s.tokenizer->bos_id() >= 0 ? s.tokenizer->bos_id() : 0};
  warm.params.max_tokens = 1;
  warm.params.temperature = 0;
  PAGODA_ASSIGN_OR_RETURN(RequestHandle h, s.engine->submit(warm));
  for (;;) {
    std::optional<RequestOutput> out = h.outputs->next();
    if (out->finished) {
      if (out->finish_reason == FinishReason::kError) return out->error;
      break;
    }
  }
  const ModelConfig& mc = s.loaded->config;
  identity->id = c.model_id.empty() ? default_model_id(model_path) : c.model_id;
  identity->revision = weights_revision(*s.loaded);
  identity->dtype = dtype_name(mc.dtype);
  identity->architecture = mc.architecture;
  identity->backend = s.backend->name();
  identity->context_length = s.engine->scheduler_config().max_model_len;
  identity->vocab_size = mc.vocab_size;
  identity->max_logprobs = c.engine.max_logprobs;
  return s;
}

}  // namespace

int run_serve(const std::vector<std::string>& args, const std::string& default_model_dir) {
  StatusOr<ServeConfig> parsed = parse_serve_config(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "pagoda serve: %s\n", parsed.status().to_string().c_str());
    return 2;
  }
  const ServeConfig config = std::move(parsed).value();
  const std::string model_path = config.model.empty() ? default_model_dir : config.model;

  // Signals are taken by one thread with sigwait; every other thread (gRPC's, the engine's)
  // inherits the blocked mask from here.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);  // reloads the policy file and the keys file
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  if (config.threads > 0) ThreadPool::set_default_threads(config.threads);

  // Keys: required to listen beyond loopback, unless explicitly waived. SIGHUP reloads them.
  std::unique_ptr<auth::KeyStore> keys;
  if (!config.keys_file.empty()) {
    StatusOr<std::unique_ptr<auth::KeyStore>> opened = auth::KeyStore::open(config.keys_file);
    if (!opened.ok()) {
      std::fprintf(stderr, "pagoda serve: %s\n", opened.status().to_string().c_str());
      return 2;
    }
    keys = std::move(opened).value();
  } else if (auth::requires_keys(config.host) && !config.insecure_no_auth) {
    std::fprintf(stderr,
                 "pagoda serve: refusing to listen on %s without API keys: pass --keys-file FILE "
                 "(server/auth/README.md), or --insecure-no-auth to serve anyone who can connect\n",
                 config.host.c_str());
    return 2;
  }
  ServerState state(config);
  if (keys) state.set_auth(keys->authenticator(), keys->limiter());
  // Tracing: spans go to the collector from the exporter's own thread, never blocking serving.
  std::unique_ptr<tracing::OtlpHttpExporter> exporter;
  std::unique_ptr<tracing::Tracer> tracer;
  if (!config.otlp_endpoint.empty()) {
    tracing::OtlpExporterOptions options;
    options.endpoint = config.otlp_endpoint;
    StatusOr<std::unique_ptr<tracing::OtlpHttpExporter>> made =
        tracing::OtlpHttpExporter::create(options);
    if (!made.ok()) {
      std::fprintf(stderr, "pagoda serve: --otlp-endpoint: %s\n",
                   made.status().to_string().c_str());
      return 2;
    }
    exporter = std::move(made).value();
    tracer = std::make_unique<tracing::Tracer>(exporter.get(), config.trace_sample_ratio);
    state.set_tracer(tracer.get());
  }
  std::unique_ptr<ledger::Ledger> usage_ledger;
  if (!config.ledger_file.empty()) {
    StatusOr<std::unique_ptr<ledger::Ledger>> opened = ledger::Ledger::open(config.ledger_file);
    if (!opened.ok()) {
      std::fprintf(stderr, "pagoda serve: %s\n", opened.status().to_string().c_str());
      return 2;
    }
    usage_ledger = std::move(opened).value();
    state.set_ledger(usage_ledger.get());
  }
  std::unique_ptr<policy::PolicyStore> policies;
  if (!config.policy_file.empty()) {
    StatusOr<std::unique_ptr<policy::PolicyStore>> opened =
        policy::PolicyStore::open(config.policy_file);
    if (!opened.ok()) {
      std::fprintf(stderr, "pagoda serve: %s\n", opened.status().to_string().c_str());
      return 2;
    }
    policies = std::move(opened).value();
    state.set_policies(policies.get());
  }
  GenerationService service(&state);
  AdminService admin_service(&state);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string address = config.host + ":" + std::to_string(config.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.RegisterService(&admin_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "pagoda serve: cannot listen on %s\n", address.c_str());
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  // Readiness goes to the gRPC health service and, mirrored, to the HTTP /readyz probe.
  auto set_ready = [&](bool serving) {
    state.set_ready_status(serving);
    health->SetServingStatus(kReadiness, serving);
  };
  set_ready(false);

  metrics::Registry registry;
  std::unique_ptr<metrics::PagodaMetrics> pagoda_metrics;
  std::unique_ptr<metrics::HttpServer> http;
  // Destroyed before the metrics it feeds: the ledger's writer stops observing into them.
  std::unique_ptr<ledger::Ledger, void (*)(ledger::Ledger*)> ledger_observer(
      nullptr, [](ledger::Ledger* l) { l->set_commit_observer(nullptr); });
  if (config.metrics_port >= 0) {
    StatusOr<std::unique_ptr<metrics::PagodaMetrics>> made = metrics::PagodaMetrics::create(
        &registry, {"length", "stop", "stop_sequence", "cancelled", "time_limit", "error"});
    if (!made.ok()) {
      std::fprintf(stderr, "pagoda serve: metrics: %s\n", made.status().to_string().c_str());
      return 1;
    }
    pagoda_metrics = std::move(made).value();
    state.set_metrics(pagoda_metrics.get());
    // The exporter's and the ledger's totals are sampled at scrape time (lock-free reads);
    // counters advance by what changed. Commit times are observed by the ledger's writer.
    if (exporter) {
      registry.add_collect_hook([m = pagoda_metrics.get(), e = exporter.get()] {
        const tracing::OtlpExporterStats s = e->stats();
        m->sample_trace_export(
            {.exported = s.exported, .dropped = s.dropped, .failed = s.failed, .queued = s.queued});
      });
    }
    if (usage_ledger) {
      registry.add_collect_hook([m = pagoda_metrics.get(), l = usage_ledger.get()] {
        const ledger::LedgerStats s = l->stats();
        m->sample_ledger({.commits = s.commits,
                          .rows_committed = s.rows_committed,
                          .failed_commits = s.failed_batches,
                          .rows_failed = s.rows_failed,
                          .rows_rejected = s.rejected_full,
                          .queued = s.queued});
      });
      usage_ledger->set_commit_observer([m = pagoda_metrics.get()](const ledger::CommitEvent& e) {
        m->ledger_commit_duration->observe(e.commit_seconds);
        for (double wait : e.row_wait_seconds) m->ledger_commit_wait->observe(wait);
      });
      ledger_observer.reset(usage_ledger.get());
    }
    metrics::HttpServerOptions options;
    options.host = config.metrics_host;
    options.port = config.metrics_port;
    http = std::make_unique<metrics::HttpServer>(options);
    metrics::add_probe_routes(http.get(), &registry, [&state] {
      return state.ready_status() ? metrics::ServingStatus::kServing
                                  : metrics::ServingStatus::kNotServing;
    });
    if (Status s = http->start(); !s.ok()) {
      std::fprintf(stderr, "pagoda serve: metrics: %s\n", s.to_string().c_str());
      return 1;
    }
    std::printf("pagoda serve: metrics on %s:%d\n", config.metrics_host.c_str(), http->port());
  }
  std::printf("pagoda serve: listening on %s:%d\n", config.host.c_str(), port);
  std::fflush(stdout);

  ModelIdentity identity;
  StatusOr<LoadedServing> serving = load_and_warm(config, model_path, &identity);
  if (!serving.ok()) {
    std::fprintf(stderr, "pagoda serve: %s\n", serving.status().to_string().c_str());
    server->Shutdown(std::chrono::system_clock::now());
    return 2;
  }
  state.set_ready(serving->engine.get(), serving->tokenizer.get(), identity);
  if (pagoda_metrics) {
    // Engine state is sampled when Prometheus scrapes; counters advance by what changed.
    registry.add_collect_hook([&, last = EngineStats{}]() mutable {
      const EngineStats s = serving->engine->stats();
      pagoda_metrics->requests_running->set(s.running);
      pagoda_metrics->requests_waiting->set(s.waiting);
      pagoda_metrics->kv_cache_usage_ratio->set(s.kv_usage);
      pagoda_metrics->preemptions->inc(static_cast<double>(s.preemptions - last.preemptions));
      pagoda_metrics->prefix_cache_queries->inc(
          static_cast<double>(s.prefix_queries - last.prefix_queries));
      pagoda_metrics->prefix_cache_hits->inc(static_cast<double>(s.prefix_hits - last.prefix_hits));
      pagoda_metrics->decode_graph_captures->inc(
          static_cast<double>(s.graph_captures - last.graph_captures));
      pagoda_metrics->decode_graph_replays->inc(
          static_cast<double>(s.graph_replays - last.graph_replays));
      pagoda_metrics->decode_graph_capture_failures->inc(
          static_cast<double>(s.graph_failures - last.graph_failures));
      pagoda_metrics->async_lookahead_steps->inc(
          static_cast<double>(s.lookahead_steps - last.lookahead_steps));
      pagoda_metrics->async_wasted_rows->inc(static_cast<double>(s.wasted_rows - last.wasted_rows));
      last = s;
      // Policy decisions: the library counts; the exported counters follow them.
      for (const auto& row : policy::DecisionCounters::global().snapshot()) {
        metrics::Counter* c =
            pagoda_metrics->policy_decisions(row.filter, policy::action_name(row.action));
        const double now_count = static_cast<double>(row.count);
        if (now_count > c->value()) c->inc(now_count - c->value());
      }
    });
  }
  set_ready(true);
  std::fprintf(stderr, "pagoda serve: ready: model %s (revision %s, %s)\n", identity.id.c_str(),
               identity.revision.c_str(), identity.backend.c_str());

  // Watchdog: readiness goes NOT_SERVING when work is pending and no step ran for a while.
  std::atomic<bool> stop_watchdog{false};
  std::thread watchdog([&] {
    StallDetector detector(std::chrono::duration<double>(config.stall_timeout_seconds));
    bool stalled = false;
    while (!stop_watchdog.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const EngineStats s = serving->engine->stats();
      const bool stall =
          detector.observe(s.steps, s.running + s.waiting > 0, std::chrono::steady_clock::now());
      if (stall != stalled && !state.draining()) {
        stalled = stall;
        set_ready(!stall);
        std::fprintf(stderr, "pagoda serve: engine %s: readiness %s\n",
                     stall ? "stalled" : "progressing", stall ? "NOT_SERVING" : "SERVING");
      }
    }
  });

  int sig = 0;
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP) break;
    if (!policies && !keys) {
      std::fprintf(stderr, "pagoda serve: SIGHUP: no policy file or keys file to reload\n");
      continue;
    }
    // A bad file is rejected and the old one stays; requests in flight keep theirs. The two
    // files are independent: a bad policy file does not stop a good keys file, nor the reverse.
    if (policies) {
      const Status s = policies->reload(config.policy_file);
      std::fprintf(stderr, "pagoda serve: SIGHUP: %s\n",
                   s.ok() ? ("reloaded " + config.policy_file).c_str()
                          : ("kept the old policies: " + s.to_string()).c_str());
    }
    if (keys) {
      const Status s = keys->reload(config.keys_file);
      std::fprintf(stderr, "pagoda serve: SIGHUP: %s\n",
                   s.ok() ? ("reloaded " + config.keys_file).c_str()
                          : ("kept the old keys: " + s.to_string()).c_str());
    }
  }
  std::fprintf(stderr, "pagoda serve: %s: draining (up to %.0f s)\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT", config.drain_timeout_seconds);
  state.start_draining();
  set_ready(false);
  const auto drain =
      std::chrono::milliseconds(static_cast<int64_t>(config.drain_timeout_seconds * 1000));
  if (!state.wait_idle(drain)) {
    const std::set<RequestId> left = state.in_flight();
    std::fprintf(stderr, "pagoda serve: drain timeout: cancelling %zu requests\n", left.size());
    for (RequestId id : left) (void)serving->engine->cancel(id);
    (void)state.wait_idle(std::chrono::seconds(10));
  }
  stop_watchdog.store(true);
  watchdog.join();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  if (http) http->stop();
  if (usage_ledger) usage_ledger->close();  // flushes what is queued
  if (exporter) exporter->shutdown(std::chrono::seconds(2));
  std::fprintf(stderr, "pagoda serve: stopped\n");
  return 0;
}

}  // namespace pagoda
