// The ledger as a library: round trip, scoping, pagination, group commit, backpressure, close,
// commit failures, schema versions and bad paths. Durability against kill -9 is in
// durability_test.cc.
#include "server/ledger/ledger.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "tests/ledger/ledger_test_util.h"

namespace pagoda::ledger {
namespace {

using testing::kAdmin;
using testing::kAllTime;
using testing::make_row;
using testing::open_or_die;
using testing::TempDir;

void expect_same_row(const LedgerRow& got, const LedgerRow& want) {
  EXPECT_EQ(got.request_id, want.request_id);
  EXPECT_EQ(got.tenant, want.tenant);
  EXPECT_EQ(got.model_id, want.model_id);
  EXPECT_EQ(got.model_revision, want.model_revision);
  EXPECT_EQ(got.prompt_tokens, want.prompt_tokens);
  EXPECT_EQ(got.completion_tokens, want.completion_tokens);
  EXPECT_EQ(got.cached_tokens, want.cached_tokens);
  EXPECT_EQ(got.finish_reason, want.finish_reason);
  EXPECT_EQ(got.policy_outcome, want.policy_outcome);
  EXPECT_EQ(got.received_unix_ms, want.received_unix_ms);
  EXPECT_EQ(got.finished_unix_ms, want.finished_unix_ms);
}

TEST(Ledger, RoundTripRowsAndTotalsSurviveReopen) {
  TempDir dir;
  std::vector<LedgerRow> written;
  {
    auto ledger = open_or_die(dir.file("ledger.db"));
    for (int i = 0; i < 5; ++i) {
      written.push_back(make_row("acme", i, 1000 + i));
      written.back().policy_outcome = i == 3 ? "redact:email" : "allow";
      ASSERT_TRUE(ledger->append(written.back())->wait().ok());
    }
  }
  auto ledger = open_or_die(dir.file("ledger.db"));
  auto rows = ledger->rows(kAdmin, "", 0, kAllTime, 100);
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  ASSERT_EQ(rows->size(), 5u);
  for (int i = 0; i < 5; ++i) expect_same_row((*rows)[i], written[i]);
  auto usage = ledger->totals(kAdmin, "acme", 0, kAllTime);
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->requests, 5);
  EXPECT_EQ(usage->prompt_tokens, 10 + 11 + 12 + 13 + 14);
  EXPECT_EQ(usage->completion_tokens, 20 + 22 + 24 + 26 + 28);
  EXPECT_EQ(usage->cached_tokens, 0 + 1 + 2 + 3 + 4);
  // The time window is [since, until) on finished_unix_ms.
  auto window = ledger->totals(kAdmin, "acme", 1001, 1003);
  ASSERT_TRUE(window.ok());
  EXPECT_EQ(window->requests, 2);
  EXPECT_EQ(window->prompt_tokens, 11 + 12);
  auto empty = ledger->totals(kAdmin, "nobody", 0, kAllTime);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->requests, 0);
  EXPECT_EQ(empty->prompt_tokens, 0);
}

TEST(Ledger, InvalidRowsAreRefusedThroughTheTicket) {
  TempDir dir;
  auto ledger = open_or_die(dir.file("ledger.db"));
  LedgerRow no_tenant = make_row("x", 1);
  no_tenant.tenant = "";
  EXPECT_EQ(ledger->append(no_tenant)->wait().code(), StatusCode::kInvalidArgument);
  LedgerRow negative = make_row("x", 1);
  negative.completion_tokens = -1;
  EXPECT_EQ(ledger->append(negative)->wait().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger->totals(kAdmin, "", 0, kAllTime)->requests, 0);
}

TEST(Ledger, NonAdminScopeOnlyEverReadsItsOwnTenant) {
  TempDir dir;
  auto ledger = open_or_die(dir.file("ledger.db"));
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(ledger->append(make_row(i % 2 == 0 ? "alpha" : "beta", i))->wait().ok());
  }
  const Scope alpha{false, "alpha"};
  // "" and its own name both mean alpha.
  for (const std::string& asked : {std::string(""), std::string("alpha")}) {
    auto rows = ledger->rows(alpha, asked, 0, kAllTime, 100);
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(rows->size(), 3u);
    for (const auto& r : *rows) EXPECT_EQ(r.tenant, "alpha");
    auto usage = ledger->totals(alpha, asked, 0, kAllTime);
    ASSERT_TRUE(usage.ok());
    EXPECT_EQ(usage->requests, 3);
    EXPECT_EQ(usage->prompt_tokens, 10 + 12 + 14);
  }
  // Any other tenant, however spelled, is refused (never an empty success, never beta's rows).
  for (const std::string& asked :
       {std::string("beta"), std::string("%"), std::string("alpha' OR 1=1 --"),
        std::string("ALPHA"), std::string("alpha ")}) {
    auto rows = ledger->rows(alpha, asked, 0, kAllTime, 100);
    EXPECT_EQ(rows.status().code(), StatusCode::kFailedPrecondition) << asked;
    EXPECT_NE(rows.status().message().find("may not read"), std::string::npos);
    auto usage = ledger->totals(alpha, asked, 0, kAllTime);
    EXPECT_EQ(usage.status().code(), StatusCode::kFailedPrecondition) << asked;
  }
  // Cursors don't leak either: paging from any cursor still yields only alpha's rows.
  for (int64_t cursor = 0; cursor <= 7; ++cursor) {
    auto rows = ledger->rows(alpha, "", 0, kAllTime, 1, cursor);
    ASSERT_TRUE(rows.ok());
    for (const auto& r : *rows) EXPECT_EQ(r.tenant, "alpha");
  }
  // A non-admin scope without a tenant reads nothing.
  EXPECT_FALSE(ledger->rows(Scope{false, ""}, "", 0, kAllTime, 100).ok());
  EXPECT_FALSE(ledger->totals(Scope{false, ""}, "", 0, kAllTime).ok());
  // The admin sees everything, or one tenant when it names one.
  EXPECT_EQ(ledger->rows(kAdmin, "", 0, kAllTime, 100)->size(), 6u);
  EXPECT_EQ(ledger->totals(kAdmin, "", 0, kAllTime)->requests, 6);
  auto beta = ledger->rows(kAdmin, "beta", 0, kAllTime, 100);
  ASSERT_TRUE(beta.ok());
  ASSERT_EQ(beta->size(), 3u);
  for (const auto& r : *beta) EXPECT_EQ(r.tenant, "beta");
}

TEST(Ledger, PaginationVisitsEveryRowOnceInOrder) {
  TempDir dir;
  auto ledger = open_or_die(dir.file("ledger.db"));
  for (int i = 0; i < 23; ++i) {
    ASSERT_TRUE(ledger->append(make_row(i % 3 == 0 ? "other" : "acme", i))->wait().ok());
  }
  std::vector<std::string> seen;
  int64_t cursor = 0;
  int pages = 0;
  for (;;) {
    auto page = ledger->rows(Scope{false, "acme"}, "", 0, kAllTime, 4, cursor);
    ASSERT_TRUE(page.ok());
    ++pages;
    for (const auto& r : *page) {
      EXPECT_GT(r.cursor, cursor);
      cursor = r.cursor;
      seen.push_back(r.request_id);
    }
    if (page->size() < 4) break;
  }
  std::vector<std::string> want;
  for (int i = 0; i < 23; ++i) {
    if (i % 3 != 0) want.push_back("acme-req-" + std::to_string(i));
  }
  EXPECT_EQ(seen, want);  // 15 rows: pages of 4, 4, 4, 3
  EXPECT_EQ(pages, 4);
  EXPECT_EQ(ledger->rows(kAdmin, "", 0, kAllTime, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger->rows(kAdmin, "", 0, kAllTime, Ledger::kMaxPageRows + 1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(Ledger, ConcurrentAppendsAllCommit) {
  TempDir dir;
  auto ledger = open_or_die(dir.file("ledger.db"));
  constexpr int kThreads = 8, kPerThread = 500;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::shared_ptr<CommitTicket>> tickets;
      const std::string tenant = std::string("t").append(std::to_string(t));
      for (int i = 0; i < kPerThread; ++i) {
        tickets.push_back(ledger->append(make_row(tenant, i)));
        // Half the threads wait as they go (like request handlers), half at the end.
        if (t % 2 == 0 && !tickets.back()->wait().ok()) ++failures;
      }
      for (auto& ticket : tickets) {
        if (!ticket->wait().ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto usage = ledger->totals(kAdmin, "", 0, kAllTime);
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->requests, kThreads * kPerThread);
  EXPECT_EQ(usage->prompt_tokens, kThreads * (10 * kPerThread + kPerThread * (kPerThread - 1) / 2));
  LedgerStats stats = ledger->stats();
  EXPECT_EQ(stats.rows_committed, kThreads * kPerThread);
  EXPECT_LE(stats.commits, kThreads * kPerThread);
  EXPECT_EQ(stats.failed_batches, 0);
  std::set<std::string> ids;
  int64_t cursor = 0;
  for (;;) {
    auto page = ledger->rows(kAdmin, "", 0, kAllTime, 1000, cursor);
    ASSERT_TRUE(page.ok());
    for (const auto& r : *page) ids.insert(r.request_id);
    if (page->empty()) break;
    cursor = page->back().cursor;
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST(Ledger, GroupCommitPutsEverythingQueuedIntoOneTransaction) {
  TempDir dir;
  auto ledger = open_or_die(dir.file("ledger.db"));
  ASSERT_TRUE(ledger->append(make_row("a", 0))->wait().ok());
  ASSERT_EQ(ledger->stats().commits, 1);
  ledger->pause_writer_for_testing();
  std::vector<std::shared_ptr<CommitTicket>> tickets;
  for (int i = 1; i <= 300; ++i) tickets.push_back(ledger->append(make_row("a", i)));
  for (auto& t : tickets) EXPECT_FALSE(t->done());  // nothing commits while paused
  ledger->resume_writer_for_testing();
  for (auto& t : tickets) ASSERT_TRUE(t->wait().ok());
  LedgerStats stats = ledger->stats();
  EXPECT_EQ(stats.commits, 2);  // 300 rows, one transaction
  EXPECT_EQ(stats.rows_committed, 301);
}

// What the server samples into metrics: stats() counts queued and committed rows, and the
// commit observer sees each transaction (its rows, outcome, time and each row's wait) before the
// transaction's tickets complete.
TEST(Ledger, StatsAndCommitObserverReportEachTransaction) {
  TempDir dir;
  auto ledger = open_or_die(dir.file("ledger.db"));
  struct Seen {
    bool ok;
    size_t rows;
    double commit_seconds;
    std::vector<double> waits;
  };
  std::mutex mu;
  std::vector<Seen> seen;
  ledger->set_commit_observer([&](const CommitEvent& e) {
    std::lock_guard lock(mu);
    seen.push_back({e.ok, e.rows, e.commit_seconds,
                    std::vector<double>(e.row_wait_seconds.begin(), e.row_wait_seconds.end())});
  });
  ledger->pause_writer_for_testing();
  std::vector<std::shared_ptr<CommitTicket>> tickets;
  for (int i = 0; i < 10; ++i) tickets.push_back(ledger->append(make_row("a", i)));
  EXPECT_EQ(ledger->stats().queued, 10);
  EXPECT_EQ(ledger->stats().rows_committed, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // at least: a lower bound below
  ledger->resume_writer_for_testing();
  for (auto& t : tickets) ASSERT_TRUE(t->wait().ok());
  {
    std::lock_guard lock(mu);  // observed before the tickets completed: no waiting needed
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_TRUE(seen[0].ok);
    EXPECT_EQ(seen[0].rows, 10u);
    EXPECT_GT(seen[0].commit_seconds, 0.0);
    ASSERT_EQ(seen[0].waits.size(), 10u);
    for (double w : seen[0].waits) {
      EXPECT_GE(w, 0.005);                   // every row waited out the pause...
      EXPECT_GE(w, seen[0].commit_seconds);  // ...and the whole commit
    }
  }
  LedgerStats stats = ledger->stats();
  EXPECT_EQ(stats.queued, 0);
  EXPECT_EQ(stats.commits, 1);
  EXPECT_EQ(stats.rows_committed, 10);

  // A failed transaction is observed too (ok false), and counted as failed.
  ledger->pause_writer_for_testing();
  ASSERT_TRUE(ledger->exec_on_writer_for_testing("PRAGMA max_page_count=1").ok());
  tickets.clear();
  for (int i = 10; i < 60; ++i) {
    LedgerRow row = make_row("a", i);
    row.policy_outcome = std::string(200, 'x');  // enough bytes to need new pages
    tickets.push_back(ledger->append(row));
  }
  ledger->resume_writer_for_testing();
  for (auto& t : tickets) EXPECT_EQ(t->wait().code(), StatusCode::kUnavailable);
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_FALSE(seen[1].ok);
    EXPECT_EQ(seen[1].rows, 50u);
    EXPECT_EQ(seen[1].waits.size(), 50u);
  }
  stats = ledger->stats();
  EXPECT_EQ(stats.failed_batches, 1);
  EXPECT_EQ(stats.rows_failed, 50);
  EXPECT_EQ(stats.rows_committed, 10);

  // Cleared: later commits are not observed.
  ledger->set_commit_observer(nullptr);
  ledger->pause_writer_for_testing();
  ASSERT_TRUE(ledger->exec_on_writer_for_testing("PRAGMA max_page_count=1073741823").ok());
  ledger->resume_writer_for_testing();
  ASSERT_TRUE(ledger->append(make_row("a", 60))->wait().ok());
  std::lock_guard lock(mu);
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(ledger->stats().rows_committed, 11);
}

TEST(Ledger, BatchesAreCappedAtMaxBatch) {
  TempDir dir;
  Ledger::Options options;
  options.max_batch = 64;
  auto ledger = open_or_die(dir.file("ledger.db"), options);
  ledger->pause_writer_for_testing();
  std::vector<std::shared_ptr<CommitTicket>> tickets;
  for (int i = 0; i < 200; ++i) tickets.push_back(ledger->append(make_row("a", i)));
  ledger->resume_writer_for_testing();
  for (auto& t : tickets) ASSERT_TRUE(t->wait().ok());
  EXPECT_EQ(ledger->stats().commits, 4);  // 64 + 64 + 64 + 8
}

TEST(Ledger, FullQueueBlocksThenFailsUnavailable) {
  TempDir dir;
  Ledger::Options options;
  options.max_queue = 4;
  options.append_timeout = std::chrono::milliseconds(20);
  auto ledger = open_or_die(dir.file("ledger.db"), options);
  ledger->pause_writer_for_testing();
  std::vector<std::shared_ptr<CommitTicket>> tickets;
  for (int i = 0; i < 4; ++i) tickets.push_back(ledger->append(make_row("a", i)));
  auto refused = ledger->append(make_row("a", 4));
  ASSERT_TRUE(refused->done());
  EXPECT_EQ(refused->wait().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused->wait().message().find("queue full"), std::string::npos);
  EXPECT_EQ(ledger->stats().rejected_full, 1);
  // Another thread's append is refused the same way: nothing frees room while the writer is
  // paused, so the timeout always expires.
  std::shared_ptr<CommitTicket> late;
  std::thread appender([&] { late = ledger->append(make_row("a", 5)); });
  appender.join();
  EXPECT_EQ(late->wait().code(), StatusCode::kUnavailable);
  EXPECT_EQ(ledger->stats().rejected_full, 2);
  ledger->resume_writer_for_testing();
  for (auto& t : tickets) EXPECT_TRUE(t->wait().ok());
  EXPECT_EQ(ledger->totals(kAdmin, "", 0, kAllTime)->requests, 4);
}

TEST(Ledger, BlockedAppendProceedsWhenRoomAppears) {
  TempDir dir;
  Ledger::Options options;
  options.max_queue = 2;
  options.append_timeout = std::chrono::minutes(5);  // never reached: resume frees room
  auto ledger = open_or_die(dir.file("ledger.db"), options);
  ledger->pause_writer_for_testing();
  auto a = ledger->append(make_row("a", 0));
  auto b = ledger->append(make_row("a", 1));
  std::shared_ptr<CommitTicket> c;
  std::thread appender([&] { c = ledger->append(make_row("a", 2)); });
  ledger->resume_writer_for_testing();
  appender.join();
  EXPECT_TRUE(a->wait().ok());
  EXPECT_TRUE(b->wait().ok());
  EXPECT_TRUE(c->wait().ok());
  EXPECT_EQ(ledger->totals(kAdmin, "", 0, kAllTime)->requests, 3);
}

TEST(Ledger, CloseFlushesEverythingQueuedAndRefusesLaterAppends) {
  TempDir dir;
  std::vector<std::shared_ptr<CommitTicket>> tickets;
  {
    auto ledger = open_or_die(dir.file("ledger.db"));
    ledger->pause_writer_for_testing();  // close() must override the pause
    for (int i = 0; i < 100; ++i) tickets.push_back(ledger->append(make_row("a", i)));
    ledger->close();
    for (auto& t : tickets) {
      ASSERT_TRUE(t->done());
      EXPECT_TRUE(t->wait().ok());
    }
    auto after = ledger->append(make_row("a", 100));
    EXPECT_EQ(after->wait().code(), StatusCode::kFailedPrecondition);
    ledger->close();                                                    // idempotent
    EXPECT_EQ(ledger->totals(kAdmin, "", 0, kAllTime)->requests, 100);  // queries still work
  }
  auto reopened = open_or_die(dir.file("ledger.db"));
  EXPECT_EQ(reopened->totals(kAdmin, "", 0, kAllTime)->requests, 100);
}

TEST(Ledger, CommitFailureReachesEveryTicketOfTheBatchAndTheWriterGoesOn) {
  TempDir dir;
  auto ledger = open_or_die(dir.file("ledger.db"));
  ASSERT_TRUE(ledger->append(make_row("a", 0))->wait().ok());
  ledger->pause_writer_for_testing();
  // Cap the database at its current size: the next batch can't grow it (SQLITE_FULL), as on a
  // full disk.
  ASSERT_TRUE(ledger->exec_on_writer_for_testing("PRAGMA max_page_count=1").ok());
  std::vector<std::shared_ptr<CommitTicket>> tickets;
  for (int i = 1; i <= 200; ++i) {
    LedgerRow row = make_row("a", i);
    row.policy_outcome = std::string(200, 'x');  // enough bytes to need new pages
    tickets.push_back(ledger->append(row));
  }
  ledger->resume_writer_for_testing();
  for (auto& t : tickets) {
    Status st = t->wait();
    EXPECT_EQ(st.code(), StatusCode::kUnavailable);
    EXPECT_NE(st.message().find("full"), std::string::npos) << st.message();
  }
  EXPECT_EQ(ledger->stats().failed_batches, 1);
  EXPECT_EQ(ledger->stats().rows_failed, 200);
  // Disk space comes back: the writer is still there and commits again.
  ledger->pause_writer_for_testing();
  ASSERT_TRUE(ledger->exec_on_writer_for_testing("PRAGMA max_page_count=1073741823").ok());
  ledger->resume_writer_for_testing();
  EXPECT_TRUE(ledger->append(make_row("a", 201))->wait().ok());
  auto rows = ledger->rows(kAdmin, "", 0, kAllTime, 100);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);  // nothing of the failed batch is half-written
  EXPECT_EQ((*rows)[0].request_id, "a-req-0");
  EXPECT_EQ((*rows)[1].request_id, "a-req-201");
}

TEST(Ledger, RefusesANewerSchemaVersionNamingFileAndVersions) {
  TempDir dir;
  const std::string path = dir.file("ledger.db");
  { open_or_die(path); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto ledger = Ledger::open(path);
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), StatusCode::kFailedPrecondition);
  const std::string& msg = ledger.status().message();
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("schema version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(" + std::to_string(kSchemaVersion) + ")"), std::string::npos) << msg;
}

TEST(Ledger, NewDatabaseIsWalWithCurrentSchemaVersion) {
  TempDir dir;
  const std::string path = dir.file("ledger.db");
  { open_or_die(path); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  auto scalar = [&](const char* sql) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &s, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(s), SQLITE_ROW);
    std::string v = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return v;
  };
  EXPECT_EQ(scalar("PRAGMA journal_mode"), "wal");  // persistent in the file
  EXPECT_EQ(scalar("SELECT version FROM schema_version"), std::to_string(kSchemaVersion));
  EXPECT_EQ(scalar("SELECT count(*) FROM schema_version"), "1");
  sqlite3_close(db);
}

TEST(Ledger, BadPathsGetAClearErrorNamingThem) {
  TempDir dir;
  const std::string missing_dir = dir.file("no/such/dir/ledger.db");
  auto a = Ledger::open(missing_dir);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(a.status().message().find(missing_dir), std::string::npos) << a.status().message();

  const std::string a_dir = dir.file("");  // a directory, not a file
  auto b = Ledger::open(a_dir);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find(a_dir), std::string::npos) << b.status().message();

  const std::string junk = dir.file("junk.db");
  std::ofstream(junk) << std::string(4096, 'j');
  auto c = Ledger::open(junk);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(c.status().message().find(junk), std::string::npos) << c.status().message();

  EXPECT_EQ(Ledger::open("").status().code(), StatusCode::kInvalidArgument);
  Ledger::Options zero;
  zero.max_queue = 0;
  EXPECT_EQ(Ledger::open(dir.file("x.db"), zero).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pagoda::ledger
