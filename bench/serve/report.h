// The benchmark's output: JSON with a versioned schema (bench/serve/report.schema.json,
// "schema_version": 1) and a Markdown summary a person reads in a minute.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench/serve/runner.h"
#include "bench/serve/stats.h"
#include "clients/cpp/client.h"

namespace pagoda::bench {

inline constexpr int kReportSchemaVersion = 1;

// One measured run: the whole benchmark, or one step of a sweep.
struct StepReport {
  std::optional<double> offered_rate;  // requests/s; unset for closed loop
  int concurrency = 0;                 // closed loop only
  size_t sent = 0;
  double send_span_s = 0;
  bool interrupted = false;
  RunStats stats;
  ServerView server;
  std::optional<StepVerdict> verdict;  // sweep steps only
  std::vector<RequestRecord> records;  // written only with per-request output
};

struct SweepSettings {
  double start = 1, factor = 2;
  int max_steps = 8;
};

struct Report {
  std::string target;
  client::ModelInfo model;
  std::string server_version;
  RunConfig config;  // of the first run (a sweep changes only the rate)
  Slo slo;
  std::optional<SweepSettings> sweep;
  SweepDecision decision;  // sweep only
  bool interrupted = false;
  std::string created_at;  // ISO 8601 UTC
  std::vector<StepReport> steps;
};

nlohmann::json report_to_json(const Report& report, bool per_request);
std::string report_to_markdown(const Report& report);
// The current time as "2025-01-31T12:34:56Z".
std::string utc_now_iso8601();

}  // namespace pagoda::bench
