// pagoda-bench-serve: the serving load generator. See bench/serve/README.md.
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "bench/serve/report.h"
#include "bench/serve/runner.h"
#include "clients/cpp/client.h"

namespace {
using namespace pagoda;
using namespace pagoda::bench;

std::atomic<int> g_stop{0};
extern "C" void on_sigint(int) {
  g_stop.fetch_add(1);
}

constexpr const char* kUsage =
    "usage: pagoda-bench-serve --target HOST:PORT [--num-requests N] [--duration S] [--warmup N]\n"
    "  [--rate R | --concurrency C] [--burstiness B]\n"
    "  [--input-len N --output-len N | --random-lengths MIN:MAX,MIN:MAX | --long-tail]\n"
    "  [--shared-prefix P --num-prefixes K] [--seed S] [--slo ttft=500ms,tpot=50ms,e2e=10s]\n"
    "  [--sweep --sweep-start R --sweep-factor F --sweep-max-steps N]\n"
    "  [--json FILE] [--markdown FILE] [--per-request] [--quiet]\n";

int fail(const std::string& msg) {
  std::fprintf(stderr, "pagoda-bench-serve: %s\n", msg.c_str());
  return 2;
}

bool parse_double(const std::string& s, double* out) {
  char* end = nullptr;
  errno = 0;
  *out = std::strtod(s.c_str(), &end);
  return !s.empty() && end && *end == '\0' && errno == 0;
}
bool parse_long(const std::string& s, long long* out) {
  char* end = nullptr;
  errno = 0;
  *out = std::strtoll(s.c_str(), &end, 10);
  return !s.empty() && end && *end == '\0' && errno == 0;
}
bool parse_range(const std::string& s, int* lo, int* hi) {
  const size_t colon = s.find(':');
  long long a, b;
  if (colon == std::string::npos || !parse_long(s.substr(0, colon), &a) ||
      !parse_long(s.substr(colon + 1), &b))
    return false;
  *lo = static_cast<int>(a);
  *hi = static_cast<int>(b);
  return true;
}

Status write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.close();
  if (!f) return Internal("cannot write " + path);
  return OkStatus();
}
}  // namespace

int main(int argc, char** argv) {
  std::string target, json_path, markdown_path;
  RunConfig cfg;
  Slo slo;
  std::optional<SweepSettings> sweep;
  SweepSettings sweep_settings;
  bool per_request = false, quiet = false, have_rate = false, have_lengths = false;
  long long seed = 0;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= args.size()) return false;
      *out = args[++i];
      return true;
    };
    std::string v;
    auto need = [&](auto parse, const char* what) -> bool {
      if (!value(&v)) {
        fail(a + " needs a value");
        return false;
      }
      if (!parse(v)) {
        fail(a + " must be " + what + ", got '" + v + "'");
        return false;
      }
      return true;
    };
    double d;
    long long n;
    auto num = [&](const std::string& s) { return parse_double(s, &d); };
    auto integer = [&](const std::string& s) { return parse_long(s, &n); };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--target") {
      if (!value(&target)) return fail("--target needs HOST:PORT");
    } else if (a == "--num-requests") {
      if (!need(integer, "an integer >= 0")) return 2;
      if (n < 0) return fail("--num-requests must be >= 0");
      cfg.num_requests = static_cast<size_t>(n);
    } else if (a == "--duration") {
      if (!need(num, "seconds")) return 2;
      if (!(d > 0)) return fail("--duration must be > 0 seconds");
      cfg.duration_s = d;
    } else if (a == "--warmup") {
      if (!need(integer, "an integer")) return 2;
      if (n < 0) return fail("--warmup must be >= 0");
      cfg.warmup = static_cast<int>(n);
    } else if (a == "--rate") {
      if (!need(num, "a number (requests/s)")) return 2;
      if (!(d > 0)) return fail("--rate must be > 0 requests/s, got " + v);
      cfg.arrivals.rate = d;
      have_rate = true;
    } else if (a == "--concurrency") {
      if (!need(integer, "an integer")) return 2;
      if (n < 1) return fail("--concurrency must be >= 1");
      cfg.arrivals.concurrency = static_cast<int>(n);
    } else if (a == "--burstiness") {
      if (!need(num, "a number")) return 2;
      cfg.arrivals.burstiness = d;
    } else if (a == "--input-len" || a == "--output-len") {
      if (!need(integer, "an integer")) return 2;
      (a == "--input-len" ? cfg.workload.input_len : cfg.workload.output_len) = static_cast<int>(n);
      cfg.workload.mode = LengthMode::kFixed;
      have_lengths = true;
    } else if (a == "--random-lengths") {
      if (!value(&v)) return fail("--random-lengths needs IN_MIN:IN_MAX,OUT_MIN:OUT_MAX");
      const size_t comma = v.find(',');
      if (comma == std::string::npos ||
          !parse_range(v.substr(0, comma), &cfg.workload.input_min, &cfg.workload.input_max) ||
          !parse_range(v.substr(comma + 1), &cfg.workload.output_min, &cfg.workload.output_max))
        return fail("--random-lengths must be IN_MIN:IN_MAX,OUT_MIN:OUT_MAX, got '" + v + "'");
      cfg.workload.mode = LengthMode::kRandom;
      have_lengths = true;
    } else if (a == "--long-tail") {
      cfg.workload.mode = LengthMode::kLongTail;
      have_lengths = true;
    } else if (a == "--shared-prefix") {
      if (!need(integer, "an integer")) return 2;
      cfg.workload.shared_prefix = static_cast<int>(n);
    } else if (a == "--num-prefixes") {
      if (!need(integer, "an integer")) return 2;
      cfg.workload.num_prefixes = static_cast<int>(n);
    } else if (a == "--seed") {
      if (!need(integer, "an integer")) return 2;
      seed = n;
    } else if (a == "--slo") {
      if (!value(&v)) return fail("--slo needs e.g. ttft=500ms,tpot=50ms");
      auto parsed = parse_slo(v);
      if (!parsed.ok()) return fail(parsed.status().message());
      slo = *parsed;
    } else if (a == "--sweep") {
      sweep = sweep_settings;
    } else if (a == "--sweep-start") {
      if (!need(num, "a number")) return 2;
      if (!(d > 0)) return fail("--sweep-start must be > 0 requests/s");
      sweep_settings.start = d;
    } else if (a == "--sweep-factor") {
      if (!need(num, "a number")) return 2;
      if (!(d > 1)) return fail("--sweep-factor must be > 1");
      sweep_settings.factor = d;
    } else if (a == "--sweep-max-steps") {
      if (!need(integer, "an integer")) return 2;
      if (n < 1) return fail("--sweep-max-steps must be >= 1");
      sweep_settings.max_steps = static_cast<int>(n);
    } else if (a == "--json") {
      if (!value(&json_path)) return fail("--json needs a file");
    } else if (a == "--markdown") {
      if (!value(&markdown_path)) return fail("--markdown needs a file");
    } else if (a == "--per-request") {
      per_request = true;
    } else if (a == "--quiet") {
      quiet = true;
    } else {
      std::fputs(kUsage, stderr);
      return fail("unknown flag " + a);
    }
  }
  (void)have_lengths;
  if (target.empty()) return fail("--target HOST:PORT is required");
  if (sweep) {
    const bool start_given = sweep->start != sweep_settings.start;
    (void)start_given;
    sweep = sweep_settings;
    if (cfg.arrivals.concurrency > 0) return fail("--sweep steps the rate; drop --concurrency");
    if (slo.empty()) return fail("--sweep needs --slo (the SLOs define a sustainable rate)");
    cfg.arrivals.rate = sweep->start;
  } else if (!have_rate && cfg.arrivals.concurrency == 0) {
    return fail("give --rate R (requests/s) or --concurrency C");
  }
  if (cfg.num_requests == 0 && cfg.duration_s <= 0)
    return fail("--num-requests 0 needs --duration S (the run must be bounded)");
  if (Status s = validate_arrivals(cfg.arrivals); !s.ok()) return fail(s.message());
  cfg.workload.seed = static_cast<uint64_t>(seed);
  cfg.arrivals.seed = static_cast<uint64_t>(seed);
  if (quiet) cfg.progress_interval_s = 0;

  client::ClientOptions copt;
  copt.connect_timeout = std::chrono::milliseconds(5000);
  auto client = client::Client::connect(target, copt);
  if (!client.ok())
    return fail("no server reachable at " + target + ": " + client.status().message());
  auto model = (*client)->model_info();
  if (!model.ok())
    return fail("cannot get model info from " + target + ": " + model.status().message());
  cfg.workload.vocab_size = model->vocab_size;
  cfg.workload.context_length = model->context_length;
  if (Status s = validate_workload(cfg.workload); !s.ok()) return fail(s.message());

  Report report;
  report.target = target;
  report.model = *model;
  if (auto info = (*client)->server_info(); info.ok()) report.server_version = info->version;
  report.config = cfg;
  report.slo = slo;
  report.sweep = sweep;
  report.created_at = utc_now_iso8601();

  std::signal(SIGINT, on_sigint);
  std::vector<double> rates;
  std::vector<StepVerdict> verdicts;
  const int steps = sweep ? sweep->max_steps : 1;
  uint64_t next_index = 0;
  for (int step = 0; step < steps; ++step) {
    RunConfig run = cfg;
    run.first_index = next_index;
    if (step > 0) run.warmup = 0;
    if (sweep) {
      run.label = "step " + std::to_string(step + 1) + " @ " + std::to_string(run.arrivals.rate);
      run.arrivals.seed = cfg.arrivals.seed + static_cast<uint64_t>(step);
      if (!quiet)
        std::fprintf(stderr, "[sweep] step %d: %.4g req/s\n", step + 1, run.arrivals.rate);
    }
    RunResult result = run_load(**client, run, g_stop);
    next_index += result.sent;
    StepReport st;
    if (run.arrivals.concurrency > 0)
      st.concurrency = run.arrivals.concurrency;
    else
      st.offered_rate = run.arrivals.rate;
    st.sent = result.sent;
    st.send_span_s = result.send_span_s;
    st.interrupted = result.interrupted;
    st.stats = compute_stats(result.records, slo);
    st.server = result.view;
    if (per_request) st.records = std::move(result.records);
    if (sweep) {
      st.verdict = judge_step(st.stats, st.sent, slo);
      rates.push_back(run.arrivals.rate);
      verdicts.push_back(*st.verdict);
    }
    report.steps.push_back(std::move(st));
    if (result.interrupted) {
      report.interrupted = true;
      break;
    }
    if (sweep) {
      report.decision = sweep_decision(rates, verdicts, sweep->max_steps);
      if (report.decision.stop) break;
      cfg.arrivals.rate *= sweep->factor;
    }
  }
  if (sweep && report.decision.reason.empty()) {
    report.decision = sweep_decision(rates, verdicts, sweep->max_steps);
    if (report.interrupted) report.decision.reason = "interrupted (Ctrl-C)";
  }

  const std::string markdown = report_to_markdown(report);
  std::fputs(markdown.c_str(), stdout);
  std::fflush(stdout);
  int rc = 0;
  if (!json_path.empty()) {
    if (Status s = write_file(json_path, report_to_json(report, per_request).dump(2) + "\n");
        !s.ok()) {
      std::fprintf(stderr, "pagoda-bench-serve: %s\n", s.message().c_str());
      rc = 1;
    }
  }
  if (!markdown_path.empty()) {
    if (Status s = write_file(markdown_path, markdown); !s.ok()) {
      std::fprintf(stderr, "pagoda-bench-serve: %s\n", s.message().c_str());
      rc = 1;
    }
  }
  return report.interrupted ? 130 : rc;
}
