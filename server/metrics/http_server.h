// A minimal HTTP/1.1 server for metrics and probes: GET only, one response per connection
// (Connection: close), one thread running a poll() loop over non-blocking sockets.
//
// Hardening: every connection has a deadline (read_timeout from accept for the whole request
// head; the same again to write the response), the request head is bounded (431 beyond
// max_request_bytes), and at most max_connections are open at once (others wait in the listen
// backlog). So a slow or malicious client can delay nobody and hold a slot for at most two
// timeouts. Handlers run on the loop thread: they must be quick (rendering a registry is).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "core/status.h"

namespace pagoda::metrics {

class Registry;

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // numeric address or name; "0.0.0.0" / "::" for all
  int port = 0;                    // 0: the kernel picks a free port (see HttpServer::port())
  std::chrono::milliseconds read_timeout{5000};
  size_t max_request_bytes = 8192;  // request line + headers
  int max_connections = 64;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse()>;

  explicit HttpServer(HttpServerOptions options) : options_(std::move(options)) {}
  ~HttpServer() { stop(); }
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes GET <path> (query string ignored) to handler. Before start() only.
  void handle(std::string path, Handler handler) { routes_[std::move(path)] = std::move(handler); }

  // Binds and listens, then serves on a thread. Unavailable when the address cannot be bound.
  Status start();
  // The bound port (the picked one when options.port was 0); 0 before start().
  int port() const { return port_; }
  // Stops serving and closes every connection; returns without waiting for clients. Idempotent.
  void stop();

 private:
  void loop();

  HttpServerOptions options_;
  std::map<std::string, Handler> routes_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// gRPC health semantics for /readyz: SERVING answers 200, anything else 503.
enum class ServingStatus { kUnknown, kServing, kNotServing };
const char* serving_status_name(ServingStatus s);

// Adds the probe routes: /metrics (registry->render(), text format 0.0.4), /healthz (200 "ok"
// while the process serves HTTP at all) and /readyz (200 when readiness() says kServing, else
// 503; the body names the status). registry and readiness must outlive the server.
void add_probe_routes(HttpServer* server, const Registry* registry,
                      std::function<ServingStatus()> readiness);

}  // namespace pagoda::metrics
