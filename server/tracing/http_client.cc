#include "server/tracing/http_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace pagoda::tracing {
namespace {

using Clock = std::chrono::steady_clock;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` until the deadline; false on timeout or error.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

StatusOr<int> connect_to(const HttpEndpoint& ep, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string port = std::to_string(ep.port);
  int rc = ::getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return Unavailable("resolve " + ep.host + ": " + ::gai_strerror(rc));
  std::string last_error = "no address";
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    if (errno == EINPROGRESS && wait_for(fd, POLLOUT, deadline)) {
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) {
        ::freeaddrinfo(res);
        return fd;
      }
      last_error = std::strerror(err);
    } else {
      last_error = errno == EINPROGRESS ? "connect timed out" : std::strerror(errno);
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return Unavailable("connect " + ep.host + ":" + port + ": " + last_error);
}

}  // namespace

StatusOr<HttpEndpoint> parse_http_url(std::string_view url) {
  constexpr std::string_view kHttp = "http://";
  if (url.starts_with("https://")) return Unimplemented("https endpoints are not supported");
  if (!url.starts_with(kHttp)) return InvalidArgument("endpoint must start with http://");
  url.remove_prefix(kHttp.size());
  HttpEndpoint ep;
  size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  ep.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || p != port.data() + port.size() || value == 0 || value > 65535) {
      return InvalidArgument("bad port in endpoint");
    }
    ep.port = static_cast<uint16_t>(value);
    authority = authority.substr(0, colon);
  }
  if (authority.size() >= 2 && authority.front() == '[' && authority.back() == ']') {
    authority = authority.substr(1, authority.size() - 2);
  }
  if (authority.empty()) return InvalidArgument("endpoint has no host");
  ep.host = std::string(authority);
  return ep;
}

StatusOr<int> http_post(const HttpEndpoint& ep, std::string_view content_type,
                        std::string_view body, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  PAGODA_ASSIGN_OR_RETURN(int raw_fd, connect_to(ep, deadline));
  Fd fd(raw_fd);

  std::string request = "POST " + ep.path + " HTTP/1.1\r\nHost: " + ep.host + ":" +
                        std::to_string(ep.port) + "\r\nContent-Type: " + std::string(content_type) +
                        "\r\nContent-Length: " + std::to_string(body.size()) +
                        "\r\nConnection: close\r\n\r\n";
  request.append(body);
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_for(fd.get(), POLLOUT, deadline)) return Unavailable("send timed out");
    } else {
      return Unavailable(std::string("send: ") + std::strerror(errno));
    }
  }

  // Only the status line matters; read until it is complete (the rest is discarded).
  std::string response;
  char buf[4096];
  while (response.find("\r\n") == std::string::npos) {
    if (!wait_for(fd.get(), POLLIN, deadline)) return Unavailable("response timed out");
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n > 0) {
      response.append(buf, static_cast<size_t>(n));
      if (response.size() > 64 * 1024) return Unavailable("response status line too long");
    } else if (n == 0) {
      return Unavailable("connection closed before a response");
    } else if (errno != EAGAIN && errno != EINTR) {
      return Unavailable(std::string("recv: ") + std::strerror(errno));
    }
  }
  // "HTTP/1.x NNN reason"
  if (!response.starts_with("HTTP/1.") || response.size() < 12 || response[8] != ' ') {
    return Unavailable("malformed HTTP response");
  }
  int code = 0;
  auto [p, ec] = std::from_chars(response.data() + 9, response.data() + 12, code);
  if (ec != std::errc() || p != response.data() + 12) return Unavailable("malformed status code");
  return code;
}

}  // namespace pagoda::tracing
