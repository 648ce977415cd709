// The durable token ledger: one row per finished request, in SQLite (WAL), group-committed off
// the caller's thread, queried per tenant.
//
// Durability contract. The requirement is: a request whose final response reached its client is
// in the ledger, even after kill -9 of the server. The server meets it by calling append() when
// a request finishes and sending the final response only after the returned ticket's wait()
// (or wait_for()) reports OK. A ticket reports OK only after SQLite's COMMIT of the transaction
// holding its row has returned SQLITE_OK:
//  - Synchronous::kFull (the default): in WAL mode SQLite fsyncs the WAL file as part of every
//    COMMIT, so an OK ticket means the row is on stable storage: it survives kill -9 of the
//    process and also an OS crash or power loss (given a disk that honours fsync).
//  - Synchronous::kNormal: COMMIT write()s the WAL frames (including the commit frame) into the
//    OS page cache before returning, but does not fsync them (the WAL is fsynced at checkpoints).
//    kill -9 ends the process, not the kernel: the page cache still holds the frames and the OS
//    writes them back, and the next open replays the WAL, so an OK row survives kill -9. It does
//    NOT survive an OS crash or power loss (the last transactions may roll back; the database
//    stays consistent). Cheaper per commit; only for deployments that accept that.
// Group commit amortizes the fsync: one writer thread takes everything queued while the previous
// commit ran (plus an optional linger) and commits it in one transaction.
//
// Backpressure. The queue is bounded (Options::max_queue rows). append() on a full queue blocks
// up to Options::append_timeout; if no room appears it returns a ticket that is already done with
// kUnavailable ("ledger queue full"), which the server maps to gRPC UNAVAILABLE. append() never
// throws and always returns a ticket; every error (invalid row, closed ledger, full queue, failed
// commit) comes through the ticket.
//
// Commit failures (disk full, I/O error, ...) roll the batch back and complete every ticket of
// that batch with kUnavailable naming the SQLite error; the writer keeps going with the next
// batch.
//
// Scoping. Queries take a Scope (who asks). A non-admin scope only ever reads its own tenant:
// asking for "" means its own tenant, asking for another tenant is refused with
// kFailedPrecondition (message "... may not read ...", the server maps it to PERMISSION_DENIED).
// An admin scope reads the tenant it names, or all tenants with "".
//
// Schema. Versioned in table schema_version (one row). A file with a newer version than this
// build knows is refused (kFailedPrecondition naming the file and both versions); an empty file
// gets the current schema. Thread-safety: all public methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace pagoda::ledger {

inline constexpr int kSchemaVersion = 1;

// One finished request.
struct LedgerRow {
  std::string request_id;  // non-empty
  std::string tenant;      // non-empty
  std::string model_id;
  std::string model_revision;
  int64_t prompt_tokens = 0;  // all token counts >= 0
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;   // prompt tokens served from the prefix cache
  std::string finish_reason;   // e.g. "stop", "length", "cancelled", "content_filter"
  std::string policy_outcome;  // e.g. "allow", "redact", "block:deny_pattern"
  int64_t received_unix_ms = 0;
  int64_t finished_unix_ms = 0;
  // Set by rows(): the row's position in commit order; pass the last one as after_cursor to get
  // the next page. Ignored by append().
  int64_t cursor = 0;
};

// Sums over the rows a query selects.
struct Usage {
  int64_t requests = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
};

// Who asks. A non-admin scope must name its tenant.
struct Scope {
  bool admin = false;
  std::string tenant;
};

// Counters of the writer (for metrics and tests). Updated before the batch's tickets complete.
struct LedgerStats {
  int64_t commits = 0;  // transactions committed
  int64_t rows_committed = 0;
  int64_t failed_batches = 0;  // transactions rolled back
  int64_t rows_failed = 0;
  int64_t rejected_full = 0;  // appends refused because the queue stayed full
  int64_t queued = 0;         // rows waiting for the writer now (not counting a batch committing)
};

// One group commit, as the writer saw it (for metrics). `row_wait_seconds[i]`: how long the
// batch's i-th row waited from append() until its transaction ended, which is what a final
// response waiting on its ticket waits. Valid only during the observer call.
struct CommitEvent {
  bool ok = false;              // committed (true) or rolled back (false)
  size_t rows = 0;              // rows in the transaction
  double commit_seconds = 0.0;  // BEGIN until COMMIT (with its fsync) or ROLLBACK returned
  std::span<const double> row_wait_seconds;  // `rows` entries
};
using CommitObserver = std::function<void(const CommitEvent&)>;

// Completes once the row's transaction has committed (OK) or failed (an error).
class CommitTicket {
 public:
  // Blocks until done; returns the outcome.
  Status wait();
  // Waits at most `timeout`; std::nullopt when not done by then.
  std::optional<Status> wait_for(std::chrono::milliseconds timeout);
  bool done();

  // Used by the ledger.
  void complete(Status status);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Status status_;
};

class Ledger {
 public:
  enum class Synchronous { kFull, kNormal };

  struct Options {
    Synchronous synchronous = Synchronous::kFull;
    size_t max_queue = 8192;  // rows waiting for the writer; >= 1
    size_t max_batch = 4096;  // rows per transaction; >= 1
    // append() on a full queue waits this long before failing with kUnavailable.
    std::chrono::milliseconds append_timeout{1000};
    // After waking for a non-empty queue, the writer waits up to this long for more rows (while
    // fewer than max_batch are queued). 0: commit at once; batches still form while a commit runs.
    std::chrono::microseconds linger{0};
    // How long SQLite waits on a lock held by another connection (e.g. a sqlite3 shell).
    std::chrono::milliseconds busy_timeout{5000};
  };

  // Opens (creating if needed) the ledger at `path` and starts the writer thread. Errors name
  // the path: kFailedPrecondition for a file that can't be opened or isn't a ledger database, or
  // whose schema is newer than kSchemaVersion; kInvalidArgument for bad options.
  static StatusOr<std::unique_ptr<Ledger>> open(const std::string& path, Options options);
  static StatusOr<std::unique_ptr<Ledger>> open(const std::string& path) {
    return open(path, Options{});
  }

  ~Ledger();  // close()
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Queues a row; the ticket completes when it is committed (see the top of this file).
  std::shared_ptr<CommitTicket> append(LedgerRow row);

  // Commits everything queued, stops the writer and refuses later appends (kFailedPrecondition).
  // Queries keep working. Idempotent.
  void close();

  // Totals of the rows with since_unix_ms <= finished_unix_ms < until_unix_ms.
  // tenant "": the scope's own tenant (non-admin) or all tenants (admin).
  StatusOr<Usage> totals(const Scope& scope, const std::string& tenant, int64_t since_unix_ms,
                         int64_t until_unix_ms);

  // Up to `limit` (1..kMaxPageRows) rows with cursor > after_cursor in the same selection as
  // totals(), in commit order. Next page: after_cursor = last row's cursor; fewer than `limit`
  // rows means the end.
  static constexpr int kMaxPageRows = 10000;
  StatusOr<std::vector<LedgerRow>> rows(const Scope& scope, const std::string& tenant,
                                        int64_t since_unix_ms, int64_t until_unix_ms, int limit,
                                        int64_t after_cursor = 0);

  // Lock-free (relaxed atomics): cheap enough to sample for metrics at any time; the fields
  // are read one by one, so a snapshot taken during a commit may mix before and after.
  LedgerStats stats() const;
  const std::string& path() const { return path_; }

  // Called on the writer thread after each transaction, after stats() counted it and before
  // the batch's tickets complete: it must be quick and must not call into this ledger. Empty
  // (the default) disables it. Once this returns, the previous observer is neither running nor
  // called again, so whatever it points to may be destroyed.
  void set_commit_observer(CommitObserver observer);

  // Test hooks. While paused the writer takes no new batch (a commit already running finishes);
  // appends queue up and are committed as one batch (up to max_batch) after resume. close()
  // overrides a pause.
  void pause_writer_for_testing();
  void resume_writer_for_testing();
  // Runs `sql` on the writer's connection while the writer is paused (e.g. to cap the database
  // size with PRAGMA max_page_count and provoke SQLITE_FULL).
  Status exec_on_writer_for_testing(const std::string& sql);

 private:
  struct Pending {
    LedgerRow row;
    std::shared_ptr<CommitTicket> ticket;
    std::chrono::steady_clock::time_point appended;
  };
  // The counters behind stats(): written by the writer (rejected_full by append()), read by
  // anyone without a lock.
  struct AtomicStats {
    std::atomic<int64_t> commits{0}, rows_committed{0}, failed_batches{0}, rows_failed{0},
        rejected_full{0}, queued{0};
  };

  Ledger(std::string path, Options options, sqlite3* writer_db, sqlite3* reader_db);
  void writer_loop();
  Status commit_batch(const std::vector<Pending>& batch);
  void notify_observer(const std::vector<Pending>& batch, bool ok, double commit_seconds);
  StatusOr<std::string> resolve_tenant(const Scope& scope, const std::string& tenant) const;

  const std::string path_;
  const Options options_;

  sqlite3* writer_db_;  // used by the writer thread only (and test hooks while paused)
  sqlite3_stmt* insert_stmt_ = nullptr;

  std::mutex reader_mu_;  // guards reader_db_
  sqlite3* reader_db_;

  std::mutex mu_;                     // guards everything below
  std::condition_variable work_cv_;   // writer: rows queued, resumed or closing
  std::condition_variable space_cv_;  // appenders: room in the queue or closing
  std::deque<Pending> queue_;
  bool closing_ = false;
  bool paused_ = false;
  bool writer_busy_ = false;  // a batch is being committed
  std::condition_variable idle_cv_;
  AtomicStats stats_;

  std::mutex observer_mu_;  // guards observer_; taken by the writer and set_commit_observer only
  CommitObserver observer_;
  std::vector<double> row_waits_;  // the writer's scratch for CommitEvent::row_wait_seconds

  std::mutex close_mu_;  // serializes close()
  std::thread writer_;
};

}  // namespace pagoda::ledger
