#include "server/auth/limits.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace pagoda::auth {
namespace {

using std::chrono::nanoseconds;

constexpr int64_t kMaxSpanNs = int64_t{100'000'000'000'000'000};  // ~3 years: no overflow

// "0.5 s", "12 s", "0.001 s": rounded up to the millisecond.
std::string seconds_text(nanoseconds d) {
  int64_t ms = (d.count() + 999'999) / 1'000'000;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ms / 1000),
                static_cast<long long>(ms % 1000));
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s + " s";
}

std::string number_text(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

Admission refuse(LimitKind kind, std::string message, std::optional<nanoseconds> retry_after) {
  Admission a;
  a.status = ResourceExhausted(std::move(message));
  a.limit = kind;
  a.retry_after = retry_after;
  return a;
}

}  // namespace

const char* limit_name(LimitKind kind) {
  switch (kind) {
    case LimitKind::kNone: return "none";
    case LimitKind::kMaxPromptTokens: return "max_prompt_tokens";
    case LimitKind::kMaxCompletionTokens: return "max_completion_tokens";
    case LimitKind::kMaxConcurrentRequests: return "max_concurrent_requests";
    case LimitKind::kRequestsPerSecond: return "requests_per_second";
    case LimitKind::kTokensPerMinute: return "tokens_per_minute";
  }
  return "unknown";
}

std::optional<int64_t> Admission::retry_after_seconds() const {
  if (!retry_after) return std::nullopt;
  int64_t s = (retry_after->count() + 999'999'999) / 1'000'000'000;
  return std::max<int64_t>(s, 1);
}

Limiter::Limiter(const std::vector<Tenant>& tenants) {
  for (const Tenant& t : tenants) {
    State s;
    set_limits(s, t.limits);
    tenants_.emplace(t.name, std::move(s));
  }
}

void Limiter::set_limits(State& s, const TenantLimits& limits) {
  s.limits = limits;
  s.interval_ns = 0;
  s.tolerance_ns = 0;
  if (limits.requests_per_second) {
    double rps = *limits.requests_per_second;
    double interval = std::round(1e9 / rps);
    s.interval_ns = static_cast<int64_t>(std::clamp(interval, 1.0, double(kMaxSpanNs)));
    int64_t burst = limits.burst.value_or(std::max<int64_t>(1, int64_t(std::ceil(rps))));
    s.limits.burst = burst;
    __int128 tol = static_cast<__int128>(burst - 1) * s.interval_ns;
    s.tolerance_ns = static_cast<int64_t>(std::min<__int128>(tol, kMaxSpanNs));
  }
}

void Limiter::update(const std::vector<Tenant>& tenants, LimitTime now) {
  std::lock_guard lock(mu_);
  std::set<std::string_view> listed;
  for (const Tenant& t : tenants) {
    listed.insert(t.name);
    State& s = tenants_[t.name];  // a new tenant starts empty
    const int64_t old_interval = s.interval_ns;
    set_limits(s, t.limits);
    s.removed = false;
    // The bucket: TAT - now is the time the spent tokens take to refill at the old rate. Keep
    // the number of spent tokens, not the time, so a tenant cannot burst again just because its
    // rate changed (and a slower rate does not forgive the requests it just made).
    if (s.interval_ns == 0 || old_interval == 0 || !s.tat || *s.tat <= now) {
      s.tat.reset();
    } else if (s.interval_ns != old_interval) {
      const long double spent = static_cast<long double>((*s.tat - now).count()) / old_interval;
      const long double debt = std::min<long double>(spent * s.interval_ns, kMaxSpanNs);
      s.tat = now + nanoseconds(static_cast<int64_t>(std::llround(debt)));
    }
  }
  for (auto& [name, s] : tenants_) {
    if (listed.count(name) || s.removed) continue;
    // Gone from the file: only running requests remain to be released. Whatever else it had is
    // dropped, so a tenant added back later under the same name starts with a full bucket.
    s.removed = true;
    set_limits(s, TenantLimits{});
    s.tat.reset();
    s.window.clear();
    s.window_sum = 0;
  }
}

void Limiter::prune(State& s, LimitTime now) {
  while (!s.window.empty() && s.window.front().at + kWindow <= now) {
    s.window_sum -= s.window.front().tokens;
    s.window.pop_front();
  }
}

Admission Limiter::admit(std::string_view tenant, int64_t prompt_tokens, int64_t max_tokens,
                         LimitTime now) {
  std::lock_guard lock(mu_);
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) {
    Admission a;
    a.status = NotFound("unknown tenant '" + std::string(tenant) + "'");
    return a;
  }
  if (it->second.removed) {
    Admission a;
    a.status = Unavailable("tenant '" + it->first +
                           "' was removed from the keys file while this request was "
                           "authenticated; retry");
    return a;
  }
  if (prompt_tokens < 0 || max_tokens < 0) {
    Admission a;
    a.status = InvalidArgument("negative token count");
    return a;
  }
  State& s = it->second;
  const TenantLimits& l = s.limits;
  const std::string who = "tenant '" + it->first + "': ";
  prune(s, now);

  if (l.max_prompt_tokens && prompt_tokens > *l.max_prompt_tokens) {
    return refuse(LimitKind::kMaxPromptTokens,
                  who + "prompt of " + std::to_string(prompt_tokens) +
                      " tokens is over the max_prompt_tokens limit (" +
                      std::to_string(*l.max_prompt_tokens) + "); not retryable: shorten the prompt",
                  std::nullopt);
  }
  if (l.max_completion_tokens && max_tokens > *l.max_completion_tokens) {
    return refuse(LimitKind::kMaxCompletionTokens,
                  who + "max_tokens " + std::to_string(max_tokens) +
                      " is over the max_completion_tokens limit (" +
                      std::to_string(*l.max_completion_tokens) +
                      "); not retryable: lower max_tokens",
                  std::nullopt);
  }
  const int64_t reserve = prompt_tokens + max_tokens;
  const std::string reserve_text = std::to_string(reserve) + " tokens (prompt " +
                                   std::to_string(prompt_tokens) + " + max_tokens " +
                                   std::to_string(max_tokens) + ")";
  if (l.tokens_per_minute && reserve > *l.tokens_per_minute) {
    return refuse(LimitKind::kTokensPerMinute,
                  who + "this request reserves " + reserve_text +
                      ", more than the tokens_per_minute limit (" +
                      std::to_string(*l.tokens_per_minute) +
                      ") allows; not retryable: lower max_tokens or shorten the prompt",
                  std::nullopt);
  }
  if (l.max_concurrent_requests &&
      static_cast<int64_t>(s.running.size()) >= *l.max_concurrent_requests) {
    return refuse(LimitKind::kMaxConcurrentRequests,
                  who + "max_concurrent_requests limit (" +
                      std::to_string(*l.max_concurrent_requests) +
                      ") reached: " + std::to_string(s.running.size()) +
                      " requests running; retry when one of them finishes",
                  std::nullopt);
  }

  // requests_per_second (GCRA): admitted when now >= TAT - tolerance.
  nanoseconds rps_wait{0};
  LimitTime tat = std::max(s.tat.value_or(now), now);
  if (s.interval_ns > 0) {
    LimitTime allowed_at = tat - nanoseconds(s.tolerance_ns);
    if (allowed_at > now) rps_wait = allowed_at - now;
  }
  // tokens_per_minute: the oldest entries leave the window first.
  nanoseconds tpm_wait{0};
  if (l.tokens_per_minute && s.window_sum + reserve > *l.tokens_per_minute) {
    int64_t used = s.window_sum;
    for (const WindowEntry& e : s.window) {
      used -= e.tokens;
      if (used + reserve <= *l.tokens_per_minute) {
        tpm_wait = e.at + kWindow - now;
        break;
      }
    }
  }
  if (rps_wait.count() > 0 || tpm_wait.count() > 0) {
    if (tpm_wait > rps_wait) {
      return refuse(LimitKind::kTokensPerMinute,
                    who + "tokens_per_minute limit (" + std::to_string(*l.tokens_per_minute) +
                        ") exceeded: " + std::to_string(s.window_sum) +
                        " tokens in the last 60 s, this request reserves " + reserve_text +
                        "; retry after " + seconds_text(tpm_wait),
                    tpm_wait);
    }
    return refuse(LimitKind::kRequestsPerSecond,
                  who + "requests_per_second limit (" + number_text(*l.requests_per_second) +
                      "/s, burst " + std::to_string(*l.burst) + ") exceeded; retry after " +
                      seconds_text(rps_wait),
                  rps_wait);
  }

  // Admitted: commit.
  if (s.interval_ns > 0) s.tat = tat + nanoseconds(s.interval_ns);
  Admission a;
  a.ticket = Ticket{it->first, next_id_++, reserve};
  s.running.insert(a.ticket.id);
  if (l.tokens_per_minute) {
    LimitTime at = s.window.empty() ? now : std::max(now, s.window.back().at);
    s.window.push_back(WindowEntry{at, a.ticket.id, reserve});
    s.window_sum += reserve;
  }
  return a;
}

Status Limiter::release(const Ticket& ticket, int64_t prompt_tokens, int64_t completion_tokens,
                        LimitTime now) {
  std::lock_guard lock(mu_);
  auto it = tenants_.find(ticket.tenant);
  if (it == tenants_.end() || it->second.running.erase(ticket.id) == 0) {
    return FailedPrecondition("release of a ticket that is not running (released twice?)");
  }
  State& s = it->second;
  prune(s, now);
  auto e = std::lower_bound(s.window.begin(), s.window.end(), ticket.id,
                            [](const WindowEntry& w, uint64_t id) { return w.id < id; });
  if (e != s.window.end() && e->id == ticket.id) {
    int64_t actual = std::max<int64_t>(0, prompt_tokens) + std::max<int64_t>(0, completion_tokens);
    s.window_sum += actual - e->tokens;
    e->tokens = actual;
  }
  return OkStatus();
}

TenantUsage Limiter::usage(std::string_view tenant, LimitTime now) {
  std::lock_guard lock(mu_);
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) return {};
  prune(it->second, now);
  return TenantUsage{static_cast<int64_t>(it->second.running.size()), it->second.window_sum};
}

}  // namespace pagoda::auth
