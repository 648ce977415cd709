#include "bench/serve/stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>

namespace pagoda::bench {

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  p = std::clamp(p, 0.0, 100.0);
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = static_cast<size_t>(std::ceil(rank));
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

Summary summarize(const std::vector<double>& values) {
  Summary s;
  s.count = values.size();
  if (values.empty()) return s;
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(s.count);
  s.p50 = percentile(values, 50);
  s.p90 = percentile(values, 90);
  s.p99 = percentile(values, 99);
  auto [mn, mx] = std::minmax_element(values.begin(), values.end());
  s.min = *mn;
  s.max = *mx;
  return s;
}

RequestMetrics request_metrics(const RequestRecord& r) {
  RequestMetrics m;
  m.e2e = r.end_s - r.start_s;
  if (!r.chunk_times_s.empty()) m.ttft = r.chunk_times_s.front() - r.start_s;
  if (m.ttft && r.output_tokens > 1) m.tpot = (m.e2e - *m.ttft) / (r.output_tokens - 1);
  for (size_t i = 1; i < r.chunk_times_s.size(); ++i) {
    const double gap = r.chunk_times_s[i] - r.chunk_times_s[i - 1];
    const int k = std::max(1, r.chunk_tokens[i]);
    for (int j = 0; j < k; ++j) m.itl.push_back(gap / k);
  }
  return m;
}

StatusOr<Slo> parse_slo(const std::string& text) {
  Slo slo;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string item = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) {
      if (comma == text.size()) break;
      continue;
    }
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      return InvalidArgument("--slo item '" + item + "' must be NAME=VALUEUNIT, e.g. ttft=500ms");
    const std::string name = item.substr(0, eq);
    const std::string value = item.substr(eq + 1);
    size_t num_end = 0;
    while (num_end < value.size() &&
           (std::isdigit(static_cast<unsigned char>(value[num_end])) || value[num_end] == '.'))
      ++num_end;
    const std::string number = value.substr(0, num_end);
    const std::string unit = value.substr(num_end);
    if (number.empty())
      return InvalidArgument("--slo " + name + ": '" + value + "' is not a number with a unit");
    double scale = 0;
    if (unit == "us")
      scale = 1e-6;
    else if (unit == "ms")
      scale = 1e-3;
    else if (unit == "s")
      scale = 1.0;
    else if (unit.empty())
      return InvalidArgument("--slo " + name + "=" + value + " has no unit; write e.g. " + name +
                             "=" + value + "ms (us, ms, s)");
    else
      return InvalidArgument("--slo " + name + ": unknown unit '" + unit + "' (us, ms, s)");
    char* end = nullptr;
    const double v = std::strtod(number.c_str(), &end) * scale;
    if (end == number.c_str() || *end != '\0' || !(v > 0))
      return InvalidArgument("--slo " + name + ": '" + value + "' must be a positive duration");
    if (name == "ttft")
      slo.ttft = v;
    else if (name == "tpot")
      slo.tpot = v;
    else if (name == "itl")
      slo.itl = v;
    else if (name == "e2e")
      slo.e2e = v;
    else
      return InvalidArgument("--slo: unknown metric '" + name + "' (ttft, tpot, itl, e2e)");
    if (comma == text.size()) break;
  }
  if (slo.empty()) return InvalidArgument("--slo needs at least one of ttft, tpot, itl, e2e");
  return slo;
}

std::string format_slo(const Slo& slo) {
  std::string out;
  auto add = [&](const char* name, const std::optional<double>& v) {
    if (!v) return;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%s%s=%gms", out.empty() ? "" : ",", name, *v * 1e3);
    out += buf;
  };
  add("ttft", slo.ttft);
  add("tpot", slo.tpot);
  add("itl", slo.itl);
  add("e2e", slo.e2e);
  return out;
}

bool meets_slo(const RequestRecord& r, const Slo& slo) {
  if (!r.ok) return false;
  const RequestMetrics m = request_metrics(r);
  if (slo.ttft && (!m.ttft || *m.ttft > *slo.ttft)) return false;
  if (slo.tpot && m.tpot && *m.tpot > *slo.tpot) return false;
  if (slo.itl && !m.itl.empty() && *std::max_element(m.itl.begin(), m.itl.end()) > *slo.itl)
    return false;
  if (slo.e2e && m.e2e > *slo.e2e) return false;
  return true;
}

RunStats compute_stats(const std::vector<RequestRecord>& records, const Slo& slo) {
  RunStats s;
  std::vector<double> ttft, tpot, itl, e2e;
  double first_start = 0, last_end = 0;
  bool any = false;
  for (const RequestRecord& r : records) {
    if (r.cancelled_by_client) {
      ++s.cancelled;
      continue;
    }
    if (!any || r.start_s < first_start) first_start = r.start_s;
    if (!any || r.end_s > last_end) last_end = r.end_s;
    any = true;
    if (!r.ok) {
      ++s.failed;
      ++s.errors_by_code[r.status_code];
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.input_tokens;
    s.total_output_tokens += r.output_tokens;
    s.cached_tokens += r.cached_tokens;
    RequestMetrics m = request_metrics(r);
    if (m.ttft) ttft.push_back(*m.ttft);
    if (m.tpot) tpot.push_back(*m.tpot);
    itl.insert(itl.end(), m.itl.begin(), m.itl.end());
    e2e.push_back(m.e2e);
    if (meets_slo(r, slo)) ++s.good_requests;
  }
  s.duration_s = any ? last_end - first_start : 0;
  if (s.duration_s > 0) {
    s.request_throughput = s.completed / s.duration_s;
    s.input_token_throughput = s.total_input_tokens / s.duration_s;
    s.output_token_throughput = s.total_output_tokens / s.duration_s;
    s.total_token_throughput = s.input_token_throughput + s.output_token_throughput;
    s.goodput = s.good_requests / s.duration_s;
  }
  if (s.total_input_tokens > 0)
    s.cached_token_share = static_cast<double>(s.cached_tokens) / s.total_input_tokens;
  s.ttft = summarize(ttft);
  s.tpot = summarize(tpot);
  s.itl = summarize(itl);
  s.e2e = summarize(e2e);
  return s;
}

StepVerdict judge_step(const RunStats& stats, size_t sent, const Slo& slo) {
  char buf[160];
  if (stats.completed == 0) return {false, "no request completed"};
  const double ratio = sent > 0 ? static_cast<double>(stats.good_requests) / sent : 0.0;
  if (ratio < kGoodputRatioThreshold) {
    std::snprintf(buf, sizeof(buf), "goodput/request-rate %.3f < %.2f (%zu of %zu requests good)",
                  ratio, kGoodputRatioThreshold, stats.good_requests, sent);
    return {false, buf};
  }
  auto check = [&](const char* name, const std::optional<double>& limit,
                   const Summary& summary) -> std::optional<StepVerdict> {
    if (!limit || summary.count == 0 || summary.p99 <= *limit) return std::nullopt;
    std::snprintf(buf, sizeof(buf), "p99 %s %.1f ms > SLO %.1f ms", name, summary.p99 * 1e3,
                  *limit * 1e3);
    return StepVerdict{false, buf};
  };
  if (auto v = check("ttft", slo.ttft, stats.ttft)) return *v;
  if (auto v = check("tpot", slo.tpot, stats.tpot)) return *v;
  if (auto v = check("itl", slo.itl, stats.itl)) return *v;
  if (auto v = check("e2e", slo.e2e, stats.e2e)) return *v;
  return {true, ""};
}

SweepDecision sweep_decision(const std::vector<double>& rates,
                             const std::vector<StepVerdict>& verdicts, int max_steps) {
  SweepDecision d;
  for (size_t i = 0; i < verdicts.size() && i < rates.size(); ++i) {
    if (!verdicts[i].sustainable) {
      d.stop = true;
      char buf[64];
      std::snprintf(buf, sizeof(buf), "step %zu at %g req/s broke: ", i + 1, rates[i]);
      d.reason = buf + verdicts[i].reason;
      return d;
    }
    d.capacity = rates[i];
  }
  if (static_cast<int>(verdicts.size()) >= max_steps) {
    d.stop = true;
    d.reason = "reached --sweep-max-steps without breaking an SLO (capacity is a lower bound)";
  }
  return d;
}

}  // namespace pagoda::bench
