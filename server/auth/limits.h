// Per-tenant admission limits (server/auth/README.md has the semantics):
//  - requests_per_second: a token bucket (capacity `burst`), kept as GCRA in whole nanoseconds;
//  - tokens_per_minute: a sliding 60 s window; admission reserves prompt + max_tokens at the
//    admission time, release() corrects that entry to the actual prompt + completion tokens;
//  - max_concurrent_requests: admitted and not yet released;
//  - max_prompt_tokens / max_completion_tokens: per-request caps (never retryable).
// Every call takes `now` so that tests drive the clock. A rejected request changes no state.
// update() applies a reloaded keys file without losing what is running. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "server/auth/keys.h"

namespace pagoda::auth {

using LimitClock = std::chrono::steady_clock;
using LimitTime = LimitClock::time_point;

enum class LimitKind {
  kNone,
  kMaxPromptTokens,
  kMaxCompletionTokens,
  kMaxConcurrentRequests,
  kRequestsPerSecond,
  kTokensPerMinute,
};
// "max_prompt_tokens", ... (the keys-file field name); "none" for kNone.
const char* limit_name(LimitKind kind);

// What release() needs; returned by an admitted admit().
struct Ticket {
  std::string tenant;
  uint64_t id = 0;  // 0: not admitted
  int64_t reserved_tokens = 0;
};

struct Admission {
  Status status;                       // OK, kResourceExhausted (a limit), kNotFound (tenant)
  LimitKind limit = LimitKind::kNone;  // which limit refused
  // When a retry can succeed (as far as this limiter knows). nullopt: retrying the same request
  // will not help (a per-request cap, a reservation above tokens_per_minute), or the time is not
  // known (max_concurrent_requests: when a running request finishes).
  std::optional<std::chrono::nanoseconds> retry_after;
  Ticket ticket;

  bool ok() const { return status.ok(); }
  // retry_after rounded up to whole seconds (for a `retry-after` header), at least 1.
  std::optional<int64_t> retry_after_seconds() const;
};

struct TenantUsage {
  int64_t running = 0;           // admitted, not released
  int64_t tokens_in_window = 0;  // tokens_per_minute window sum at `now`
};

class Limiter {
 public:
  static constexpr std::chrono::nanoseconds kWindow = std::chrono::seconds(60);

  explicit Limiter(const std::vector<Tenant>& tenants);

  // `max_tokens`: the request's effective completion limit (after server defaults).
  Admission admit(std::string_view tenant, int64_t prompt_tokens, int64_t max_tokens,
                  LimitTime now);
  // At finish (any finish: completed, cancelled, failed): frees the concurrency slot and corrects
  // the reservation to the actual tokens. A second release of the same ticket, or of a ticket
  // that was never admitted, does nothing and returns kFailedPrecondition.
  Status release(const Ticket& ticket, int64_t prompt_tokens, int64_t completion_tokens,
                 LimitTime now);

  TenantUsage usage(std::string_view tenant, LimitTime now);

  // A reloaded keys file (SIGHUP). Tenants that stay keep their state: running requests (so the
  // concurrency count survives and their release() still works), the tokens_per_minute window,
  // and the rate bucket's spent tokens, re-expressed at the new rate. The new limits apply from
  // the next admit(); requests already admitted are never revoked, even when a new cap is below
  // what runs now. New tenants start empty. A removed tenant keeps only its running requests
  // until they are released; admit() for it is kUnavailable (the request authenticated just
  // before the reload: a retry authenticates against the new keys and gets UNAUTHENTICATED).
  void update(const std::vector<Tenant>& tenants, LimitTime now);

 private:
  struct WindowEntry {
    LimitTime at;
    uint64_t id;
    int64_t tokens;
  };
  struct State {
    TenantLimits limits;
    int64_t interval_ns = 0;         // 1 / requests_per_second
    int64_t tolerance_ns = 0;        // (burst - 1) * interval
    std::optional<LimitTime> tat;    // GCRA theoretical arrival time
    std::set<uint64_t> running;      // ticket ids admitted and not released
    std::deque<WindowEntry> window;  // ascending `at` (and id)
    int64_t window_sum = 0;
    bool removed = false;  // no longer in the keys file: kept only for release()
  };

  // Sets the limits and the rate bucket's derived constants (burst defaulted).
  static void set_limits(State& s, const TenantLimits& limits);
  void prune(State& s, LimitTime now);

  std::mutex mu_;
  std::map<std::string, State, std::less<>> tenants_;
  uint64_t next_id_ = 1;
};

}  // namespace pagoda::auth
