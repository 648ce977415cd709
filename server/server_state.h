// ServerState: what the gRPC services share — the engine once the model is loaded, the model's
// identity, admission counters (the bounded waiting queue), the set of in-flight requests (for
// drain) and the draining flag. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "engine/engine.h"
#include "server/auth/authenticator.h"
#include "server/auth/limits.h"
#include "server/ledger/ledger.h"
#include "server/metrics/pagoda_metrics.h"
#include "server/policy/policy_config.h"
#include "server/serve_config.h"
#include "server/tracing/span.h"

namespace pagoda {

struct ModelIdentity {
  std::string id, revision, dtype, architecture, backend;
  int context_length = 0;
  int vocab_size = 0;
  int max_logprobs = 0;
};

std::string make_instance_id();  // 16 random hex digits

class ServerState {
 public:
  explicit ServerState(ServeConfig config) : config_(std::move(config)) {}

  const ServeConfig& config() const { return config_; }
  // Random per process: request ids are "<instance>-<n>", unique across restarts and replicas.
  const std::string& instance_id() const { return instance_id_; }
  std::string next_request_id() { return instance_id_ + "-" + std::to_string(++request_counter_); }
  std::chrono::steady_clock::time_point started() const { return started_; }

  // Set once, after the model is loaded and warm; null before.
  void set_ready(Engine* engine, const Tokenizer* tokenizer, ModelIdentity identity);
  Engine* engine() const { return engine_.load(); }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  const ModelIdentity& identity() const { return identity_; }

  // The readiness the health service reports, mirrored for the HTTP /readyz probe.
  void set_ready_status(bool serving) { ready_status_.store(serving); }
  bool ready_status() const { return ready_status_.load(); }
  // Null when metrics are off. Set before serving starts.
  void set_metrics(metrics::PagodaMetrics* m) { metrics_ = m; }
  metrics::PagodaMetrics* metrics() const { return metrics_; }
  // Null when no policy file is configured. Set before serving starts.
  void set_policies(policy::PolicyStore* store) { policies_ = store; }
  policy::PolicyStore* policies() const { return policies_; }
  // Null when no ledger is configured. Set before serving starts.
  void set_ledger(ledger::Ledger* l) { ledger_ = l; }
  ledger::Ledger* ledger() const { return ledger_; }
  // Null when no keys file is configured (then every caller is tenant "default").
  void set_auth(auth::Authenticator* a, auth::Limiter* l) {
    authenticator_ = a;
    limiter_ = l;
  }
  auth::Authenticator* authenticator() const { return authenticator_; }
  auth::Limiter* limiter() const { return limiter_; }
  // Null when tracing is off. Set before serving starts.
  void set_tracer(tracing::Tracer* t) { tracer_ = t; }
  const tracing::Tracer* tracer() const { return tracer_; }

  bool draining() const { return draining_.load(); }
  void start_draining() { draining_.store(true); }

  // Admission to the bounded waiting queue: false (and nothing counted) when it is full.
  bool admit(int prompt_tokens, std::string* why);
  void leave_queue(int prompt_tokens);  // the request was scheduled (first output) or ended

  void track(RequestId id);
  void untrack(RequestId id);
  std::set<RequestId> in_flight() const;
  // Waits until nothing is in flight or the timeout passes; true when nothing is in flight.
  bool wait_idle(std::chrono::milliseconds timeout);

 private:
  ServeConfig config_;
  std::string instance_id_ = make_instance_id();
  std::atomic<uint64_t> request_counter_{0};
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::atomic<Engine*> engine_{nullptr};
  const Tokenizer* tokenizer_ = nullptr;
  ModelIdentity identity_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> ready_status_{false};
  metrics::PagodaMetrics* metrics_ = nullptr;
  policy::PolicyStore* policies_ = nullptr;
  ledger::Ledger* ledger_ = nullptr;
  auth::Authenticator* authenticator_ = nullptr;
  auth::Limiter* limiter_ = nullptr;
  tracing::Tracer* tracer_ = nullptr;

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  int queued_requests_ = 0;
  int64_t queued_tokens_ = 0;
  std::set<RequestId> in_flight_;
};

}  // namespace pagoda
