// A minimal blocking HTTP/1.1 client over a TCP socket for the OTLP exporter: one POST per
// connection ("Connection: close"), plain http only, every step bounded by one deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace pagoda::tracing {

struct HttpEndpoint {
  std::string host;
  uint16_t port = 80;
  std::string path = "/";
};

// "http://host[:port][/path]"; https is Unimplemented. An empty path becomes "/".
StatusOr<HttpEndpoint> parse_http_url(std::string_view url);

// POSTs body and returns the response status code (any code; the caller judges it). Fails with
// Unavailable when the peer cannot be reached, answers garbage, or the timeout passes.
StatusOr<int> http_post(const HttpEndpoint& endpoint, std::string_view content_type,
                        std::string_view body, std::chrono::milliseconds timeout);

}  // namespace pagoda::tracing
