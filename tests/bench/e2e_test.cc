// pagoda-bench-serve against a real `pagoda serve` (port 0, bundled stories260K): a short run
// whose JSON parses and has sane values, and bad settings that exit 2 with a clear message.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/e2e_cpp/server_process.h"

namespace pagoda::bench {
namespace {

struct Exec {
  int code = -1;
  std::string output;  // stdout and stderr
};

Exec run_bench(const std::string& args) {
  Exec e;
  const std::string cmd = std::string(PAGODA_BENCH_SERVE_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return e;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) e.output.append(buf, n);
  const int st = pclose(p);
  e.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return e;
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/pbs_" + std::to_string(getpid()) + "_" + name;
}

class BenchServeE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new e2e::ServerProcess();
    Status s = server_->start();
    ASSERT_TRUE(s.ok()) << s.to_string();
  }
  static void TearDownTestSuite() {
    if (server_) (void)server_->stop();
    delete server_;
    server_ = nullptr;
  }
  static e2e::ServerProcess* server_;
};
e2e::ServerProcess* BenchServeE2E::server_ = nullptr;

TEST_F(BenchServeE2E, ShortRunWritesSaneJsonAndMarkdown) {
  const std::string json_path = temp_path("run.json"), md_path = temp_path("run.md");
  Exec e = run_bench("--target " + server_->address() +
                     " --num-requests 20 --rate 20 --input-len 12 --output-len 8 --warmup 2"
                     " --seed 3 --slo ttft=10s,e2e=30s --per-request --quiet --json " +
                     json_path + " --markdown " + md_path);
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_NE(e.output.find("| 20 | 20/20 |"), std::string::npos) << e.output;
  std::ifstream f(json_path);
  ASSERT_TRUE(f.good());
  nlohmann::json j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["model"]["id"], "stories260K");
  EXPECT_TRUE(j["sweep"].is_null());
  ASSERT_EQ(j["runs"].size(), 1u);
  const auto& run = j["runs"][0];
  EXPECT_EQ(run["requests"]["sent"], 20);
  EXPECT_EQ(run["requests"]["completed"], 20);
  EXPECT_EQ(run["requests"]["failed"], 0);
  EXPECT_EQ(run["total_output_tokens"], 20 * 8);
  EXPECT_EQ(run["total_input_tokens"], 20 * 12);
  EXPECT_EQ(run["good_requests"], 20);
  EXPECT_GT(run["request_throughput"].get<double>(), 0);
  EXPECT_GT(run["output_token_throughput"].get<double>(), 0);
  for (const char* m : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
    EXPECT_GT(run[m]["count"].get<int>(), 0) << m;
    EXPECT_LE(run[m]["p50"].get<double>(), run[m]["p99"].get<double>()) << m;
    EXPECT_GE(run[m]["min"].get<double>(), 0) << m;
  }
  EXPECT_LE(run["ttft_ms"]["p99"].get<double>(), run["e2e_ms"]["max"].get<double>());
  ASSERT_EQ(run["per_request"].size(), 20u);
  for (const auto& r : run["per_request"]) {
    EXPECT_TRUE(r["ok"].get<bool>());
    EXPECT_EQ(r["output_tokens"], 8);
    EXPECT_EQ(r["output_tokens"], r["expected_tokens"]);
    EXPECT_LE(r["ttft_ms"].get<double>(), r["e2e_ms"].get<double>());
  }
  EXPECT_GT(run["server"]["samples"].get<int>(), 0);
  // Validates against bench/serve/report.schema.json where python3-jsonschema is installed.
  if (std::system("python3 -c 'import jsonschema' >/dev/null 2>&1") == 0) {
    const std::string check =
        "python3 -c \"import json, sys, jsonschema; "
        "jsonschema.Draft202012Validator(json.load(open(sys.argv[1])))"
        ".validate(json.load(open(sys.argv[2])))\" " +
        std::string(PAGODA_SOURCE_DIR) + "/bench/serve/report.schema.json " + json_path;
    EXPECT_EQ(std::system(check.c_str()), 0) << "the JSON does not validate against its schema";
  }
  std::ifstream md(md_path);
  std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("# pagoda-bench-serve report"), std::string::npos);
}

TEST_F(BenchServeE2E, SweepReportsCapacity) {
  const std::string json_path = temp_path("sweep.json");
  // A generous SLO that stories260K meets at these low rates: every step is sustainable, so the
  // sweep stops at max steps with the last rate as a lower bound.
  Exec e = run_bench("--target " + server_->address() +
                     " --num-requests 6 --input-len 8 --output-len 4 --sweep --sweep-start 5"
                     " --sweep-factor 2 --sweep-max-steps 2 --slo e2e=30s --quiet --json " +
                     json_path);
  ASSERT_EQ(e.code, 0) << e.output;
  std::ifstream f(json_path);
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][1]["offered_rate"], 10.0);
  EXPECT_TRUE(j["runs"][0]["verdict"]["sustainable"].get<bool>());
  EXPECT_EQ(j["sweep"]["capacity_rps"], 10.0);
  EXPECT_NE(e.output.find("Capacity"), std::string::npos);
}

TEST_F(BenchServeE2E, ConcurrencyMode) {
  Exec e = run_bench("--target " + server_->address() +
                     " --num-requests 8 --concurrency 3 --random-lengths 4:16,2:6 --quiet");
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_NE(e.output.find("| c=3 | 8/8 | 0 |"), std::string::npos) << e.output;
}

TEST(BenchServeCli, BadSettingsExit2WithMessage) {
  struct Case {
    const char* args;
    const char* expect;
  } cases[] = {
      {"--target 127.0.0.1:1 --rate 0", "--rate must be > 0"},
      {"--target 127.0.0.1:1 --rate -3", "--rate must be > 0"},
      {"--target 127.0.0.1:1 --rate 1 --slo ttft=500", "has no unit"},
      {"--target 127.0.0.1:1 --rate 1 --bogus", "unknown flag --bogus"},
      {"--rate 1", "--target HOST:PORT is required"},
      {"--target 127.0.0.1:1 --sweep", "--sweep needs --slo"},
  };
  for (const Case& c : cases) {
    Exec e = run_bench(c.args);
    EXPECT_EQ(e.code, 2) << c.args << "\n" << e.output;
    EXPECT_NE(e.output.find(c.expect), std::string::npos) << c.args << "\n" << e.output;
  }
}

TEST(BenchServeCli, NoServerExit2) {
  // Port 1 on loopback: nothing listens there (connect fails fast with "connection refused").
  Exec e = run_bench("--target 127.0.0.1:1 --rate 1 --num-requests 1");
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_NE(e.output.find("no server reachable at 127.0.0.1:1"), std::string::npos) << e.output;
}

}  // namespace
}  // namespace pagoda::bench
