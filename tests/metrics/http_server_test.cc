#include "server/metrics/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "server/metrics/metrics.h"

namespace pagoda::metrics {
namespace {

using namespace std::chrono_literals;

// Every wait in these tests is bounded by this, far beyond what any step needs.
constexpr int kBoundSeconds = 10;

// A raw loopback client socket with a receive timeout of kBoundSeconds.
int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0);
  timeval tv{kBoundSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << errno;
  return fd;
}

void send_all(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << "send failed, errno " << errno;
    sent += static_cast<size_t>(n);
  }
}

struct ReadResult {
  std::string data;
  bool eof = false;  // the server closed; false: timed out or reset
};

ReadResult read_all(int fd) {
  ReadResult r;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      r.data.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    r.eof = n == 0;
    return r;
  }
}

ReadResult roundtrip(int port, const std::string& request) {
  int fd = connect_to(port);
  send_all(fd, request);
  ReadResult r = read_all(fd);
  ::close(fd);
  return r;
}

std::string get(int port, const std::string& path) {
  ReadResult r = roundtrip(port, "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
  EXPECT_TRUE(r.eof);
  return r.data;
}

std::string status_line(const std::string& response) {
  return response.substr(0, response.find("\r\n"));
}

std::string body_of(const std::string& response) {
  size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

class ProbeServerTest : public ::testing::Test {
 protected:
  void start(HttpServerOptions options = {}) {
    counter_ = (*registry_.add_counter("demo_total", "Demo.", {"tenant"}))->with({"acme"});
    server_ = std::make_unique<HttpServer>(options);
    add_probe_routes(server_.get(), &registry_, [this] { return ready_.load(); });
    ASSERT_TRUE(server_->start().ok());
    port_ = server_->port();
    ASSERT_GT(port_, 0);
  }

  Registry registry_;
  Counter* counter_ = nullptr;
  std::atomic<ServingStatus> ready_{ServingStatus::kNotServing};
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(ProbeServerTest, ServesMetricsInTextFormat) {
  start();
  counter_->inc(7);
  std::string r = get(port_, "/metrics");
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK");
  EXPECT_NE(r.find("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  const std::string body = body_of(r);
  EXPECT_EQ(body,
            "# HELP demo_total Demo.\n# TYPE demo_total counter\n"
            "demo_total{tenant=\"acme\"} 7\n");
  EXPECT_NE(r.find("\r\nContent-Length: " + std::to_string(body.size()) + "\r\n"),
            std::string::npos);
  EXPECT_NE(r.find("\r\nConnection: close\r\n"), std::string::npos);
}

TEST_F(ProbeServerTest, HealthzAndReadyzFollowTheCallback) {
  start();
  std::string h = get(port_, "/healthz");
  EXPECT_EQ(status_line(h), "HTTP/1.1 200 OK");
  EXPECT_EQ(body_of(h), "ok\n");

  std::string r = get(port_, "/readyz");
  EXPECT_EQ(status_line(r), "HTTP/1.1 503 Service Unavailable");
  EXPECT_EQ(body_of(r), "NOT_SERVING\n");
  ready_ = ServingStatus::kServing;
  r = get(port_, "/readyz");
  EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK");
  EXPECT_EQ(body_of(r), "SERVING\n");
  ready_ = ServingStatus::kUnknown;
  EXPECT_EQ(status_line(get(port_, "/readyz")), "HTTP/1.1 503 Service Unavailable");
  ready_ = ServingStatus::kServing;
  EXPECT_EQ(status_line(get(port_, "/readyz?probe=1")), "HTTP/1.1 200 OK");
  // Liveness does not depend on readiness.
  ready_ = ServingStatus::kNotServing;
  EXPECT_EQ(status_line(get(port_, "/healthz")), "HTTP/1.1 200 OK");
}

TEST_F(ProbeServerTest, UnknownPathMethodAndGarbage) {
  start();
  EXPECT_EQ(status_line(get(port_, "/nope")), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(status_line(get(port_, "/metrics/")), "HTTP/1.1 404 Not Found");
  ReadResult post = roundtrip(port_, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(status_line(post.data), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_NE(post.data.find("\r\nAllow: GET\r\n"), std::string::npos);
  EXPECT_EQ(status_line(roundtrip(port_, "DELETE /healthz HTTP/1.1\r\n\r\n").data),
            "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(status_line(roundtrip(port_, "hello\r\n\r\n").data), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(status_line(roundtrip(port_, "GET /healthz SPDY/3\r\n\r\n").data),
            "HTTP/1.1 400 Bad Request");
  // HTTP/1.0 and bare-LF line endings are accepted.
  EXPECT_EQ(status_line(roundtrip(port_, "GET /healthz HTTP/1.0\n\n").data), "HTTP/1.1 200 OK");
}

TEST_F(ProbeServerTest, OversizedRequestGets431) {
  HttpServerOptions o;
  o.max_request_bytes = 1024;
  start(o);
  // A complete but too large head, and one that never ends.
  ReadResult big =
      roundtrip(port_, "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
  EXPECT_TRUE(big.eof);
  EXPECT_EQ(status_line(big.data), "HTTP/1.1 431 Request Header Fields Too Large");
  ReadResult endless = roundtrip(port_, "GET /metrics HTTP/1.1\r\nX: " + std::string(100000, 'b'));
  EXPECT_EQ(status_line(endless.data), "HTTP/1.1 431 Request Header Fields Too Large");
  // Just within the bound is fine.
  std::string head = "GET /healthz HTTP/1.1\r\nX: ";
  head += std::string(1024 - head.size() - 4, 'c') + "\r\n\r\n";
  ASSERT_EQ(head.size(), 1024u);
  EXPECT_EQ(status_line(roundtrip(port_, head).data), "HTTP/1.1 200 OK");
}

TEST_F(ProbeServerTest, SlowClientDoesNotBlockOthers) {
  HttpServerOptions o;
  o.read_timeout = 60s;  // the slow client stays for the whole test
  start(o);
  int slow = connect_to(port_);
  send_all(slow, "GET /metrics HTTP/1.1\r\nHost: x");  // never finishes its head
  for (int i = 0; i < 3; ++i) EXPECT_EQ(status_line(get(port_, "/healthz")), "HTTP/1.1 200 OK");
  pollfd p{slow, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "the slow client was answered or dropped early";
  ::close(slow);
}

TEST_F(ProbeServerTest, UnfinishedRequestIsDroppedAfterTimeout) {
  HttpServerOptions o;
  o.read_timeout = 100ms;
  start(o);
  int idle = connect_to(port_);
  send_all(idle, "GET /metrics HTTP/1.1\r\n");
  ReadResult r = read_all(idle);  // bounded by the socket's kBoundSeconds receive timeout
  EXPECT_TRUE(r.eof) << "not dropped within " << kBoundSeconds << " s";
  EXPECT_EQ(r.data, "");
  ::close(idle);

  // Dripping a byte at a time does not extend the deadline (it runs from accept).
  int drip = connect_to(port_);
  bool dropped = false;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(kBoundSeconds);
  while (!dropped && std::chrono::steady_clock::now() < give_up) {
    if (::send(drip, "x", 1, MSG_NOSIGNAL) < 0) dropped = true;
    pollfd p{drip, POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) dropped = true;  // EOF (or reset) from the server
  }
  EXPECT_TRUE(dropped);
  ::close(drip);
  // The server still serves.
  EXPECT_EQ(status_line(get(port_, "/healthz")), "HTTP/1.1 200 OK");
}

TEST_F(ProbeServerTest, StopReturnsPromptlyWithClientsConnected) {
  HttpServerOptions o;
  o.read_timeout = 60s;
  start(o);
  int clients[3];
  for (int& fd : clients) {
    fd = connect_to(port_);
    send_all(fd, "GET /metrics HTTP/1.1\r\n");
  }
  EXPECT_EQ(status_line(get(port_, "/healthz")), "HTTP/1.1 200 OK");  // all accepted by now
  auto stopped = std::async(std::launch::async, [&] { server_->stop(); });
  ASSERT_EQ(stopped.wait_for(std::chrono::seconds(kBoundSeconds)), std::future_status::ready);
  for (int fd : clients) {
    ReadResult r = read_all(fd);
    EXPECT_EQ(r.data, "");
    pollfd p{fd, POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 1);  // closed: readable at EOF, not hanging
    ::close(fd);
  }
  server_->stop();  // idempotent
  // The port no longer accepts.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_NE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
}

TEST(HttpServerTest, PortZeroPicksAFreePortAndBusyPortIsAnError) {
  HttpServer a(HttpServerOptions{});
  a.handle("/x", [] { return HttpResponse{200, "text/plain", "x"}; });
  EXPECT_EQ(a.port(), 0);
  ASSERT_TRUE(a.start().ok());
  ASSERT_GT(a.port(), 0);
  EXPECT_EQ(body_of(get(a.port(), "/x")), "x");
  EXPECT_FALSE(a.start().ok());  // already started

  HttpServerOptions same;
  same.port = a.port();
  HttpServer b(same);
  Status s = b.start();
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.to_string();

  HttpServerOptions bad;
  bad.host = "no.such.host.invalid";
  HttpServer c(bad);
  EXPECT_FALSE(c.start().ok());
  HttpServerOptions range;
  range.port = 70000;
  HttpServer d(range);
  EXPECT_FALSE(d.start().ok());
}

TEST(HttpServerTest, LargeBodyIsWrittenCompletely) {
  HttpServer s(HttpServerOptions{});
  std::string big(4 << 20, 'z');
  for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
  s.handle("/big", [&] { return HttpResponse{200, "text/plain", big}; });
  ASSERT_TRUE(s.start().ok());
  int fd = connect_to(s.port());
  send_all(fd, "GET /big HTTP/1.1\r\n\r\n");
  std::this_thread::sleep_for(50ms);  // let the server fill the socket buffers first
  ReadResult r = read_all(fd);
  ::close(fd);
  EXPECT_TRUE(r.eof);
  EXPECT_TRUE(body_of(r.data) == big) << "body of " << body_of(r.data).size() << " bytes";
}

}  // namespace
}  // namespace pagoda::metrics
