// Request lifecycles against a real `pagoda serve`: cancellation from the client, deadlines,
// 200 concurrent streams, and SIGTERM draining. After every abort the server must free
// everything: GetServerInfo shows nothing running or waiting and no KV block in use (polled,
// bounded).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e_cpp/server_fixture.h"

namespace pagoda::e2e {
namespace {

using client::Chunk;
using client::FinishReason;
using client::GenerateOptions;
using client::GenerateResult;
using client::RpcCode;
using std::chrono::milliseconds;

// As long as the context allows, so that it is still running when aborted.
GenerateOptions long_request(uint64_t seed) {
  GenerateOptions o;
  o.text = "Once upon a time";
  o.temperature = 0.8f;
  o.seed = seed;
  o.ignore_eos = true;
  o.max_tokens = 480;
  return o;
}

class LifecycleTest : public ServerSuite {};

TEST_F(LifecycleTest, CancelFromTheCallbackEndsTheStreamAndFreesEverything) {
  int seen = 0;
  GenerateResult result;
  const Status status = client().generate(
      long_request(1), [&](const Chunk&) { return ++seen < 3; }, &result);
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status.to_string();
  EXPECT_EQ(client::rpc_code(status), RpcCode::kCancelled);
  EXPECT_EQ(seen, 3) << "no callback after it returned false";
  EXPECT_EQ(result.finish_reason, FinishReason::kCancelled);
  EXPECT_LT(result.usage.completion_tokens, 480);
  const Status idle = wait_until_idle(client());
  EXPECT_TRUE(idle.ok()) << idle.to_string();

  // Many at once, each cancelled after a different number of chunks.
  constexpr int kStreams = 16;
  std::vector<Status> statuses(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      int n = 0;
      statuses[i] = client().generate(
          long_request(100 + i), [&](const Chunk&) { return ++n <= i; }, nullptr);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_EQ(statuses[i].code(), StatusCode::kCancelled) << i << ": " << statuses[i].to_string();
  }
  const Status idle_again = wait_until_idle(client());
  EXPECT_TRUE(idle_again.ok()) << idle_again.to_string();
}

// Calls `call(deadline)` with a deadline of `first`, then shorter ones down to 1 ms, until one
// ends in an error (timing on a loaded machine varies); that error, or the last status.
Status with_shrinking_deadline(milliseconds first,
                               const std::function<Status(milliseconds)>& call) {
  for (milliseconds deadline = std::max(first, milliseconds(1));; deadline /= 4) {
    deadline = std::max(deadline, milliseconds(1));
    const Status status = call(deadline);
    if (!status.ok() || deadline == milliseconds(1)) return status;
  }
}

TEST_F(LifecycleTest, ShortDeadlineIsDeadlineExceededAndTheServerAborts) {
  // The first deadline is a fraction of what the request takes here, to strike mid-way.
  const auto start = std::chrono::steady_clock::now();
  GenerateResult alone;
  const Status full = client().generate(long_request(7), nullptr, &alone);
  ASSERT_TRUE(full.ok()) << full.to_string();
  const auto took =
      std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);

  GenerateResult partial;
  const Status streamed = with_shrinking_deadline(took / 4, [&](milliseconds deadline) {
    GenerateOptions options = long_request(7);
    options.call.deadline = deadline;
    return client().generate(options, nullptr, &partial);
  });
  EXPECT_EQ(client::rpc_code(streamed), RpcCode::kDeadlineExceeded) << streamed.to_string();
  EXPECT_LT(partial.text.size(), alone.text.size());
  Status idle = wait_until_idle(client());
  EXPECT_TRUE(idle.ok()) << idle.to_string();

  const Status unary = with_shrinking_deadline(took / 4, [&](milliseconds deadline) {
    GenerateOptions options = long_request(7);
    options.call.deadline = deadline;
    return client().complete(options).status();
  });
  EXPECT_EQ(client::rpc_code(unary), RpcCode::kDeadlineExceeded) << unary.to_string();
  idle = wait_until_idle(client());
  EXPECT_TRUE(idle.ok()) << idle.to_string();
}

// 200 streams at once, a mix of greedy and seeded sampling over 8 distinct requests: each must
// give exactly the text (and ids) it gives alone.
TEST_F(LifecycleTest, TwoHundredConcurrentStreamsGiveTheTextEachGivesAlone) {
  const std::vector<std::string> prompts = {"Once upon a time",
                                            "Lily and Ben went to the park",
                                            "The cat",
                                            "One day, a little boy",
                                            "Tom had a red ball",
                                            "She was happy",
                                            "The sun was",
                                            "Mom said"};
  const int kDistinct = static_cast<int>(prompts.size());
  auto options_for = [&](int k) {
    GenerateOptions o;
    o.text = prompts[k];
    o.max_tokens = 24 + 8 * (k % 4);
    o.return_token_ids = true;
    if (k % 2 == 0) {
      o.temperature = 0.0f;
    } else {
      o.temperature = 0.9f;
      o.seed = 1000 + k;
    }
    return o;
  };
  std::vector<GenerateResult> alone(kDistinct);
  for (int k = 0; k < kDistinct; ++k) {
    const Status status = client().generate(options_for(k), nullptr, &alone[k]);
    ASSERT_TRUE(status.ok()) << status.to_string();
    ASSERT_FALSE(alone[k].text.empty());
  }

  constexpr int kStreams = 200;
  std::vector<GenerateResult> results(kStreams);
  std::vector<Status> statuses(kStreams);
  std::latch go(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      const GenerateOptions options = options_for(i % kDistinct);
      go.arrive_and_wait();
      statuses[i] = client().generate(options, nullptr, &results[i]);
    });
  }
  for (auto& t : threads) t.join();
  int failures = 0;
  for (int i = 0; i < kStreams; ++i) {
    const GenerateResult& expected = alone[i % kDistinct];
    EXPECT_TRUE(statuses[i].ok()) << "stream " << i << ": " << statuses[i].to_string();
    EXPECT_EQ(results[i].text, expected.text) << "stream " << i;
    EXPECT_EQ(results[i].token_ids, expected.token_ids) << "stream " << i;
    EXPECT_EQ(results[i].finish_reason, expected.finish_reason) << "stream " << i;
    if (!statuses[i].ok() || results[i].text != expected.text) ++failures;
    if (failures > 5) break;  // enough to see the pattern
  }
  const Status idle = wait_until_idle(client());
  EXPECT_TRUE(idle.ok()) << idle.to_string();
}

// SIGTERM: readiness NOT_SERVING at once, new requests UNAVAILABLE, in-flight requests finish,
// exit code 0. Its own server: this suite ends it.
TEST(DrainTest, SigtermTurnsNotServingFinishesInFlightAndExitsZero) {
  ServerProcess server;
  const Status started = server.start({"--drain-timeout", "60", "--max-queue-requests", "1024"});
  ASSERT_TRUE(started.ok()) << started.to_string();
  auto c = server.connect();
  ASSERT_NE(c, nullptr);

  // Enough in-flight work that the drain takes a while.
  constexpr int kInFlight = 48;
  std::atomic<int> first_chunks{0};
  std::vector<Status> statuses(kInFlight);
  std::vector<GenerateResult> results(kInFlight);
  std::vector<std::thread> threads;
  for (int i = 0; i < kInFlight; ++i) {
    threads.emplace_back([&, i] {
      bool counted = false;
      statuses[i] = c->generate(
          long_request(i),
          [&](const Chunk&) {
            if (!counted) ++first_chunks, counted = true;
            return true;
          },
          &results[i]);
    });
  }
  ASSERT_TRUE(poll_until([&] { return first_chunks.load() == kInFlight; }, milliseconds(30000)))
      << first_chunks.load() << " of " << kInFlight << " streams started";

  server.signal(SIGTERM);
  bool not_serving = false;
  Status last;
  poll_until(
      [&] {
        auto serving = c->healthy(client::kReadinessService);
        last = serving.status();
        not_serving = serving.ok() && !*serving;
        return not_serving || !serving.ok();
      },
      milliseconds(10000));
  EXPECT_TRUE(not_serving) << "readiness after SIGTERM: " << last.to_string();
  auto liveness = c->healthy(client::kLivenessService);
  if (not_serving) {
    EXPECT_TRUE(liveness.ok()) << "liveness while draining: " << liveness.status().to_string();
  }

  GenerateOptions late;
  late.text = "Too late";
  late.max_tokens = 4;
  auto refused = c->complete(late);
  EXPECT_FALSE(refused.ok()) << "a request admitted while draining";
  if (!refused.ok()) {
    EXPECT_EQ(client::rpc_code(refused.status()), RpcCode::kUnavailable)
        << refused.status().to_string();
  }

  for (auto& t : threads) t.join();
  for (int i = 0; i < kInFlight; ++i) {
    EXPECT_TRUE(statuses[i].ok()) << "in-flight " << i << ": " << statuses[i].to_string();
    EXPECT_EQ(results[i].finish_reason, FinishReason::kLength) << "in-flight " << i;
    EXPECT_EQ(results[i].usage.completion_tokens, 480) << "in-flight " << i;
  }
  auto code = server.wait(milliseconds(30000));
  ASSERT_TRUE(code.ok()) << code.status().to_string();
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace pagoda::e2e
