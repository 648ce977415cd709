#include "server/serve_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <limits>

#include "core/flags.h"

namespace pagoda {

const std::vector<std::string>& serve_flag_names() {
  static const std::vector<std::string> names = {"model",
                                                 "tokenizer",
                                                 "model-id",
                                                 "host",
                                                 "port",
                                                 "device",
                                                 "threads",
                                                 "block-size",
                                                 "num-kv-blocks",
                                                 "kv-cache-memory-fraction",
                                                 "kv-cache-mb",
                                                 "max-num-seqs",
                                                 "max-num-batched-tokens",
                                                 "max-model-len",
                                                 "policy",
                                                 "max-queue-requests",
                                                 "max-queue-tokens",
                                                 "drain-timeout",
                                                 "stall-timeout",
                                                 "prefix-caching",
                                                 "cuda-graphs",
                                                 "device-sampling",
                                                 "async-scheduling",
                                                 "max-logprobs",
                                                 "metrics-host",
                                                 "metrics-port",
                                                 "policy-file",
                                                 "ledger",
                                                 "keys-file",
                                                 "otlp-endpoint",
                                                 "trace-sample-ratio"};
  return names;
}

const std::vector<std::string>& serve_switch_names() {
  static const std::vector<std::string> names = {"insecure-no-auth"};
  return names;
}

namespace {

// The YAML file becomes a list of "--key value" args placed before the command line's, so
// that one parser and one set of checks serves both (and the command line wins).
Status yaml_to_args(const std::string& path, std::vector<std::string>* out) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return NotFound("config " + path + ": cannot be read");
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config " + path + ": not valid YAML: " + e.what());
  }
  if (root.IsNull()) return OkStatus();
  if (!root.IsMap()) return InvalidArgument("config " + path + ": must be a mapping of key: value");
  const auto& known = serve_flag_names();
  const auto& switches = serve_switch_names();
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>("");
    std::replace(key.begin(), key.end(), '_', '-');
    if (std::find(switches.begin(), switches.end(), key) != switches.end()) {
      const std::string v = kv.second.as<std::string>("");
      if (v == "true") {
        out->push_back("--" + key);
      } else if (v != "false") {
        return InvalidArgument("config " + path + ": key '" + key + "' must be true or false");
      }
      continue;
    }
    if (std::find(known.begin(), known.end(), key) == known.end())
      return InvalidArgument("config " + path + ": unknown key '" + kv.first.as<std::string>("") +
                             "'");
    if (!kv.second.IsScalar())
      return InvalidArgument("config " + path + ": key '" + key + "' must have a single value");
    out->push_back("--" + key);
    out->push_back(kv.second.as<std::string>());
  }
  return OkStatus();
}

}  // namespace

StatusOr<ServeConfig> parse_serve_config(const std::vector<std::string>& args) {
  // Pull out --config first.
  std::vector<std::string> file_args, rest;
  std::string config_path;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) return InvalidArgument("flag --config needs a value");
      config_path = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      config_path = args[i].substr(9);
    } else {
      rest.push_back(args[i]);
    }
  }
  if (!config_path.empty()) PAGODA_RETURN_IF_ERROR(yaml_to_args(config_path, &file_args));
  // Flags override the file: parse the file's args, then the command line's, separately.
  PAGODA_ASSIGN_OR_RETURN(Flags from_file,
                          Flags::parse(file_args, serve_flag_names(), serve_switch_names()));
  PAGODA_ASSIGN_OR_RETURN(Flags from_cli,
                          Flags::parse(rest, serve_flag_names(), serve_switch_names()));
  auto pick = [&](const std::string& name) -> const Flags& {
    return from_cli.has(name) ? from_cli : from_file;
  };
  auto where = [&](const std::string& name, const Status& s) {
    if (s.ok() || from_cli.has(name) || config_path.empty()) return s;
    return Status(s.code(), "config " + config_path + ": " + s.message());
  };
  ServeConfig c;
  auto get_int = [&](const std::string& name, int64_t fallback, int64_t lo, int64_t hi,
                     int64_t* out) -> Status {
    auto v = pick(name).get_int(name, fallback, lo, hi);
    if (!v.ok()) return where(name, v.status());
    *out = *v;
    return OkStatus();
  };
  // true/on or false/off.
  auto get_bool = [&](const std::string& name, bool fallback, bool* out) -> Status {
    const std::string v = pick(name).get_string(name, fallback ? "true" : "false");
    if (v == "true" || v == "on") {
      *out = true;
    } else if (v == "false" || v == "off") {
      *out = false;
    } else {
      return where(name, InvalidArgument("--" + name + " must be true or false, got '" + v + "'"));
    }
    return OkStatus();
  };
  auto get_double = [&](const std::string& name, double fallback, double lo, double hi,
                        double* out) -> Status {
    auto v = pick(name).get_double(name, fallback, lo, hi);
    if (!v.ok()) return where(name, v.status());
    *out = *v;
    return OkStatus();
  };
  c.model = pick("model").get_string("model", "");
  c.tokenizer = pick("tokenizer").get_string("tokenizer", "");
  c.model_id = pick("model-id").get_string("model-id", "");
  c.host = pick("host").get_string("host", c.host);
  c.device = pick("device").get_string("device", c.device);
  int64_t v = 0;
  PAGODA_RETURN_IF_ERROR(get_int("port", c.port, 0, 65535, &v));
  c.port = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(get_int("threads", 0, 0, 1024, &v));
  c.threads = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(get_int("block-size", c.engine.block_size, 1, 1024, &v));
  c.engine.block_size = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(get_int("num-kv-blocks", 0, 0, 1 << 30, &v));
  c.engine.num_blocks = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(
      get_double("kv-cache-memory-fraction", 0, 0, 1, &c.engine.kv_cache_memory_fraction));
  PAGODA_RETURN_IF_ERROR(
      get_int("kv-cache-mb", static_cast<int64_t>(c.engine.kv_cache_bytes >> 20), 1, 1 << 24, &v));
  c.engine.kv_cache_bytes = static_cast<size_t>(v) << 20;
  PAGODA_RETURN_IF_ERROR(get_int("max-num-seqs", c.engine.max_num_seqs, 1, 1 << 16, &v));
  c.engine.max_num_seqs = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(
      get_int("max-num-batched-tokens", c.engine.max_num_batched_tokens, 1, 1 << 24, &v));
  c.engine.max_num_batched_tokens = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(get_int("max-model-len", 0, 0, 1 << 24, &v));
  c.engine.max_model_len = static_cast<int>(v);
  const std::string policy = pick("policy").get_string("policy", "fcfs");
  if (policy == "fcfs") {
    c.engine.policy = SchedulingPolicy::kFcfs;
  } else if (policy == "priority") {
    c.engine.policy = SchedulingPolicy::kPriority;
  } else {
    return where("policy",
                 InvalidArgument("--policy must be fcfs or priority, got '" + policy + "'"));
  }
  PAGODA_RETURN_IF_ERROR(get_bool("prefix-caching", true, &c.engine.enable_prefix_caching));
  PAGODA_RETURN_IF_ERROR(get_bool("cuda-graphs", false, &c.engine.decode_graphs));
  PAGODA_RETURN_IF_ERROR(get_bool("device-sampling", true, &c.engine.device_sampling));
  PAGODA_RETURN_IF_ERROR(get_bool("async-scheduling", false, &c.engine.async_scheduling));
  PAGODA_RETURN_IF_ERROR(
      get_int("max-logprobs", c.engine.max_logprobs, 0, SamplingParams::kMaxLogprobs, &v));
  c.engine.max_logprobs = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(get_int("max-queue-requests", c.max_queue_requests, 1, 1 << 24, &v));
  c.max_queue_requests = static_cast<int>(v);
  PAGODA_RETURN_IF_ERROR(
      get_int("max-queue-tokens", c.max_queue_tokens, 1, int64_t{1} << 40, &c.max_queue_tokens));
  PAGODA_RETURN_IF_ERROR(
      get_double("drain-timeout", c.drain_timeout_seconds, 0, 86400, &c.drain_timeout_seconds));
  PAGODA_RETURN_IF_ERROR(
      get_double("stall-timeout", c.stall_timeout_seconds, 0.1, 86400, &c.stall_timeout_seconds));
  c.policy_file = pick("policy-file").get_string("policy-file", "");
  c.ledger_file = pick("ledger").get_string("ledger", "");
  c.keys_file = pick("keys-file").get_string("keys-file", "");
  c.otlp_endpoint = pick("otlp-endpoint").get_string("otlp-endpoint", "");
  PAGODA_RETURN_IF_ERROR(get_double("trace-sample-ratio", 1.0, 0.0, 1.0, &c.trace_sample_ratio));
  c.insecure_no_auth = from_cli.has("insecure-no-auth") || from_file.has("insecure-no-auth");
  c.metrics_host = pick("metrics-host").get_string("metrics-host", c.metrics_host);
  PAGODA_RETURN_IF_ERROR(get_int("metrics-port", c.metrics_port, -1, 65535, &v));
  c.metrics_port = static_cast<int>(v);
  return c;
}

}  // namespace pagoda
