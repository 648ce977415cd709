#include "server/metrics/http_server.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "server/metrics/metrics.h"

namespace pagoda::metrics {

namespace {

using Clock = std::chrono::steady_clock;

// After the response is written the server half-closes and reads (and drops) what the client
// still sends for at most this long, so that unread request bytes do not turn close() into a
// reset that could destroy the response before the client reads it.
constexpr std::chrono::milliseconds kMaxLinger{1000};

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
  }
  return "Unknown";
}

std::string serialize(const HttpResponse& r, bool allow_header) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) +
                    "\r\nContent-Type: " + r.content_type +
                    "\r\nContent-Length: " + std::to_string(r.body.size()) +
                    "\r\nCache-Control: no-store\r\nConnection: close\r\n";
  if (allow_header) out += "Allow: GET\r\n";
  out += "\r\n";
  out += r.body;
  return out;
}

HttpResponse text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

struct Conn {
  enum class State { kReading, kWriting, kLingering, kDone };
  int fd = -1;
  State state = State::kReading;
  std::string in, out;
  size_t sent = 0;
  Clock::time_point deadline;
};

void close_fd(int* fd) {
  if (*fd >= 0) ::close(*fd);
  *fd = -1;
}

}  // namespace

const char* serving_status_name(ServingStatus s) {
  switch (s) {
    case ServingStatus::kUnknown: return "UNKNOWN";
    case ServingStatus::kServing: return "SERVING";
    case ServingStatus::kNotServing: return "NOT_SERVING";
  }
  return "UNKNOWN";
}

void add_probe_routes(HttpServer* server, const Registry* registry,
                      std::function<ServingStatus()> readiness) {
  server->handle("/metrics", [registry] {
    HttpResponse r;
    r.content_type = std::string(kExpositionContentType);
    r.body = registry->render();
    return r;
  });
  server->handle("/healthz", [] { return text(200, "ok\n"); });
  server->handle("/readyz", [readiness = std::move(readiness)] {
    ServingStatus s = readiness ? readiness() : ServingStatus::kUnknown;
    return text(s == ServingStatus::kServing ? 200 : 503,
                std::string(serving_status_name(s)) + "\n");
  });
}

Status HttpServer::start() {
  if (listen_fd_ >= 0 || stopping_.load()) return FailedPrecondition("HTTP server already started");
  if (options_.port < 0 || options_.port > 65535) {
    return InvalidArgument("HTTP port " + std::to_string(options_.port) + " is out of range");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addrs = nullptr;
  const std::string port = std::to_string(options_.port);
  const char* host = options_.host.empty() ? nullptr : options_.host.c_str();
  if (int rc = ::getaddrinfo(host, port.c_str(), &hints, &addrs); rc != 0) {
    return InvalidArgument("HTTP host '" + options_.host + "': " + ::gai_strerror(rc));
  }
  std::string error = "no address";
  for (addrinfo* a = addrs; a != nullptr; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      listen_fd_ = fd;
      break;
    }
    error = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(addrs);
  if (listen_fd_ < 0) {
    return Unavailable("cannot listen on " + options_.host + ":" + port + ": " + error);
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                      : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  if (::pipe2(wake_fds_, O_NONBLOCK | O_CLOEXEC) != 0) {
    close_fd(&listen_fd_);
    return Internal(std::string("pipe2: ") + std::strerror(errno));
  }
  thread_ = std::thread([this] { loop(); });
  return OkStatus();
}

void HttpServer::stop() {
  stopping_.store(true);
  if (thread_.joinable()) {
    char b = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fds_[1], &b, 1);
    thread_.join();
  }
  close_fd(&listen_fd_);
  close_fd(&wake_fds_[0]);
  close_fd(&wake_fds_[1]);
}

void HttpServer::loop() {
  std::vector<Conn> conns;
  std::vector<pollfd> pfds;
  const auto max_conns = static_cast<size_t>(std::max(1, options_.max_connections));

  // Builds the response for a complete request head (or an error) and starts writing it.
  auto respond = [&](Conn& c, const HttpResponse& r, bool allow_header) {
    c.out = serialize(r, allow_header);
    c.sent = 0;
    c.in.clear();
    c.state = Conn::State::kWriting;
    c.deadline = Clock::now() + options_.read_timeout;
  };
  auto dispatch = [&](Conn& c, size_t head_end) {
    std::string_view head(c.in.data(), head_end);
    std::string_view line = head.substr(0, head.find('\n'));
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
        line.substr(sp2 + 1).substr(0, 7) != "HTTP/1.") {
      return respond(c, text(400, "bad request\n"), false);
    }
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    target = target.substr(0, target.find_first_of("?#"));
    if (method != "GET") return respond(c, text(405, "method not allowed\n"), true);
    auto it = routes_.find(std::string(target));
    if (it == routes_.end()) return respond(c, text(404, "not found\n"), false);
    respond(c, it->second(), false);
  };
  auto on_readable = [&](Conn& c) {
    char buf[4096];
    while (c.state == Conn::State::kReading || c.state == Conn::State::kLingering) {
      ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n == 0) {  // the client closed (before finishing its request, or after the response)
        c.state = Conn::State::kDone;
        return;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) c.state = Conn::State::kDone;
        return;
      }
      if (c.state == Conn::State::kLingering) continue;  // dropped
      const size_t scan_from = c.in.size() >= 3 ? c.in.size() - 3 : 0;
      c.in.append(buf, static_cast<size_t>(n));
      size_t end = c.in.find("\r\n\r\n", scan_from);
      size_t head_end = end == std::string::npos ? end : end + 4;
      if (head_end == std::string::npos) {
        size_t lf = c.in.find("\n\n", scan_from);  // lenient: bare LF line endings
        head_end = lf == std::string::npos ? lf : lf + 2;
      }
      if (head_end != std::string::npos && head_end <= options_.max_request_bytes) {
        return dispatch(c, head_end);
      }
      if (c.in.size() > options_.max_request_bytes) {
        return respond(c, text(431, "request too large\n"), false);
      }
    }
  };
  auto on_writable = [&](Conn& c) {
    while (c.sent < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) c.state = Conn::State::kDone;
        return;
      }
      c.sent += static_cast<size_t>(n);
    }
    ::shutdown(c.fd, SHUT_WR);
    c.out.clear();
    c.state = Conn::State::kLingering;
    c.deadline =
        Clock::now() + std::min<std::chrono::milliseconds>(options_.read_timeout, kMaxLinger);
  };

  while (!stopping_.load()) {
    pfds.clear();
    pfds.push_back({wake_fds_[0], POLLIN, 0});
    const bool accepting = conns.size() < max_conns;
    pfds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    auto wait = std::chrono::milliseconds(1000);
    const auto now = Clock::now();
    for (const Conn& c : conns) {
      short events = c.state == Conn::State::kWriting ? POLLOUT : POLLIN;
      pfds.push_back({c.fd, events, 0});
      auto left = std::chrono::ceil<std::chrono::milliseconds>(c.deadline - now);
      wait = std::max(std::chrono::milliseconds(0), std::min(wait, left));
    }
    int rc = ::poll(pfds.data(), pfds.size(), static_cast<int>(wait.count()));
    if (rc < 0 && errno != EINTR) break;
    if (pfds[0].revents != 0) break;  // stop() woke us

    // Existing connections first (pfds[2 + i] belongs to conns[i]), then new ones.
    for (size_t i = 0; rc > 0 && i < conns.size(); ++i) {
      Conn& c = conns[i];
      short re = pfds[2 + i].revents;
      if (re == 0) continue;
      if (c.state == Conn::State::kWriting) {
        if (re & (POLLOUT | POLLERR | POLLHUP)) on_writable(c);
      } else {
        on_readable(c);
      }
      if (c.state == Conn::State::kWriting) on_writable(c);  // a response was just made
    }
    if (accepting && rc > 0 && (pfds[1].revents & POLLIN)) {
      while (conns.size() < max_conns) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;  // EAGAIN, or a transient error (e.g. EMFILE): try again later
        Conn c;
        c.fd = fd;
        c.deadline = Clock::now() + options_.read_timeout;
        conns.push_back(std::move(c));
      }
    }
    // Drop the finished and the overdue (a request head not in within read_timeout, a response
    // not taken within another read_timeout, the end of lingering).
    const auto after = Clock::now();
    std::erase_if(conns, [&](Conn& c) {
      if (c.state != Conn::State::kDone && after < c.deadline) return false;
      ::close(c.fd);
      return true;
    });
  }
  for (Conn& c : conns) ::close(c.fd);
}

}  // namespace pagoda::metrics
