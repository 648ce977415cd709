// Shared helpers of the ledger tests: a temporary directory per test and row builders.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "server/ledger/ledger.h"

namespace pagoda::ledger::testing {

// A fresh directory, removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pagoda-ledger-XXXXXX").string();
    char* dir = mkdtemp(tmpl.data());
    EXPECT_NE(dir, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline LedgerRow make_row(const std::string& tenant, int i, int64_t finished_ms = 1000) {
  LedgerRow r;
  r.request_id = tenant + "-req-" + std::to_string(i);
  r.tenant = tenant;
  r.model_id = "llama-3.2-1b";
  r.model_revision = "rev-" + std::to_string(i % 3);
  r.prompt_tokens = 10 + i;
  r.completion_tokens = 20 + 2 * i;
  r.cached_tokens = i % 5;
  r.finish_reason = i % 2 == 0 ? "stop" : "length";
  r.policy_outcome = "allow";
  r.received_unix_ms = finished_ms - 50;
  r.finished_unix_ms = finished_ms;
  return r;
}

inline std::unique_ptr<Ledger> open_or_die(const std::string& path,
                                           Ledger::Options options = Ledger::Options{}) {
  auto ledger = Ledger::open(path, options);
  EXPECT_TRUE(ledger.ok()) << ledger.status().to_string();
  if (!ledger.ok()) std::abort();
  return std::move(ledger).value();
}

constexpr int64_t kAllTime = std::numeric_limits<int64_t>::max();
inline const Scope kAdmin{true, ""};

}  // namespace pagoda::ledger::testing
