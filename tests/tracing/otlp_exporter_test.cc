#include "server/tracing/otlp_exporter.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>

namespace pagoda::tracing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// A socket bound to 127.0.0.1:0; listens when asked (backlog only: accepting is up to the owner).
int bound_socket(bool listen_now, uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  if (listen_now) {
    EXPECT_EQ(::listen(fd, 64), 0);
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

// Stand-in OTLP collector: records each request's head and body and answers `status`.
class Collector {
 public:
  explicit Collector(int status = 200) : status_(status) {
    fd_ = bound_socket(true, &port_);
    thread_ = std::thread([this] { serve(); });
  }
  ~Collector() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1/traces"; }
  std::vector<std::pair<std::string, std::string>> requests() {  // (head, body)
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      timeval tv{5, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      std::string data;
      char buf[65536];
      size_t head_end = std::string::npos, need = 0;
      for (;;) {
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        data.append(buf, size_t(n));
        if (head_end == std::string::npos &&
            (head_end = data.find("\r\n\r\n")) != std::string::npos) {
          size_t cl = data.find("Content-Length: ");
          need = head_end + 4 + (cl < head_end ? std::stoul(data.substr(cl + 16)) : 0);
        }
        if (head_end != std::string::npos && data.size() >= need) break;
      }
      if (head_end != std::string::npos) {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.emplace_back(data.substr(0, head_end), data.substr(head_end + 4));
      }
      std::string resp = "HTTP/1.1 " + std::to_string(status_) +
                         " X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
      ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  int status_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> requests_;
  std::thread thread_;
};

std::unique_ptr<OtlpHttpExporter> make_exporter(OtlpExporterOptions o) {
  auto e = OtlpHttpExporter::create(std::move(o));
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

// All spans of all requests, by name; checks the envelope on the way.
std::map<std::string, json> spans_by_name(Collector& collector) {
  std::map<std::string, json> out;
  for (const auto& [head, body] : collector.requests()) {
    EXPECT_EQ(head.rfind("POST /v1/traces HTTP/1.1\r\n", 0), 0u) << head;
    EXPECT_NE(head.find("Content-Type: application/json"), std::string::npos) << head;
    json j = json::parse(body);
    const json& rs = j.at("resourceSpans").at(0);
    const json& attr = rs.at("resource").at("attributes").at(0);
    EXPECT_EQ(attr.at("key"), "service.name");
    EXPECT_EQ(attr.at("value").at("stringValue"), "pagoda-test");
    for (const json& s : rs.at("scopeSpans").at(0).at("spans")) out[s.at("name")] = s;
  }
  return out;
}

json attr(const json& span, const std::string& key) {
  for (const json& a : span.at("attributes")) {
    if (a.at("key") == key) return a.at("value");
  }
  return json();
}

TEST(OtlpExporterTest, CollectorReceivesLinkedSpansWithAttributes) {
  Collector collector;
  auto exporter = make_exporter(
      {.endpoint = collector.url(), .service_name = "pagoda-test", .batch_delay = 20ms});
  ASSERT_TRUE(exporter);
  Tracer tracer(exporter.get(), 1.0);
  std::string trace_id;
  {
    Span request = tracer.start_root("request", nullptr, SpanKind::kServer, 1000);
    trace_id = request.trace_id_hex();
    request.set_attribute("gen_ai.request.model", "tiny-llama");
    Span decode = tracer.start_child("decode", request, 2000);
    decode.set_attribute("gen_ai.usage.output_tokens", 17)
        .set_attribute("gen_ai.request.temperature", 0.5)
        .set_attribute("pagoda.stream", true);
    decode.add_event("preemption", {{"pagoda.step", int64_t{3}}}, 2500);
    decode.end(3000);
    Span prefill = tracer.start_child("prefill.chunk", request);
    prefill.set_status(SpanStatusCode::kError, "oom");
  }
  exporter->shutdown(5s);
  EXPECT_EQ(exporter->stats().exported, 3u);
  EXPECT_EQ(exporter->stats().failed, 0u);

  auto spans = spans_by_name(collector);
  ASSERT_EQ(spans.size(), 3u);
  const json& request = spans["request"];
  const json& decode = spans["decode"];
  EXPECT_EQ(request.at("traceId"), trace_id);
  EXPECT_FALSE(request.contains("parentSpanId"));
  EXPECT_EQ(request.at("kind"), 2);
  EXPECT_EQ(request.at("startTimeUnixNano"), "1000");
  EXPECT_EQ(attr(request, "gen_ai.request.model").at("stringValue"), "tiny-llama");
  EXPECT_EQ(decode.at("traceId"), trace_id);
  EXPECT_EQ(decode.at("parentSpanId"), request.at("spanId"));
  EXPECT_EQ(spans["prefill.chunk"].at("parentSpanId"), request.at("spanId"));
  EXPECT_EQ(decode.at("spanId").get<std::string>().size(), 16u);
  EXPECT_EQ(decode.at("startTimeUnixNano"), "2000");
  EXPECT_EQ(decode.at("endTimeUnixNano"), "3000");
  EXPECT_EQ(attr(decode, "gen_ai.usage.output_tokens").at("intValue"), "17");
  EXPECT_EQ(attr(decode, "gen_ai.request.temperature").at("doubleValue"), 0.5);
  EXPECT_EQ(attr(decode, "pagoda.stream").at("boolValue"), true);
  const json& event = decode.at("events").at(0);
  EXPECT_EQ(event.at("name"), "preemption");
  EXPECT_EQ(event.at("timeUnixNano"), "2500");
  EXPECT_EQ(attr(event, "pagoda.step").at("intValue"), "3");
  EXPECT_EQ(spans["prefill.chunk"].at("status").at("code"), 2);
  EXPECT_EQ(spans["prefill.chunk"].at("status").at("message"), "oom");
}

TEST(OtlpExporterTest, FlushSendsPartialBatchWithoutWaitingForTheDelay) {
  Collector collector;
  auto exporter = make_exporter({.endpoint = collector.url(),
                                 .service_name = "pagoda-test",
                                 .batch_delay = std::chrono::hours(1)});
  ASSERT_TRUE(exporter);
  Tracer tracer(exporter.get(), 1.0);
  for (int i = 0; i < 5; ++i) tracer.start_root(std::string("s").append(std::to_string(i))).end();
  ASSERT_TRUE(exporter->flush(5s));
  EXPECT_EQ(exporter->stats().exported, 5u);
  EXPECT_EQ(spans_by_name(collector).size(), 5u);
}

// stats() is what the server samples into metrics: queued follows the queue, and every span ends
// up in exactly one of exported / failed / dropped.
TEST(OtlpExporterTest, StatsReportQueuedSpansUntilTheyAreSent) {
  Collector collector;
  auto exporter = make_exporter({.endpoint = collector.url(),
                                 .service_name = "pagoda-test",
                                 .max_queue_spans = 8,
                                 .batch_delay = std::chrono::hours(1)});
  ASSERT_TRUE(exporter);
  Tracer tracer(exporter.get(), 1.0);
  for (int i = 0; i < 5; ++i) tracer.start_root("s").end();
  OtlpExporterStats stats = exporter->stats();
  EXPECT_EQ(stats.queued, 5u);  // the batch delay is an hour: nothing has left yet
  EXPECT_EQ(stats.exported + stats.failed + stats.dropped, 0u);
  for (int i = 0; i < 5; ++i) tracer.start_root("s").end();  // 3 fit, 2 are dropped
  stats = exporter->stats();
  EXPECT_EQ(stats.queued, 8u);
  EXPECT_EQ(stats.dropped, 2u);
  ASSERT_TRUE(exporter->flush(5s));
  stats = exporter->stats();
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.exported, 8u);
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(stats.dropped, 2u);
}

TEST(OtlpExporterTest, BatchesAreSplitAtMaxBatchSpans) {
  Collector collector;
  auto exporter = make_exporter({.endpoint = collector.url(),
                                 .service_name = "pagoda-test",
                                 .max_batch_spans = 4,
                                 .batch_delay = std::chrono::hours(1)});
  ASSERT_TRUE(exporter);
  Tracer tracer(exporter.get(), 1.0);
  for (int i = 0; i < 10; ++i) tracer.start_root(std::string("s").append(std::to_string(i))).end();
  exporter->shutdown(5s);
  EXPECT_EQ(exporter->stats().exported, 10u);
  EXPECT_EQ(spans_by_name(collector).size(), 10u);
  EXPECT_GE(collector.requests().size(), 3u);
}

TEST(OtlpExporterTest, CollectorDownCountsSpansAndNeverBlocksTheCaller) {
  uint16_t port = 0;
  int reserved = bound_socket(false, &port);  // bound, not listening: connections are refused
  auto exporter =
      make_exporter({.endpoint = "http://127.0.0.1:" + std::to_string(port) + "/v1/traces",
                     .max_queue_spans = 256,
                     .max_batch_spans = 64,
                     .batch_delay = 10ms,
                     .request_timeout = 500ms});
  ASSERT_TRUE(exporter);
  Tracer tracer(exporter.get(), 1.0);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10000; ++i) tracer.start_root("burst").set_attribute("i", i).end();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, 5s);  // ~ms in practice; a caller waiting on the network would take far longer
  exporter->shutdown(5s);
  auto stats = exporter->stats();
  EXPECT_EQ(stats.exported, 0u);
  EXPECT_GT(stats.dropped, 0u);  // the queue (256) cannot hold a 10k burst
  EXPECT_EQ(stats.dropped + stats.failed, 10000u);
  EXPECT_EQ(stats.queued, 0u);  // shutdown left nothing behind
  ::close(reserved);
}

TEST(OtlpExporterTest, HungCollectorTimesOutAndShutdownIsBounded) {
  uint16_t port = 0;
  int hung = bound_socket(true, &port);  // listens (kernel accepts) but never answers
  auto exporter =
      make_exporter({.endpoint = "http://127.0.0.1:" + std::to_string(port) + "/v1/traces",
                     .batch_delay = 10ms,
                     .request_timeout = 200ms});
  ASSERT_TRUE(exporter);
  Tracer tracer(exporter.get(), 1.0);
  for (int i = 0; i < 10; ++i) tracer.start_root("s").end();
  const auto start = std::chrono::steady_clock::now();
  exporter->shutdown(2s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  auto stats = exporter->stats();
  EXPECT_EQ(stats.exported, 0u);
  EXPECT_EQ(stats.failed + stats.dropped, 10u);
  EXPECT_GT(stats.failed, 0u);
  ::close(hung);
}

TEST(OtlpExporterTest, Non2xxCountsAsFailed) {
  Collector collector(503);
  auto exporter = make_exporter({.endpoint = collector.url(), .batch_delay = 10ms});
  ASSERT_TRUE(exporter);
  Tracer tracer(exporter.get(), 1.0);
  for (int i = 0; i < 3; ++i) tracer.start_root("s").end();
  ASSERT_TRUE(exporter->flush(5s));
  EXPECT_EQ(exporter->stats().failed, 3u);
  EXPECT_EQ(exporter->stats().exported, 0u);
}

TEST(OtlpExporterTest, SpansAfterShutdownAreDropped) {
  Collector collector;
  auto exporter = make_exporter({.endpoint = collector.url()});
  ASSERT_TRUE(exporter);
  exporter->shutdown(1s);
  Tracer(exporter.get(), 1.0).start_root("late").end();
  EXPECT_EQ(exporter->stats().dropped, 1u);
  EXPECT_TRUE(collector.requests().empty());
}

TEST(OtlpExporterTest, RejectsBadEndpoints) {
  EXPECT_EQ(OtlpHttpExporter::create({.endpoint = "https://x:4318/v1/traces"}).status().code(),
            StatusCode::kUnimplemented);
  EXPECT_FALSE(OtlpHttpExporter::create({.endpoint = "x:4318/v1/traces"}).ok());
  EXPECT_FALSE(OtlpHttpExporter::create({.endpoint = "http://x:99999/v1/traces"}).ok());
  EXPECT_FALSE(OtlpHttpExporter::create({.endpoint = "http://:4318/v1/traces"}).ok());
  auto ep = parse_http_url("http://collector:4318/v1/traces");
  ASSERT_TRUE(ep.ok());
  EXPECT_EQ(ep->host, "collector");
  EXPECT_EQ(ep->port, 4318);
  EXPECT_EQ(ep->path, "/v1/traces");
}

}  // namespace
}  // namespace pagoda::tracing
