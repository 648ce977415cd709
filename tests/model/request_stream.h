// What a request's OutputChannel delivers, gathered until its final message: the tests of the
// Engine (tests/model, tests/cuda) read streams this one way.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace pagoda::testing {

struct Collected {
  std::vector<int> ids;
  std::string text;
  std::vector<TokenLogprobs> logprobs;
  int messages = 0;
  RequestOutput last;  // the final message (finish reason, usage, timings, timeline)
};

// Reads messages until one is final; a gap longer than `timeout` is a test failure (and returns
// what came). `check`, when given, sees every message first.
inline Collected collect(OutputChannel& ch, std::chrono::seconds timeout = std::chrono::seconds(60),
                         const std::function<void(const RequestOutput&)>& check = {}) {
  Collected c;
  for (;;) {
    std::optional<RequestOutput> out = ch.next(timeout);
    if (!out) {
      ADD_FAILURE() << "no output within " << timeout.count() << " s";
      return c;
    }
    if (check) check(*out);
    c.ids.insert(c.ids.end(), out->new_token_ids.begin(), out->new_token_ids.end());
    c.text += out->text;
    c.logprobs.insert(c.logprobs.end(), out->logprobs.begin(), out->logprobs.end());
    ++c.messages;
    if (out->finished) {
      c.last = std::move(*out);
      return c;
    }
  }
}

}  // namespace pagoda::testing
