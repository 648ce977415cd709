#include <gtest/gtest.h>

#include <thread>

#include "engine/request.h"

namespace pagoda {
namespace {

RequestOutput chunk(std::vector<int> ids, std::string text, bool finished = false) {
  RequestOutput o;
  o.new_token_ids = std::move(ids);
  o.text = std::move(text);
  o.finished = finished;
  o.usage.completion_tokens = static_cast<int>(o.new_token_ids.size());
  if (finished) o.finish_reason = FinishReason::kLength;
  return o;
}

TEST(OutputChannelTest, NextMergedJoinsEverythingQueuedAndStopsAtTheEnd) {
  OutputChannel ch;
  ch.push(chunk({1}, "a"));
  ch.push(chunk({2, 3}, "bc"));
  ch.push(chunk({4}, "d", /*finished=*/true));
  ch.push(chunk({5}, "never"));  // after the final message: dropped
  auto merged = ch.next_merged(std::chrono::milliseconds(0));
  ASSERT_TRUE(merged.has_value());
  EXPECT_EQ(merged->new_token_ids, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(merged->text, "abcd");
  EXPECT_TRUE(merged->finished);
  EXPECT_EQ(merged->finish_reason, FinishReason::kLength);
  EXPECT_EQ(merged->usage.completion_tokens, 1);  // the latest usage, not a sum
  EXPECT_FALSE(ch.next(std::chrono::milliseconds(0)).has_value());
}

TEST(OutputChannelTest, NextWaitsForAProducerOnAnotherThread) {
  OutputChannel ch;
  std::thread producer([&] { ch.push(chunk({7}, "x", true)); });
  auto out = ch.next();  // blocks until pushed
  producer.join();
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->new_token_ids, (std::vector<int>{7}));
  EXPECT_TRUE(ch.closed());
}

}  // namespace
}  // namespace pagoda
