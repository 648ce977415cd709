// Durability against kill -9: a child process appends rows and reports each one whose ticket
// came back OK (as the server would send the final response); the parent SIGKILLs it at some
// point after m reports, reopens the ledger and checks that every reported row is there.
// Whatever the timing, the check is the same: reported => present.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <set>

#include "server/ledger/ledger.h"
#include "tests/ledger/ledger_test_util.h"

namespace pagoda::ledger {
namespace {

using testing::kAdmin;
using testing::kAllTime;
using testing::make_row;
using testing::TempDir;

constexpr int kRows = 20000;  // far more than the child gets through before the kill
constexpr int kWindow = 16;   // appends in flight per round, so batches are open at the kill

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// The child: never returns. Exit codes: 0 all done, 2 open failed, 3 a ticket failed.
[[noreturn]] void child_main(const std::string& path, const std::string& tenant,
                             Ledger::Synchronous sync, int fd) {
  Ledger::Options options;
  options.synchronous = sync;
  auto ledger = Ledger::open(path, options);
  if (!ledger.ok()) _exit(2);
  for (int base = 0; base < kRows; base += kWindow) {
    std::vector<std::shared_ptr<CommitTicket>> tickets;
    for (int i = base; i < base + kWindow; ++i)
      tickets.push_back((*ledger)->append(make_row(tenant, i)));
    for (int j = 0; j < kWindow; ++j) {
      if (!tickets[j]->wait().ok()) _exit(3);
      if (!write_all(fd, "committed " + std::to_string(base + j) + "\n")) _exit(4);
    }
  }
  _exit(0);
}

struct KillResult {
  std::vector<int> reported;  // rows the child reported committed
  bool killed = false;        // SIGKILL ended it (not a normal exit)
  int exit_code = -1;
};

// Runs a child against `path`, kills it after `m` reports, returns what it reported.
KillResult run_and_kill(const std::string& path, const std::string& tenant,
                        Ledger::Synchronous sync, int m) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    child_main(path, tenant, sync, fds[1]);
  }
  close(fds[1]);
  KillResult result;
  FILE* in = fdopen(fds[0], "r");
  char line[64];
  bool sent_kill = false;
  while (std::fgets(line, sizeof line, in) != nullptr) {
    int i = -1;
    if (std::sscanf(line, "committed %d", &i) == 1) result.reported.push_back(i);
    if (!sent_kill && static_cast<int>(result.reported.size()) >= m) {
      kill(pid, SIGKILL);
      sent_kill = true;
    }
    // Keep reading: lines the child wrote before it died are reports too.
  }
  std::fclose(in);
  if (!sent_kill) kill(pid, SIGKILL);  // it failed early; make sure it is gone
  int wstatus = 0;
  EXPECT_EQ(waitpid(pid, &wstatus, 0), pid);
  result.killed = WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL;
  if (WIFEXITED(wstatus)) result.exit_code = WEXITSTATUS(wstatus);
  return result;
}

class DurabilityTest : public ::testing::TestWithParam<Ledger::Synchronous> {};

TEST_P(DurabilityTest, EveryReportedRowSurvivesKill9) {
  TempDir dir;
  const std::string path = dir.file("ledger.db");
  std::mt19937 rng(20240605);  // fixed seed: the same kill points on every run
  int round = 0;
  // Each round uses its own tenant in the same file, which the previous kill left behind.
  for (int m : {1, 2, 17, 100, 1 + static_cast<int>(rng() % 400)}) {
    const std::string tenant = "k" + std::to_string(round++);
    SCOPED_TRACE(tenant + ": kill after " + std::to_string(m) + " reports");
    KillResult r = run_and_kill(path, tenant, GetParam(), m);
    ASSERT_EQ(r.exit_code, -1) << "child exited with " << r.exit_code << " instead of dying";
    ASSERT_TRUE(r.killed);
    ASSERT_GE(static_cast<int>(r.reported.size()), m);
    ASSERT_LT(static_cast<int>(r.reported.size()), kRows) << "child finished before the kill";

    // Reopen (recovering from the WAL the killed process left) and read back the round's rows.
    auto ledger = Ledger::open(path);
    ASSERT_TRUE(ledger.ok()) << ledger.status().to_string();
    std::multiset<std::string> present;
    int64_t cursor = 0;
    for (;;) {
      auto page = (*ledger)->rows(kAdmin, tenant, 0, kAllTime, Ledger::kMaxPageRows, cursor);
      ASSERT_TRUE(page.ok()) << page.status().to_string();
      if (page->empty()) break;
      for (const auto& row : *page) present.insert(row.request_id);
      cursor = page->back().cursor;
    }
    for (int i : r.reported) {
      EXPECT_EQ(present.count(make_row(tenant, i).request_id), 1u)
          << "row " << i << " was reported committed; it must be there exactly once";
    }
    // Rows the child appended but never reported may or may not be there; nothing else may.
    EXPECT_LE(present.size(), static_cast<size_t>(kRows));
    // The reopened ledger is usable.
    EXPECT_TRUE((*ledger)->append(make_row("after-kill", round))->wait().ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Sync, DurabilityTest,
                         ::testing::Values(Ledger::Synchronous::kFull,
                                           Ledger::Synchronous::kNormal),
                         [](const auto& info) {
                           return info.param == Ledger::Synchronous::kFull ? "Full" : "Normal";
                         });

}  // namespace
}  // namespace pagoda::ledger
