#include "bench/serve/report.h"

#include <cmath>
#include <cstdio>
#include <ctime>
#include <sstream>

namespace pagoda::bench {

namespace {
using nlohmann::json;

json summary_ms(const Summary& s) {
  return {{"count", s.count},   {"mean", s.mean * 1e3}, {"p50", s.p50 * 1e3}, {"p90", s.p90 * 1e3},
          {"p99", s.p99 * 1e3}, {"min", s.min * 1e3},   {"max", s.max * 1e3}};
}

json opt_ms(const std::optional<double>& v) {
  return v ? json(*v * 1e3) : json(nullptr);
}

json step_json(const StepReport& st, bool per_request) {
  const RunStats& s = st.stats;
  json j;
  j["offered_rate"] = st.offered_rate ? json(*st.offered_rate) : json(nullptr);
  j["concurrency"] = st.concurrency > 0 ? json(st.concurrency) : json(nullptr);
  j["interrupted"] = st.interrupted;
  j["requests"] = {{"sent", st.sent},
                   {"completed", s.completed},
                   {"failed", s.failed},
                   {"cancelled", s.cancelled}};
  j["errors_by_code"] = json::object();
  for (const auto& [code, n] : s.errors_by_code) j["errors_by_code"][code] = n;
  j["send_span_s"] = st.send_span_s;
  j["duration_s"] = s.duration_s;
  j["request_throughput"] = s.request_throughput;
  j["input_token_throughput"] = s.input_token_throughput;
  j["output_token_throughput"] = s.output_token_throughput;
  j["total_token_throughput"] = s.total_token_throughput;
  j["total_input_tokens"] = s.total_input_tokens;
  j["total_output_tokens"] = s.total_output_tokens;
  j["cached_tokens"] = s.cached_tokens;
  j["cached_token_share"] = s.cached_token_share;
  j["ttft_ms"] = summary_ms(s.ttft);
  j["tpot_ms"] = summary_ms(s.tpot);
  j["itl_ms"] = summary_ms(s.itl);
  j["e2e_ms"] = summary_ms(s.e2e);
  j["good_requests"] = s.good_requests;
  j["goodput"] = s.goodput;
  const ServerView& v = st.server;
  j["server"] = {{"samples", v.samples},
                 {"max_running", v.max_running},
                 {"max_waiting", v.max_waiting},
                 {"mean_running", v.mean_running},
                 {"mean_waiting", v.mean_waiting},
                 {"mean_kv_usage", v.mean_kv_usage},
                 {"max_kv_usage", v.max_kv_usage},
                 {"preemptions", v.preemptions},
                 {"prefix_cache_hit_rate", v.prefix_cache_hit_rate}};
  if (st.verdict)
    j["verdict"] = {{"sustainable", st.verdict->sustainable}, {"reason", st.verdict->reason}};
  else
    j["verdict"] = nullptr;
  if (per_request) {
    json list = json::array();
    for (const RequestRecord& r : st.records) {
      RequestMetrics m = request_metrics(r);
      list.push_back({{"index", r.index},
                      {"start_s", r.start_s},
                      {"end_s", r.end_s},
                      {"ok", r.ok},
                      {"status_code", r.status_code},
                      {"error", r.error},
                      {"cancelled", r.cancelled_by_client},
                      {"input_tokens", r.input_tokens},
                      {"expected_tokens", r.expected_tokens},
                      {"output_tokens", r.output_tokens},
                      {"cached_tokens", r.cached_tokens},
                      {"chunks", r.chunk_times_s.size()},
                      {"ttft_ms", opt_ms(m.ttft)},
                      {"tpot_ms", opt_ms(m.tpot)},
                      {"e2e_ms", m.e2e * 1e3}});
    }
    j["per_request"] = std::move(list);
  }
  return j;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}
}  // namespace

std::string utc_now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json report_to_json(const Report& r, bool per_request) {
  json j;
  j["schema_version"] = kReportSchemaVersion;
  j["tool"] = "pagoda-bench-serve";
  j["created_at"] = r.created_at;
  j["target"] = r.target;
  j["server_version"] = r.server_version;
  j["model"] = {{"id", r.model.id},
                {"revision", r.model.revision},
                {"context_length", r.model.context_length},
                {"vocab_size", r.model.vocab_size},
                {"dtype", r.model.dtype},
                {"architecture", r.model.architecture},
                {"backend", r.model.backend}};
  const RunConfig& c = r.config;
  const WorkloadConfig& w = c.workload;
  j["config"] = {
      {"num_requests", c.num_requests},
      {"duration_s", c.duration_s > 0 ? json(c.duration_s) : json(nullptr)},
      {"warmup", c.warmup},
      {"mode", c.arrivals.concurrency > 0 ? "concurrency" : "rate"},
      {"rate", c.arrivals.concurrency > 0 ? json(nullptr) : json(c.arrivals.rate)},
      {"burstiness", c.arrivals.burstiness},
      {"concurrency", c.arrivals.concurrency > 0 ? json(c.arrivals.concurrency) : json(nullptr)},
      {"seed", c.workload.seed},
      {"workload",
       {{"lengths", length_mode_name(w.mode)},
        {"input_len", w.input_len},
        {"output_len", w.output_len},
        {"input_range", {w.input_min, w.input_max}},
        {"output_range", {w.output_min, w.output_max}},
        {"long_tail",
         {{"input_mu", w.long_tail.input_mu},
          {"input_sigma", w.long_tail.input_sigma},
          {"input_clamp", {w.long_tail.input_min, w.long_tail.input_max}},
          {"output_mu", w.long_tail.output_mu},
          {"output_sigma", w.long_tail.output_sigma},
          {"output_clamp", {w.long_tail.output_min, w.long_tail.output_max}}}},
        {"shared_prefix", w.shared_prefix},
        {"num_prefixes", w.num_prefixes}}},
      {"slo",
       {{"ttft_ms", opt_ms(r.slo.ttft)},
        {"tpot_ms", opt_ms(r.slo.tpot)},
        {"itl_ms", opt_ms(r.slo.itl)},
        {"e2e_ms", opt_ms(r.slo.e2e)}}}};
  j["interrupted"] = r.interrupted;
  if (r.sweep) {
    j["sweep"] = {
        {"start", r.sweep->start},
        {"factor", r.sweep->factor},
        {"max_steps", r.sweep->max_steps},
        {"goodput_ratio_threshold", kGoodputRatioThreshold},
        {"capacity_rps", r.decision.capacity ? json(*r.decision.capacity) : json(nullptr)},
        {"stop_reason", r.decision.reason}};
  } else {
    j["sweep"] = nullptr;
  }
  j["runs"] = json::array();
  for (const StepReport& st : r.steps) j["runs"].push_back(step_json(st, per_request));
  return j;
}

std::string report_to_markdown(const Report& r) {
  std::ostringstream md;
  md << "# pagoda-bench-serve report\n\n";
  md << "- Target: `" << r.target << "`, model `" << r.model.id << "` (" << r.model.backend
     << ", context " << r.model.context_length << "), server " << r.server_version << "\n";
  const WorkloadConfig& w = r.config.workload;
  md << "- Workload: " << length_mode_name(w.mode) << " lengths";
  if (w.mode == LengthMode::kFixed) md << " (in " << w.input_len << ", out " << w.output_len << ")";
  if (w.mode == LengthMode::kRandom)
    md << " (in " << w.input_min << "-" << w.input_max << ", out " << w.output_min << "-"
       << w.output_max << ")";
  if (w.shared_prefix > 0)
    md << ", shared prefix " << w.shared_prefix << " tokens x " << w.num_prefixes;
  md << ", seed " << w.seed << "\n";
  if (r.config.arrivals.concurrency > 0)
    md << "- Load: closed loop, concurrency " << r.config.arrivals.concurrency;
  else
    md << "- Load: " << (r.config.arrivals.burstiness == 1.0 ? "Poisson" : "gamma")
       << " arrivals, burstiness " << r.config.arrivals.burstiness;
  md << ", " << r.config.num_requests << " requests per run";
  if (r.config.duration_s > 0) md << " (at most " << r.config.duration_s << " s)";
  md << ", " << r.config.warmup << " warm-up\n";
  md << "- SLO: " << (r.slo.empty() ? std::string("none") : format_slo(r.slo)) << "\n";
  if (r.interrupted) md << "- **Interrupted** (Ctrl-C): partial results\n";
  if (r.sweep) {
    md << "\n## Capacity\n\n";
    if (r.decision.capacity)
      md << "**" << fmt("%.3g", *r.decision.capacity)
         << " requests/s** is the highest sustainable rate per replica";
    else
      md << "**No sustainable rate found** (the first step already broke; lower --sweep-start)";
    md << ". Stopped: " << r.decision.reason << ".\n";
  }
  md << "\n## Runs\n\n";
  md << "| rate (req/s) | done/sent | failed | req/s | out tok/s | goodput | TTFT p50/p99 ms | "
        "TPOT p50/p99 ms | ITL p99 ms | E2E p99 ms | cached | server max run/wait | max KV | "
        "preempt | verdict |\n";
  md << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const StepReport& st : r.steps) {
    const RunStats& s = st.stats;
    md << "| "
       << (st.offered_rate ? fmt("%.3g", *st.offered_rate) : "c=" + std::to_string(st.concurrency))
       << " | " << s.completed << "/" << st.sent << " | " << s.failed << " | "
       << fmt("%.2f", s.request_throughput) << " | " << fmt("%.1f", s.output_token_throughput)
       << " | " << fmt("%.2f", s.goodput) << " | " << fmt("%.1f", s.ttft.p50 * 1e3) << " / "
       << fmt("%.1f", s.ttft.p99 * 1e3) << " | " << fmt("%.2f", s.tpot.p50 * 1e3) << " / "
       << fmt("%.2f", s.tpot.p99 * 1e3) << " | " << fmt("%.2f", s.itl.p99 * 1e3) << " | "
       << fmt("%.1f", s.e2e.p99 * 1e3) << " | " << fmt("%.0f%%", s.cached_token_share * 100)
       << " | " << st.server.max_running << "/" << st.server.max_waiting << " | "
       << fmt("%.0f%%", st.server.max_kv_usage * 100) << " | " << st.server.preemptions << " | "
       << (st.verdict ? (st.verdict->sustainable ? "ok" : "broke: " + st.verdict->reason) : "-")
       << " |\n";
  }
  for (const StepReport& st : r.steps) {
    for (const auto& [code, n] : st.stats.errors_by_code)
      md << "\nErrors" << (st.offered_rate ? " at " + fmt("%.3g", *st.offered_rate) + " req/s" : "")
         << ": " << code << " x " << n;
  }
  md << "\n";
  return md.str();
}

}  // namespace pagoda::bench
