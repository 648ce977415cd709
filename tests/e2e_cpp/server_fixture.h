// One real server per test suite: a suite derives from ServerSuite<Args> and its tests use
// server() and client(). The server starts in SetUpTestSuite and stops (SIGTERM, exit code 0
// checked) in TearDownTestSuite, after checking that it is still serving and idle — every
// suite's abuse must leave it healthy.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "clients/cpp/client.h"
#include "tests/e2e_cpp/server_process.h"

namespace pagoda::e2e {

class ServerSuiteBase : public ::testing::Test {
 protected:
  static void start_suite_server(const std::vector<std::string>& args) {
    server_ = std::make_unique<ServerProcess>();
    const Status status = server_->start(args);
    if (!status.ok()) {
      start_error_ = status.to_string();
      return;
    }
    start_error_.clear();
    client_ = server_->connect();
  }

  static void stop_suite_server() {
    if (server_ && server_->running() && client_) {
      auto serving = client_->healthy(client::kReadinessService);
      EXPECT_TRUE(serving.ok() && *serving)
          << "server not serving at the end of the suite: "
          << (serving.ok() ? "NOT_SERVING" : serving.status().to_string());
      const Status idle = wait_until_idle(*client_);
      EXPECT_TRUE(idle.ok()) << idle.to_string();
    }
    client_.reset();
    if (server_ && server_->running()) {
      auto code = server_->stop();
      EXPECT_TRUE(code.ok()) << code.status().to_string();
      if (code.ok()) {
        EXPECT_EQ(*code, 0) << "pagoda serve exit code after SIGTERM";
      }
    }
    server_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(start_error_.empty()) << "pagoda serve did not start: " << start_error_;
    ASSERT_NE(client_, nullptr) << "could not connect to " << server_->address();
  }

  static ServerProcess& server() { return *server_; }
  static client::Client& client() { return *client_; }

 private:
  static inline std::unique_ptr<ServerProcess> server_;
  static inline std::unique_ptr<client::Client> client_;
  static inline std::string start_error_;
};

// Default server flags for suites: a queue that holds every test's burst.
inline std::vector<std::string> default_server_args() {
  return {"--max-queue-requests", "1024"};
}

class ServerSuite : public ServerSuiteBase {
 protected:
  static void SetUpTestSuite() { start_suite_server(default_server_args()); }
  static void TearDownTestSuite() { stop_suite_server(); }
};

}  // namespace pagoda::e2e
