#include "tests/e2e_cpp/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pagoda::e2e {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kListeningPrefix = "pagoda serve: listening on ";

int exit_code_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace

std::string bundled_model_dir() {
  return std::string(PAGODA_SOURCE_DIR) + "/assets/models/stories260K";
}

std::string pagoda_binary() {
  return PAGODA_BINARY;
}

bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status wait_until_idle(client::Client& client, std::chrono::milliseconds timeout) {
  client::ServerInfo last;
  Status last_error;
  const bool idle = poll_until(
      [&] {
        auto info = client.server_info();
        if (!info.ok()) {
          last_error = info.status();
          return false;
        }
        last = *info;
        return last.running == 0 && last.waiting == 0 && last.kv_blocks_in_use == 0;
      },
      timeout);
  if (idle) return OkStatus();
  return Internal("server not idle after " + std::to_string(timeout.count()) + " ms: running=" +
                  std::to_string(last.running) + " waiting=" + std::to_string(last.waiting) +
                  " kv_blocks_in_use=" + std::to_string(last.kv_blocks_in_use) +
                  (last_error.ok() ? "" : " last error: " + last_error.to_string()));
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int ignored = 0;
    ::waitpid(pid_, &ignored, 0);
    pid_ = -1;
  }
  if (reader_.joinable()) reader_.join();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

Status ServerProcess::start(const std::vector<std::string>& extra_args,
                            std::chrono::seconds timeout) {
  if (pid_ > 0) return FailedPrecondition("server already started");
  std::vector<std::string> args = {pagoda_binary(),     "serve",  "--model",
                                   bundled_model_dir(), "--port", "0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Internal(std::string("pipe2: ") + strerror(errno));
  // fork + exec rather than posix_spawn, for PR_SET_PDEATHSIG: a test binary that crashes
  // takes its server with it. (The signal follows the forking thread: servers are started
  // from the test's main thread.) Only async-signal-safe calls in the child.
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(fds[1], STDOUT_FILENO);  // the copy does not inherit O_CLOEXEC
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(fds[1]);
  stdout_fd_ = fds[0];
  if (pid_ < 0) {
    pid_ = -1;
    return Internal("fork: " + std::string(strerror(fork_errno)));
  }

  // The listening line, bounded by the deadline; EOF means the server died.
  const auto deadline = Clock::now() + timeout;
  std::string buffer;
  while (address_.empty()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return Internal("no listening line within " + std::to_string(timeout.count()) +
                      " s; stdout so far: " + buffer);
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char chunk[4096];
    const ssize_t n = ::read(stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) {
      auto code = wait(std::chrono::seconds(5));
      return Internal("server exited before listening (exit " +
                      (code.ok() ? std::to_string(*code) : code.status().to_string()) +
                      "); stdout: " + buffer);
    }
    buffer.append(chunk, static_cast<size_t>(n));
    for (size_t start = 0, end; (end = buffer.find('\n', start)) != std::string::npos;
         start = end + 1) {
      const std::string line = buffer.substr(start, end - start);
      if (line.rfind(kListeningPrefix, 0) == 0) {
        address_ = line.substr(std::strlen(kListeningPrefix));
        break;
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stdout_text_ = buffer;
  }
  reader_ = std::thread([this] { drain_stdout(); });

  // Readiness: SERVING after load and warm-up.
  auto client = connect();
  if (!client) return Internal("cannot connect to " + address_);
  Status last = Unavailable("no health answer yet");
  const bool ready = poll_until(
      [&] {
        client::CallOptions call;
        call.deadline = std::chrono::milliseconds(1000);
        auto serving = client->healthy(client::kReadinessService, call);
        last =
            serving.ok() ? (*serving ? OkStatus() : Unavailable("NOT_SERVING")) : serving.status();
        return last.ok();
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  if (!ready) return Internal("server at " + address_ + " not ready: " + last.to_string());
  return OkStatus();
}

void ServerProcess::drain_stdout() {
  char chunk[4096];
  while (true) {
    const ssize_t n = ::read(stdout_fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    stdout_text_.append(chunk, static_cast<size_t>(n));
  }
}

std::string ServerProcess::output() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stdout_text_;
}

std::unique_ptr<client::Client> ServerProcess::connect(const client::ClientOptions& options) const {
  auto client = client::Client::connect(address_, options);
  if (!client.ok()) return nullptr;
  return std::move(client).value();
}

void ServerProcess::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

StatusOr<int> ServerProcess::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return FailedPrecondition("no server process");
  int wait_status = 0;
  pid_t done = 0;
  poll_until(
      [&] {
        done = ::waitpid(pid_, &wait_status, WNOHANG);
        return done != 0;
      },
      timeout);
  if (done == 0) {
    return Unavailable("server still running after " + std::to_string(timeout.count()) + " ms");
  }
  if (done < 0) return Internal(std::string("waitpid: ") + strerror(errno));
  pid_ = -1;
  if (reader_.joinable()) reader_.join();
  return exit_code_of(wait_status);
}

StatusOr<int> ServerProcess::stop(std::chrono::seconds timeout) {
  signal(SIGTERM);
  auto code = wait(timeout);
  if (!code.ok() && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int ignored = 0;
    ::waitpid(pid_, &ignored, 0);
    pid_ = -1;
    return Internal("server ignored SIGTERM for " + std::to_string(timeout.count()) +
                    " s and was killed");
  }
  return code;
}

}  // namespace pagoda::e2e
