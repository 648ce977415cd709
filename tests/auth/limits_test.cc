#include "server/auth/limits.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace pagoda::auth {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

const LimitTime kT0 = LimitTime{} + std::chrono::hours(1000);
LimitTime at_ms(int64_t ms) {
  return kT0 + milliseconds(ms);
}

Limiter limiter(TenantLimits l) {
  return Limiter({Tenant{"acme", l}, Tenant{"free", TenantLimits{}}});
}

void expect_refused(const Admission& a, LimitKind kind, std::optional<nanoseconds> retry,
                    const std::string& text) {
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(a.limit, kind);
  EXPECT_EQ(a.retry_after, retry);
  EXPECT_NE(a.status.message().find(text), std::string::npos) << a.status.message();
  EXPECT_NE(a.status.message().find("tenant 'acme'"), std::string::npos) << a.status.message();
  EXPECT_NE(a.status.message().find(limit_name(kind)), std::string::npos) << a.status.message();
  EXPECT_EQ(a.ticket.id, 0u);
}

TEST(Limits, UnknownTenantAndUnlimitedTenant) {
  Limiter l = limiter({});
  Admission a = l.admit("nobody", 1, 1, kT0);
  EXPECT_EQ(a.status.code(), StatusCode::kNotFound);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(l.admit("free", 100000, 100000, kT0).ok());
  EXPECT_EQ(l.usage("free", kT0).running, 1000);
}

TEST(Limits, RequestsPerSecondBucketRefill) {
  TenantLimits tl;
  tl.requests_per_second = 2;  // one token per 500 ms, burst defaults to 2
  Limiter l = limiter(tl);
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(0)).ok());
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(0)).ok());
  expect_refused(l.admit("acme", 1, 1, at_ms(0)), LimitKind::kRequestsPerSecond, milliseconds(500),
                 "requests_per_second limit (2/s, burst 2) exceeded; retry after 0.5 s");
  // One nanosecond before the refill: still refused, with 1 ns to go.
  Admission early = l.admit("acme", 1, 1, at_ms(500) - nanoseconds(1));
  expect_refused(early, LimitKind::kRequestsPerSecond, nanoseconds(1), "retry after 0.001 s");
  EXPECT_EQ(early.retry_after_seconds(), 1);
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(500)).ok());
  expect_refused(l.admit("acme", 1, 1, at_ms(500)), LimitKind::kRequestsPerSecond,
                 milliseconds(500), "retry after 0.5 s");
  // A long idle period refills only up to the burst.
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(100000)).ok());
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(100000)).ok());
  expect_refused(l.admit("acme", 1, 1, at_ms(100000)), LimitKind::kRequestsPerSecond,
                 milliseconds(500), "retry after 0.5 s");
  // Steady rate: exactly one every 500 ms.
  for (int i = 1; i <= 10; ++i) {
    ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(100000 + 500 * i)).ok()) << i;
    expect_refused(l.admit("acme", 1, 1, at_ms(100000 + 500 * i + 499)),
                   LimitKind::kRequestsPerSecond, milliseconds(1), "retry after 0.001 s");
  }
}

TEST(Limits, RequestsPerSecondExplicitBurstAndFractionalRate) {
  TenantLimits tl;
  tl.requests_per_second = 0.25;  // one per 4 s
  tl.burst = 3;
  Limiter l = limiter(tl);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(0)).ok());
  Admission a = l.admit("acme", 1, 1, at_ms(1000));
  expect_refused(a, LimitKind::kRequestsPerSecond, seconds(3), "(0.25/s, burst 3)");
  EXPECT_EQ(a.retry_after_seconds(), 3);
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(4000)).ok());
}

TEST(Limits, TokensPerMinuteSlidingWindow) {
  TenantLimits tl;
  tl.tokens_per_minute = 1000;
  Limiter l = limiter(tl);
  ASSERT_TRUE(l.admit("acme", 100, 300, at_ms(0)).ok());      // 400 at t=0
  ASSERT_TRUE(l.admit("acme", 100, 200, at_ms(10000)).ok());  // 300 at t=10 s
  ASSERT_TRUE(l.admit("acme", 200, 100, at_ms(20000)).ok());  // 300 at t=20 s: window 1000
  EXPECT_EQ(l.usage("acme", at_ms(20000)).tokens_in_window, 1000);
  // 1 more token: the t=0 entry must leave the window, at t=60 s.
  expect_refused(l.admit("acme", 1, 0, at_ms(30000)), LimitKind::kTokensPerMinute, seconds(30),
                 "tokens_per_minute limit (1000) exceeded: 1000 tokens in the last 60 s, this "
                 "request reserves 1 tokens (prompt 1 + max_tokens 0); retry after 30 s");
  // 500 tokens: needs the t=0 and t=10 s entries gone, at t=70 s.
  expect_refused(l.admit("acme", 250, 250, at_ms(30000)), LimitKind::kTokensPerMinute, seconds(40),
                 "retry after 40 s");
  expect_refused(l.admit("acme", 1, 0, at_ms(59999)), LimitKind::kTokensPerMinute, milliseconds(1),
                 "retry after 0.001 s");
  // At exactly 60 s the t=0 entry is out of the window.
  EXPECT_EQ(l.usage("acme", at_ms(60000)).tokens_in_window, 600);
  ASSERT_TRUE(l.admit("acme", 400, 0, at_ms(60000)).ok());
  expect_refused(l.admit("acme", 1, 0, at_ms(60000)), LimitKind::kTokensPerMinute, seconds(10),
                 "retry after 10 s");
}

TEST(Limits, TokensPerMinuteCorrectedAtRelease) {
  TenantLimits tl;
  tl.tokens_per_minute = 1000;
  Limiter l = limiter(tl);
  Admission a = l.admit("acme", 100, 900, at_ms(0));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.ticket.reserved_tokens, 1000);
  expect_refused(l.admit("acme", 10, 0, at_ms(1000)), LimitKind::kTokensPerMinute, seconds(59),
                 "retry after 59 s");
  // Finished after 50 completion tokens: 850 tokens go back to the window.
  ASSERT_TRUE(l.release(a.ticket, 100, 50, at_ms(2000)).ok());
  EXPECT_EQ(l.usage("acme", at_ms(2000)).tokens_in_window, 150);
  ASSERT_TRUE(l.admit("acme", 850, 0, at_ms(2000)).ok());
  expect_refused(l.admit("acme", 1, 0, at_ms(2000)), LimitKind::kTokensPerMinute, seconds(58),
                 "retry after 58 s");
  // The corrected entry still leaves the window 60 s after its admission.
  EXPECT_EQ(l.usage("acme", at_ms(60000)).tokens_in_window, 850);
}

TEST(Limits, ReleaseAfterTheWindowAndTwice) {
  TenantLimits tl;
  tl.tokens_per_minute = 100;
  tl.max_concurrent_requests = 1;
  Limiter l = limiter(tl);
  Admission a = l.admit("acme", 10, 90, at_ms(0));
  ASSERT_TRUE(a.ok());
  // A request that outlives the window: its entry is gone; releasing changes nothing else.
  ASSERT_TRUE(l.release(a.ticket, 10, 90, at_ms(120000)).ok());
  EXPECT_EQ(l.usage("acme", at_ms(120000)).tokens_in_window, 0);
  EXPECT_EQ(l.usage("acme", at_ms(120000)).running, 0);
  Status again = l.release(a.ticket, 10, 90, at_ms(120000));
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(l.release(Ticket{}, 0, 0, at_ms(0)).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(l.admit("acme", 10, 90, at_ms(120000)).ok());
}

TEST(Limits, TokensPerMinuteReservationAboveLimitIsNotRetryable) {
  TenantLimits tl;
  tl.tokens_per_minute = 1000;
  Limiter l = limiter(tl);
  ASSERT_TRUE(l.admit("acme", 500, 500, at_ms(0)).ok());  // exactly the limit: fine on its own
  expect_refused(l.admit("acme", 501, 500, at_ms(0)), LimitKind::kTokensPerMinute, std::nullopt,
                 "reserves 1001 tokens (prompt 501 + max_tokens 500), more than the "
                 "tokens_per_minute limit (1000) allows; not retryable");
}

TEST(Limits, ConcurrencyReleasedAtFinish) {
  TenantLimits tl;
  tl.max_concurrent_requests = 2;
  Limiter l = limiter(tl);
  Admission a = l.admit("acme", 1, 1, at_ms(0));
  Admission b = l.admit("acme", 1, 1, at_ms(0));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a.ticket.id, b.ticket.id);
  Admission c = l.admit("acme", 1, 1, at_ms(0));
  expect_refused(c, LimitKind::kMaxConcurrentRequests, std::nullopt,
                 "max_concurrent_requests limit (2) reached: 2 requests running; retry when one "
                 "of them finishes");
  EXPECT_FALSE(c.retry_after_seconds());
  ASSERT_TRUE(l.release(a.ticket, 1, 1, at_ms(1)).ok());
  Admission d = l.admit("acme", 1, 1, at_ms(1));
  ASSERT_TRUE(d.ok());
  expect_refused(l.admit("acme", 1, 1, at_ms(1)), LimitKind::kMaxConcurrentRequests, std::nullopt,
                 "reached");
  // Other tenants are not affected.
  ASSERT_TRUE(l.admit("free", 1, 1, at_ms(1)).ok());
}

TEST(Limits, PromptAndCompletionCapsAtTheBoundary) {
  TenantLimits tl;
  tl.max_prompt_tokens = 100;
  tl.max_completion_tokens = 50;
  Limiter l = limiter(tl);
  ASSERT_TRUE(l.admit("acme", 100, 50, at_ms(0)).ok());
  expect_refused(l.admit("acme", 101, 50, at_ms(0)), LimitKind::kMaxPromptTokens, std::nullopt,
                 "prompt of 101 tokens is over the max_prompt_tokens limit (100); not retryable");
  expect_refused(l.admit("acme", 100, 51, at_ms(0)), LimitKind::kMaxCompletionTokens, std::nullopt,
                 "max_tokens 51 is over the max_completion_tokens limit (50); not retryable");
  EXPECT_EQ(l.admit("acme", -1, 1, at_ms(0)).status.code(), StatusCode::kInvalidArgument);
}

TEST(Limits, RefusedRequestsConsumeNothing) {
  TenantLimits tl;
  tl.requests_per_second = 1;
  tl.tokens_per_minute = 100;
  tl.max_concurrent_requests = 1;
  Limiter l = limiter(tl);
  Admission a = l.admit("acme", 50, 0, at_ms(0));
  ASSERT_TRUE(a.ok());
  // Refused by concurrency: no rps token and no window tokens spent.
  for (int i = 0; i < 5; ++i) {
    expect_refused(l.admit("acme", 10, 0, at_ms(1000)), LimitKind::kMaxConcurrentRequests,
                   std::nullopt, "reached");
  }
  EXPECT_EQ(l.usage("acme", at_ms(1000)).tokens_in_window, 50);
  ASSERT_TRUE(l.release(a.ticket, 50, 0, at_ms(1000)).ok());
  Admission b = l.admit("acme", 50, 0, at_ms(1000));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(l.release(b.ticket, 50, 0, at_ms(1000)).ok());
  // rps says 1 s, tpm says 59 s: the longer wait is reported, so the retry can succeed.
  expect_refused(l.admit("acme", 10, 0, at_ms(1000)), LimitKind::kTokensPerMinute, seconds(59),
                 "retry after 59 s");
  // rps says 1 s, tpm fits: rps is reported.
  TenantLimits t2;
  t2.requests_per_second = 1;
  t2.tokens_per_minute = 1000;
  Limiter l2 = limiter(t2);
  ASSERT_TRUE(l2.admit("acme", 10, 0, at_ms(0)).ok());
  expect_refused(l2.admit("acme", 10, 0, at_ms(250)), LimitKind::kRequestsPerSecond,
                 milliseconds(750), "retry after 0.75 s");
}

TEST(Limits, RetryAfterSecondsRoundsUp) {
  Admission a;
  a.retry_after = milliseconds(1);
  EXPECT_EQ(a.retry_after_seconds(), 1);
  a.retry_after = milliseconds(2000);
  EXPECT_EQ(a.retry_after_seconds(), 2);
  a.retry_after = milliseconds(2001);
  EXPECT_EQ(a.retry_after_seconds(), 3);
  a.retry_after = std::nullopt;
  EXPECT_FALSE(a.retry_after_seconds());
}

TEST(Limits, ConcurrentAdmitsNeverExceedTheLimit) {
  TenantLimits tl;
  tl.max_concurrent_requests = 3;
  Limiter l = limiter(tl);
  std::atomic<int> in_flight{0}, max_seen{0}, admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        Admission a = l.admit("acme", 1, 1, kT0);
        if (!a.ok()) {
          EXPECT_EQ(a.limit, LimitKind::kMaxConcurrentRequests);
          continue;
        }
        int now = ++in_flight;
        int prev = max_seen.load();
        while (now > prev && !max_seen.compare_exchange_weak(prev, now)) {
        }
        ++admitted;
        std::this_thread::yield();
        --in_flight;
        EXPECT_TRUE(l.release(a.ticket, 1, 1, kT0).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(max_seen.load(), 3);
  EXPECT_GT(admitted.load(), 0);
  EXPECT_EQ(l.usage("acme", kT0).running, 0);
}

// --- update(): a reloaded keys file -----------------------------------------------------------

TEST(LimitsUpdate, KeptTenantKeepsItsRunningRequestsUnderTheNewCap) {
  TenantLimits tl;
  tl.max_concurrent_requests = 2;
  Limiter l = limiter(tl);
  Admission a = l.admit("acme", 1, 1, kT0), b = l.admit("acme", 1, 1, kT0);
  ASSERT_TRUE(a.ok() && b.ok());
  expect_refused(l.admit("acme", 1, 1, kT0), LimitKind::kMaxConcurrentRequests, std::nullopt,
                 "limit (2) reached: 2 requests running");

  tl.max_concurrent_requests = 3;
  l.update({Tenant{"acme", tl}, Tenant{"free", {}}}, kT0);
  EXPECT_EQ(l.usage("acme", kT0).running, 2);  // the count survived
  Admission c = l.admit("acme", 1, 1, kT0);
  ASSERT_TRUE(c.ok()) << c.status.to_string();
  expect_refused(l.admit("acme", 1, 1, kT0), LimitKind::kMaxConcurrentRequests, std::nullopt,
                 "limit (3) reached: 3 requests running");

  // A lower cap revokes nothing: the three run on, and new ones wait until fewer than 1 run.
  tl.max_concurrent_requests = 1;
  l.update({Tenant{"acme", tl}, Tenant{"free", {}}}, kT0);
  EXPECT_EQ(l.usage("acme", kT0).running, 3);
  ASSERT_TRUE(l.release(a.ticket, 1, 1, kT0).ok());  // tickets from before the reload
  ASSERT_TRUE(l.release(b.ticket, 1, 1, kT0).ok());
  expect_refused(l.admit("acme", 1, 1, kT0), LimitKind::kMaxConcurrentRequests, std::nullopt,
                 "limit (1) reached: 1 requests running");
  ASSERT_TRUE(l.release(c.ticket, 1, 1, kT0).ok());
  EXPECT_TRUE(l.admit("acme", 1, 1, kT0).ok());
  EXPECT_EQ(l.release(a.ticket, 1, 1, kT0).code(), StatusCode::kFailedPrecondition);
}

TEST(LimitsUpdate, ChangedAddedAndRemovedLimitsApplyToTheNextAdmit) {
  TenantLimits tl;
  tl.max_completion_tokens = 10;
  Limiter l = limiter(tl);
  ASSERT_TRUE(l.admit("acme", 1, 8, kT0).ok());
  tl.max_completion_tokens = 5;
  tl.max_prompt_tokens = 3;
  l.update({Tenant{"acme", tl}}, kT0);
  expect_refused(l.admit("acme", 1, 8, kT0), LimitKind::kMaxCompletionTokens, std::nullopt,
                 "over the max_completion_tokens limit (5)");
  expect_refused(l.admit("acme", 4, 1, kT0), LimitKind::kMaxPromptTokens, std::nullopt,
                 "over the max_prompt_tokens limit (3)");
  l.update({Tenant{"acme", {}}}, kT0);  // no limits section: unlimited
  EXPECT_TRUE(l.admit("acme", 1000, 1000, kT0).ok());
}

TEST(LimitsUpdate, TokensPerMinuteWindowSurvives) {
  TenantLimits tl;
  tl.tokens_per_minute = 100;
  Limiter l = limiter(tl);
  Admission a = l.admit("acme", 20, 60, at_ms(0));  // reserves 80
  ASSERT_TRUE(a.ok());
  tl.tokens_per_minute = 120;
  l.update({Tenant{"acme", tl}}, at_ms(1000));
  EXPECT_EQ(l.usage("acme", at_ms(1000)).tokens_in_window, 80);
  expect_refused(l.admit("acme", 20, 30, at_ms(1000)), LimitKind::kTokensPerMinute, seconds(59),
                 "tokens_per_minute limit (120) exceeded: 80 tokens");
  ASSERT_TRUE(l.admit("acme", 20, 20, at_ms(1000)).ok());  // 80 + 40 = 120 fits the new limit
  // The correction at release still finds its entry from before the reload.
  ASSERT_TRUE(l.release(a.ticket, 20, 5, at_ms(2000)).ok());
  EXPECT_EQ(l.usage("acme", at_ms(2000)).tokens_in_window, 25 + 40);
}

TEST(LimitsUpdate, RateChangeKeepsTheSpentTokensNotTheWait) {
  TenantLimits tl;
  tl.requests_per_second = 1;
  tl.burst = 2;
  Limiter l = limiter(tl);
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(0)).ok());
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(0)).ok());  // the bucket is empty
  // Twice the rate: the two spent tokens now refill in 1 s, not 2 s; one is back after 0.5 s.
  tl.requests_per_second = 2;
  l.update({Tenant{"acme", tl}}, at_ms(0));
  expect_refused(l.admit("acme", 1, 1, at_ms(0)), LimitKind::kRequestsPerSecond, milliseconds(500),
                 "requests_per_second limit (2/s, burst 2) exceeded; retry after 0.5 s");
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(500)).ok());
  // No rate any more: nothing to wait for; a rate added back starts with a full bucket.
  l.update({Tenant{"acme", {}}}, at_ms(500));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(500)).ok());
  tl.requests_per_second = 1;
  l.update({Tenant{"acme", tl}}, at_ms(500));
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(500)).ok());
  ASSERT_TRUE(l.admit("acme", 1, 1, at_ms(500)).ok());
  expect_refused(l.admit("acme", 1, 1, at_ms(500)), LimitKind::kRequestsPerSecond, seconds(1),
                 "retry after 1 s");
}

TEST(LimitsUpdate, NewAndRemovedTenants) {
  TenantLimits tl;
  tl.max_concurrent_requests = 1;
  Limiter l = limiter(tl);
  EXPECT_EQ(l.admit("initech", 1, 1, kT0).status.code(), StatusCode::kNotFound);
  Admission running = l.admit("acme", 1, 1, kT0);
  ASSERT_TRUE(running.ok());

  l.update({Tenant{"free", {}}, Tenant{"initech", {}}}, kT0);  // acme removed, initech added
  EXPECT_TRUE(l.admit("initech", 1, 1, kT0).ok());
  // A request that authenticated as acme just before the reload: UNAVAILABLE, so that its retry
  // meets the new keys (and UNAUTHENTICATED).
  Admission late = l.admit("acme", 1, 1, kT0);
  EXPECT_EQ(late.status.code(), StatusCode::kUnavailable);
  EXPECT_NE(late.status.message().find("tenant 'acme' was removed"), std::string::npos)
      << late.status.message();
  // The request running when acme was removed finishes normally.
  EXPECT_EQ(l.usage("acme", kT0).running, 1);
  EXPECT_TRUE(l.release(running.ticket, 1, 1, kT0).ok());
  EXPECT_EQ(l.usage("acme", kT0).running, 0);

  // Added back: admitted again, under the limits the file gives it now.
  tl.max_concurrent_requests = 2;
  l.update({Tenant{"acme", tl}}, kT0);
  ASSERT_TRUE(l.admit("acme", 1, 1, kT0).ok());
  ASSERT_TRUE(l.admit("acme", 1, 1, kT0).ok());
  expect_refused(l.admit("acme", 1, 1, kT0), LimitKind::kMaxConcurrentRequests, std::nullopt,
                 "limit (2) reached");
}

}  // namespace
}  // namespace pagoda::auth
