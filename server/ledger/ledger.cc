#include "server/ledger/ledger.h"

#include <sqlite3.h>

#include <utility>

namespace pagoda::ledger {
namespace {

constexpr const char* kCreateSchema = R"sql(
CREATE TABLE requests (
  cursor INTEGER PRIMARY KEY AUTOINCREMENT,
  request_id TEXT NOT NULL,
  tenant TEXT NOT NULL,
  model_id TEXT NOT NULL,
  model_revision TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  finish_reason TEXT NOT NULL,
  policy_outcome TEXT NOT NULL,
  received_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER NOT NULL
);
CREATE INDEX requests_by_tenant_time ON requests(tenant, finished_unix_ms);
CREATE INDEX requests_by_time ON requests(finished_unix_ms);
)sql";

constexpr const char* kInsert =
    "INSERT INTO requests (request_id, tenant, model_id, model_revision, prompt_tokens, "
    "completion_tokens, cached_tokens, finish_reason, policy_outcome, received_unix_ms, "
    "finished_unix_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

constexpr const char* kColumns =
    "cursor, request_id, tenant, model_id, model_revision, prompt_tokens, completion_tokens, "
    "cached_tokens, finish_reason, policy_outcome, received_unix_ms, finished_unix_ms";

std::string sqlite_error(sqlite3* db, int rc) {
  std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return msg + " (sqlite code " + std::to_string(rc) + ")";
}

// Runs statements that return no rows we need.
Status exec(sqlite3* db, const std::string& sql, const std::string& what) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return OkStatus();
  std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  return Unavailable(what + ": " + msg + " (sqlite code " + std::to_string(rc) + ")");
}

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt() = default;
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  int prepare(sqlite3* db, const std::string& sql) {
    return sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr);
  }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

void close_db(sqlite3* db) {
  if (db != nullptr) sqlite3_close_v2(db);
}

// Opens one connection and sets it up. Errors name the path.
StatusOr<sqlite3*> open_connection(const std::string& path, const Ledger::Options& options) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status st =
        FailedPrecondition("cannot open ledger database '" + path + "': " + sqlite_error(db, rc));
    close_db(db);
    return st;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(options.busy_timeout.count()));
  auto fail = [&](const std::string& what) -> Status {
    Status st = FailedPrecondition("cannot open ledger database '" + path + "': " + what);
    close_db(db);
    return st;
  };
  // journal_mode returns the mode in effect; anything but "wal" (e.g. "memory") is refused.
  Stmt mode;
  rc = mode.prepare(db, "PRAGMA journal_mode=WAL");
  if (rc != SQLITE_OK) return fail(sqlite_error(db, rc));
  rc = sqlite3_step(mode.get());
  if (rc != SQLITE_ROW) return fail(sqlite_error(db, rc));
  std::string journal = reinterpret_cast<const char*>(sqlite3_column_text(mode.get(), 0));
  if (journal != "wal") return fail("journal mode is '" + journal + "', need 'wal'");
  const char* sync = options.synchronous == Ledger::Synchronous::kFull
                         ? "PRAGMA synchronous=FULL"
                         : "PRAGMA synchronous=NORMAL";
  Status st = exec(db, sync, "setting synchronous");
  if (!st.ok()) return fail(st.message());
  return db;
}

// Creates the schema in an empty database or checks the version of an existing one.
Status ensure_schema(sqlite3* db, const std::string& path) {
  auto fail = [&](const std::string& what) {
    return FailedPrecondition("ledger database '" + path + "': " + what);
  };
  Status st = exec(db, "BEGIN IMMEDIATE", "begin");
  if (!st.ok()) return fail(st.message());
  auto rollback = [&](Status s) {
    (void)exec(db, "ROLLBACK", "rollback");
    return s;
  };
  st = exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            "creating schema_version");
  if (!st.ok()) return rollback(fail(st.message()));
  Stmt q;
  int rc = q.prepare(db, "SELECT max(version) FROM schema_version");
  if (rc != SQLITE_OK) return rollback(fail(sqlite_error(db, rc)));
  rc = sqlite3_step(q.get());
  if (rc != SQLITE_ROW) return rollback(fail(sqlite_error(db, rc)));
  if (sqlite3_column_type(q.get(), 0) == SQLITE_NULL) {
    st = exec(db, kCreateSchema, "creating tables");
    if (st.ok()) {
      st = exec(
          db,
          "INSERT INTO schema_version (version) VALUES (" + std::to_string(kSchemaVersion) + ")",
          "writing schema_version");
    }
    if (!st.ok()) return rollback(fail(st.message()));
  } else {
    int64_t version = sqlite3_column_int64(q.get(), 0);
    if (version > kSchemaVersion) {
      return rollback(fail(
          "schema version " + std::to_string(version) + " is newer than this pagoda supports (" +
          std::to_string(kSchemaVersion) + "); run a newer pagoda or use another ledger file"));
    }
    if (version < 1) return rollback(fail("invalid schema version " + std::to_string(version)));
    // Version 1 is the first; migrations from older versions go here.
  }
  st = exec(db, "COMMIT", "commit");
  if (!st.ok()) return rollback(fail(st.message()));
  return OkStatus();
}

Status validate(const LedgerRow& row) {
  if (row.request_id.empty()) return InvalidArgument("ledger row without request id");
  if (row.tenant.empty()) {
    return InvalidArgument("ledger row for request '" + row.request_id + "' without tenant");
  }
  if (row.prompt_tokens < 0 || row.completion_tokens < 0 || row.cached_tokens < 0) {
    return InvalidArgument("ledger row for request '" + row.request_id +
                           "' has a negative token count");
  }
  return OkStatus();
}

std::shared_ptr<CommitTicket> done_ticket(Status status) {
  auto ticket = std::make_shared<CommitTicket>();
  ticket->complete(std::move(status));
  return ticket;
}

std::string column_text(sqlite3_stmt* stmt, int i) {
  const unsigned char* text = sqlite3_column_text(stmt, i);
  return text != nullptr ? reinterpret_cast<const char*>(text) : "";
}

}  // namespace

// --- CommitTicket -------------------------------------------------------------------------

Status CommitTicket::wait() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  return status_;
}

std::optional<Status> CommitTicket::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return done_; })) return std::nullopt;
  return status_;
}

bool CommitTicket::done() {
  std::lock_guard lock(mu_);
  return done_;
}

void CommitTicket::complete(Status status) {
  {
    std::lock_guard lock(mu_);
    status_ = std::move(status);
    done_ = true;
  }
  cv_.notify_all();
}

// --- Ledger: open / close -----------------------------------------------------------------

StatusOr<std::unique_ptr<Ledger>> Ledger::open(const std::string& path, Options options) {
  if (path.empty()) return InvalidArgument("ledger path is empty");
  if (options.max_queue < 1 || options.max_batch < 1) {
    return InvalidArgument("ledger max_queue and max_batch must be >= 1");
  }
  PAGODA_ASSIGN_OR_RETURN(sqlite3 * writer_db, open_connection(path, options));
  Status st = ensure_schema(writer_db, path);
  if (!st.ok()) {
    close_db(writer_db);
    return st;
  }
  auto reader = open_connection(path, options);
  if (!reader.ok()) {
    close_db(writer_db);
    return reader.status();
  }
  std::unique_ptr<Ledger> ledger(new Ledger(path, options, writer_db, *reader));
  int rc = sqlite3_prepare_v3(writer_db, kInsert, -1, SQLITE_PREPARE_PERSISTENT,
                              &ledger->insert_stmt_, nullptr);
  if (rc != SQLITE_OK) {
    return FailedPrecondition("ledger database '" + path +
                              "': preparing insert: " + sqlite_error(writer_db, rc));
  }
  ledger->writer_ = std::thread([l = ledger.get()] { l->writer_loop(); });
  return ledger;
}

Ledger::Ledger(std::string path, Options options, sqlite3* writer_db, sqlite3* reader_db)
    : path_(std::move(path)), options_(options), writer_db_(writer_db), reader_db_(reader_db) {}

Ledger::~Ledger() {
  close();
  sqlite3_finalize(insert_stmt_);
  close_db(writer_db_);
  close_db(reader_db_);
}

void Ledger::close() {
  std::lock_guard close_lock(close_mu_);
  {
    std::lock_guard lock(mu_);
    closing_ = true;
  }
  work_cv_.notify_all();
  space_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

// --- Ledger: appending and the writer -----------------------------------------------------

std::shared_ptr<CommitTicket> Ledger::append(LedgerRow row) {
  Status valid = validate(row);
  if (!valid.ok()) return done_ticket(std::move(valid));
  std::unique_lock lock(mu_);
  bool room = space_cv_.wait_for(lock, options_.append_timeout,
                                 [&] { return closing_ || queue_.size() < options_.max_queue; });
  if (closing_) {
    return done_ticket(FailedPrecondition("ledger '" + path_ + "' is closed; request '" +
                                          row.request_id + "' not recorded"));
  }
  if (!room) {
    stats_.rejected_full.fetch_add(1, std::memory_order_relaxed);
    return done_ticket(Unavailable("ledger queue full (" + std::to_string(options_.max_queue) +
                                   " rows) for " + std::to_string(options_.append_timeout.count()) +
                                   " ms; request '" + row.request_id + "' not recorded"));
  }
  auto ticket = std::make_shared<CommitTicket>();
  queue_.push_back(Pending{std::move(row), ticket, std::chrono::steady_clock::now()});
  stats_.queued.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
  lock.unlock();
  work_cv_.notify_one();
  return ticket;
}

void Ledger::writer_loop() {
  std::vector<Pending> batch;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return closing_ || (!paused_ && !queue_.empty()); });
      if (queue_.empty()) return;  // closing and nothing left
      if (options_.linger.count() > 0 && !closing_ && queue_.size() < options_.max_batch) {
        work_cv_.wait_for(lock, options_.linger,
                          [&] { return closing_ || queue_.size() >= options_.max_batch; });
      }
      size_t n = std::min(queue_.size(), options_.max_batch);
      batch.clear();
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      stats_.queued.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
      writer_busy_ = true;
    }
    space_cv_.notify_all();
    const auto start = std::chrono::steady_clock::now();
    Status st = commit_batch(batch);
    const double commit_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto rows = static_cast<int64_t>(batch.size());
    if (st.ok()) {
      stats_.commits.fetch_add(1, std::memory_order_relaxed);
      stats_.rows_committed.fetch_add(rows, std::memory_order_relaxed);
    } else {
      stats_.failed_batches.fetch_add(1, std::memory_order_relaxed);
      stats_.rows_failed.fetch_add(rows, std::memory_order_relaxed);
    }
    {
      std::lock_guard lock(mu_);
      writer_busy_ = false;
    }
    idle_cv_.notify_all();
    notify_observer(batch, st.ok(), commit_seconds);
    for (Pending& p : batch) p.ticket->complete(st);
  }
}

Status Ledger::commit_batch(const std::vector<Pending>& batch) {
  const std::string what =
      "ledger '" + path_ + "': committing " + std::to_string(batch.size()) + " rows";
  Status st = exec(writer_db_, "BEGIN IMMEDIATE", what);
  if (!st.ok()) return st;
  sqlite3_stmt* s = insert_stmt_;
  for (const Pending& p : batch) {
    const LedgerRow& r = p.row;
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, r.request_id.data(), static_cast<int>(r.request_id.size()),
                      SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r.tenant.data(), static_cast<int>(r.tenant.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 3, r.model_id.data(), static_cast<int>(r.model_id.size()), SQLITE_STATIC);
    sqlite3_bind_text(s, 4, r.model_revision.data(), static_cast<int>(r.model_revision.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, r.prompt_tokens);
    sqlite3_bind_int64(s, 6, r.completion_tokens);
    sqlite3_bind_int64(s, 7, r.cached_tokens);
    sqlite3_bind_text(s, 8, r.finish_reason.data(), static_cast<int>(r.finish_reason.size()),
                      SQLITE_STATIC);
    sqlite3_bind_text(s, 9, r.policy_outcome.data(), static_cast<int>(r.policy_outcome.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(s, 10, r.received_unix_ms);
    sqlite3_bind_int64(s, 11, r.finished_unix_ms);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) {
      st = Unavailable(what + ": " + sqlite_error(writer_db_, rc));
      sqlite3_reset(s);
      sqlite3_clear_bindings(s);
      (void)exec(writer_db_, "ROLLBACK", what);
      return st;
    }
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  st = exec(writer_db_, "COMMIT", what);
  if (!st.ok()) {
    // A failed COMMIT may leave the transaction open (e.g. SQLITE_BUSY); roll it back so the
    // next batch starts clean. If SQLite already rolled back, this is a harmless error.
    if (!sqlite3_get_autocommit(writer_db_)) (void)exec(writer_db_, "ROLLBACK", what);
  }
  return st;
}

void Ledger::pause_writer_for_testing() {
  std::lock_guard lock(mu_);
  paused_ = true;
}

void Ledger::resume_writer_for_testing() {
  {
    std::lock_guard lock(mu_);
    paused_ = false;
  }
  work_cv_.notify_all();
}

Status Ledger::exec_on_writer_for_testing(const std::string& sql) {
  std::unique_lock lock(mu_);
  if (!paused_ && !closing_) return FailedPrecondition("pause the writer first");
  idle_cv_.wait(lock, [&] { return !writer_busy_; });
  return exec(writer_db_, sql, "test hook");
}

LedgerStats Ledger::stats() const {
  LedgerStats s;
  s.commits = stats_.commits.load(std::memory_order_relaxed);
  s.rows_committed = stats_.rows_committed.load(std::memory_order_relaxed);
  s.failed_batches = stats_.failed_batches.load(std::memory_order_relaxed);
  s.rows_failed = stats_.rows_failed.load(std::memory_order_relaxed);
  s.rejected_full = stats_.rejected_full.load(std::memory_order_relaxed);
  s.queued = stats_.queued.load(std::memory_order_relaxed);
  return s;
}

void Ledger::set_commit_observer(CommitObserver observer) {
  std::lock_guard lock(observer_mu_);
  observer_ = std::move(observer);
}

void Ledger::notify_observer(const std::vector<Pending>& batch, bool ok, double commit_seconds) {
  // Held while the observer runs, so set_commit_observer() waits for a call in progress.
  std::lock_guard lock(observer_mu_);
  if (!observer_) return;
  const auto end = std::chrono::steady_clock::now();
  row_waits_.clear();
  for (const Pending& p : batch) {
    row_waits_.push_back(std::chrono::duration<double>(end - p.appended).count());
  }
  observer_(CommitEvent{ok, batch.size(), commit_seconds, row_waits_});
}

// --- Ledger: queries ----------------------------------------------------------------------

StatusOr<std::string> Ledger::resolve_tenant(const Scope& scope, const std::string& tenant) const {
  if (scope.admin) return tenant;
  if (scope.tenant.empty()) return FailedPrecondition("a non-admin ledger query needs a tenant");
  if (!tenant.empty() && tenant != scope.tenant) {
    return FailedPrecondition("tenant '" + scope.tenant + "' may not read the usage of tenant '" +
                              tenant + "'");
  }
  return scope.tenant;
}

namespace {

// " WHERE [tenant = ?1 AND] finished_unix_ms >= ?2 AND finished_unix_ms < ?3"
std::string where_clause(bool by_tenant) {
  return std::string(" WHERE ") + (by_tenant ? "tenant = ?1 AND " : "") +
         "finished_unix_ms >= ?2 AND finished_unix_ms < ?3";
}

Status query_error(const std::string& path, sqlite3* db, int rc) {
  return Unavailable("ledger '" + path + "': query failed: " + sqlite_error(db, rc));
}

}  // namespace

StatusOr<Usage> Ledger::totals(const Scope& scope, const std::string& tenant, int64_t since_unix_ms,
                               int64_t until_unix_ms) {
  PAGODA_ASSIGN_OR_RETURN(std::string who, resolve_tenant(scope, tenant));
  const std::string sql =
      "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
      "coalesce(sum(cached_tokens), 0) FROM requests" +
      where_clause(!who.empty());
  std::lock_guard lock(reader_mu_);
  Stmt q;
  int rc = q.prepare(reader_db_, sql);
  if (rc != SQLITE_OK) return query_error(path_, reader_db_, rc);
  if (!who.empty()) sqlite3_bind_text(q.get(), 1, who.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(q.get(), 2, since_unix_ms);
  sqlite3_bind_int64(q.get(), 3, until_unix_ms);
  rc = sqlite3_step(q.get());
  if (rc != SQLITE_ROW) return query_error(path_, reader_db_, rc);
  Usage u;
  u.requests = sqlite3_column_int64(q.get(), 0);
  u.prompt_tokens = sqlite3_column_int64(q.get(), 1);
  u.completion_tokens = sqlite3_column_int64(q.get(), 2);
  u.cached_tokens = sqlite3_column_int64(q.get(), 3);
  return u;
}

StatusOr<std::vector<LedgerRow>> Ledger::rows(const Scope& scope, const std::string& tenant,
                                              int64_t since_unix_ms, int64_t until_unix_ms,
                                              int limit, int64_t after_cursor) {
  PAGODA_ASSIGN_OR_RETURN(std::string who, resolve_tenant(scope, tenant));
  if (limit < 1 || limit > kMaxPageRows) {
    return InvalidArgument("ledger page size must be in 1.." + std::to_string(kMaxPageRows) +
                           ", got " + std::to_string(limit));
  }
  const std::string sql = std::string("SELECT ") + kColumns + " FROM requests" +
                          where_clause(!who.empty()) + " AND cursor > ?4 ORDER BY cursor LIMIT ?5";
  std::lock_guard lock(reader_mu_);
  Stmt q;
  int rc = q.prepare(reader_db_, sql);
  if (rc != SQLITE_OK) return query_error(path_, reader_db_, rc);
  if (!who.empty()) sqlite3_bind_text(q.get(), 1, who.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(q.get(), 2, since_unix_ms);
  sqlite3_bind_int64(q.get(), 3, until_unix_ms);
  sqlite3_bind_int64(q.get(), 4, after_cursor);
  sqlite3_bind_int64(q.get(), 5, limit);
  std::vector<LedgerRow> out;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    sqlite3_stmt* s = q.get();
    LedgerRow r;
    r.cursor = sqlite3_column_int64(s, 0);
    r.request_id = column_text(s, 1);
    r.tenant = column_text(s, 2);
    r.model_id = column_text(s, 3);
    r.model_revision = column_text(s, 4);
    r.prompt_tokens = sqlite3_column_int64(s, 5);
    r.completion_tokens = sqlite3_column_int64(s, 6);
    r.cached_tokens = sqlite3_column_int64(s, 7);
    r.finish_reason = column_text(s, 8);
    r.policy_outcome = column_text(s, 9);
    r.received_unix_ms = sqlite3_column_int64(s, 10);
    r.finished_unix_ms = sqlite3_column_int64(s, 11);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return query_error(path_, reader_db_, rc);
  return out;
}

}  // namespace pagoda::ledger
