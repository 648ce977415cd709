// ServeConfig: everything `pagoda serve` is told, from a YAML config file and flags (flags
// override the file; unknown keys and flags are errors naming them).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"

namespace pagoda {

struct ServeConfig {
  std::string model;      // folder or .gguf; "" = the bundled stories260K
  std::string tokenizer;  // "" = tokenizer.model beside the model
  std::string model_id;   // the name requests use; "" = the model folder/file name
  std::string host = "127.0.0.1";
  int port = 50051;  // 0: pick a free port
  std::string device = "cpu";
  int threads = 0;  // 0: all cores
  EngineConfig engine;
  int max_queue_requests = 256;        // waiting requests beyond this: RESOURCE_EXHAUSTED
  int64_t max_queue_tokens = 1 << 20;  // waiting prompt tokens beyond this: same
  double drain_timeout_seconds = 30;   // SIGTERM: in-flight requests get this long
  double stall_timeout_seconds = 60;   // work pending and no step for this long: NOT_SERVING
  // Prometheus /metrics, /healthz, /readyz over HTTP: -1 off, 0 any free port (printed).
  std::string policy_file;  // "" = no policy filters; reloaded on SIGHUP
  std::string ledger_file;
  // API keys (hashed) → tenants with limits. Required to listen on a non-loopback address
  // unless insecure_no_auth.
  std::string keys_file;
  // OTLP/HTTP JSON collector, e.g. http://127.0.0.1:4318/v1/traces; "" = tracing off.
  std::string otlp_endpoint;
  double trace_sample_ratio = 1.0;
  bool insecure_no_auth = false;  // "" = no ledger; else SQLite (WAL), one row per finished request
  std::string metrics_host = "127.0.0.1";
  int metrics_port = -1;
};

// Flags of `pagoda serve` (names without "--"), also the keys of the YAML file (with '-').
const std::vector<std::string>& serve_flag_names();
const std::vector<std::string>& serve_switch_names();

// Builds the config from argv-style args: --config FILE is read first, then every flag
// overrides it. InvalidArgument naming the flag or key for anything wrong.
StatusOr<ServeConfig> parse_serve_config(const std::vector<std::string>& args);

}  // namespace pagoda
