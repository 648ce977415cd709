// A real `pagoda serve` subprocess for end-to-end tests: started on port 0, its address read
// from the "pagoda serve: listening on HOST:PORT" line on its stdout, ready once the readiness
// health check says SERVING, stopped with SIGTERM.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/client.h"
#include "core/status.h"

// Readable gtest failure messages for the enums tests compare.
namespace pagoda {
inline void PrintTo(StatusCode code, std::ostream* os) {
  *os << status_code_name(code);
}
}  // namespace pagoda
namespace pagoda::client {
inline void PrintTo(RpcCode code, std::ostream* os) {
  *os << rpc_code_name(code);
}
inline void PrintTo(FinishReason reason, std::ostream* os) {
  *os << finish_reason_name(reason);
}
}  // namespace pagoda::client

namespace pagoda::e2e {

// The bundled model and the binary under test (compile definitions).
std::string bundled_model_dir();
std::string pagoda_binary();

class ServerProcess {
 public:
  ServerProcess() = default;
  ~ServerProcess();  // SIGKILLs a server still running
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Spawns `pagoda serve --model <bundled> --port 0 <extra_args>` and waits (bounded) for the
  // listening line and then for readiness. Errors say what the server printed.
  Status start(const std::vector<std::string>& extra_args = {},
               std::chrono::seconds timeout = std::chrono::seconds(60));

  // SIGTERM, then waits up to `timeout` for the exit. The exit code (or 128 + signal), or an
  // error when the process had to be killed.
  StatusOr<int> stop(std::chrono::seconds timeout = std::chrono::seconds(30));

  // Sends a signal without waiting.
  void signal(int sig);
  // Waits for the exit, bounded; the exit code as in stop().
  StatusOr<int> wait(std::chrono::milliseconds timeout);

  bool running() const { return pid_ > 0; }
  const std::string& address() const { return address_; }
  std::unique_ptr<client::Client> connect(const client::ClientOptions& options = {}) const;
  // What the server wrote to stdout (stderr goes to the test's own stderr).
  std::string output() const;

 private:
  void drain_stdout();

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
  mutable std::mutex mu_;
  std::string stdout_text_;
  std::thread reader_;
};

// Polls `condition` every few milliseconds until it holds or `timeout` passes; true if it held.
bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// Polls GetServerInfo until nothing runs or waits and no KV block is in use. On timeout, an
// error with the last numbers seen.
Status wait_until_idle(client::Client& client,
                       std::chrono::milliseconds timeout = std::chrono::seconds(20));

}  // namespace pagoda::e2e
