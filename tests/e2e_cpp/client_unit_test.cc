// The client alone, without `pagoda serve`: status mapping, request translation, the hand-made
// health messages, and calls against an in-process fake Generation service (metadata,
// deadlines, error codes, streaming, cancellation, health).
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "clients/cpp/client.h"
#include "clients/cpp/convert.h"
#include "pagoda/v1/generation.grpc.pb.h"
#include "tests/e2e_cpp/server_process.h"

namespace pagoda::client {
namespace {

using std::chrono::milliseconds;

TEST(RpcStatus, EveryCodeSurvivesTheRoundTrip) {
  EXPECT_TRUE(status_from_rpc(0, "").ok());
  for (int code = 1; code <= 16; ++code) {
    const Status status = status_from_rpc(code, "the message");
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(static_cast<int>(rpc_code(status)), code) << rpc_code_name(RpcCode(code));
    EXPECT_NE(status.message().find("the message"), std::string::npos);
  }
}

TEST(RpcStatus, SameNamedCodesMapOneToOne) {
  EXPECT_EQ(status_from_rpc(3, "m").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status_from_rpc(3, "m").message(), "m");
  EXPECT_EQ(status_from_rpc(8, "m").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(status_from_rpc(14, "m").code(), StatusCode::kUnavailable);
  EXPECT_EQ(status_from_rpc(1, "m").code(), StatusCode::kCancelled);
  EXPECT_EQ(status_from_rpc(13, "m").code(), StatusCode::kInternal);
  // No pagoda twin: nearest code, the gRPC name leads the message.
  const Status deadline = status_from_rpc(4, "Deadline Exceeded");
  EXPECT_EQ(deadline.message(), "DEADLINE_EXCEEDED: Deadline Exceeded");
  EXPECT_EQ(rpc_code(deadline), RpcCode::kDeadlineExceeded);
  EXPECT_EQ(rpc_code(status_from_rpc(99, "odd")), RpcCode::kUnknown);
  // Local errors read as the gRPC code of the same name.
  EXPECT_EQ(rpc_code(InvalidArgument("x")), RpcCode::kInvalidArgument);
}

TEST(Convert, RequestCarriesEveryField) {
  GenerateOptions o;
  o.model = "m";
  o.text = "hi";
  o.temperature = 0.0f;
  o.top_p = 0.5f;
  o.seed = 9;
  o.max_tokens = 7;
  o.stop = {"END"};
  o.stop_token_ids = {2};
  o.ignore_eos = true;
  o.return_token_ids = true;
  o.logprobs = 3;
  auto req = internal::to_proto(o);
  ASSERT_TRUE(req.ok()) << req.status().to_string();
  EXPECT_EQ(req->text(), "hi");
  EXPECT_TRUE(req->sampling().has_temperature());
  EXPECT_EQ(req->sampling().temperature(), 0.0f);
  EXPECT_FALSE(req->sampling().has_top_k()) << "unset stays unset: the server's default";
  EXPECT_EQ(req->sampling().seed(), 9u);
  EXPECT_EQ(req->stop().max_tokens(), 7u);
  EXPECT_EQ(req->stop().stop(0), "END");
  EXPECT_FALSE(req->has_add_bos());

  o.token_ids = std::vector<int>{};
  req = internal::to_proto(o);
  ASSERT_TRUE(req.ok());
  EXPECT_EQ(req->input_case(), pagoda::v1::GenerateRequest::kTokenIds);
  o.token_ids = std::vector<int>{1, -5};
  req = internal::to_proto(o);
  ASSERT_FALSE(req.ok());
  EXPECT_EQ(req.status().message(), "token_ids[1]: must be >= 0, got -5");
}

TEST(Convert, HealthMessages) {
  EXPECT_EQ(internal::encode_health_request(""), "");
  EXPECT_EQ(internal::encode_health_request("ab"), std::string("\x0a\x02"
                                                               "ab",
                                                               4));
  EXPECT_EQ(*internal::decode_health_response(""), 0);
  EXPECT_EQ(*internal::decode_health_response(std::string("\x08\x01", 2)), 1);
  EXPECT_EQ(*internal::decode_health_response(std::string("\x08\x02", 2)), 2);
  EXPECT_FALSE(internal::decode_health_response(std::string("\x08", 1)).ok());
}

// A fake pagoda.v1.Generation: streams three chunks and a final one, echoes the authorization
// metadata into the request id, fails for model "bad", and blocks until cancelled for text
// "block".
class FakeGeneration final : public pagoda::v1::Generation::Service {
 public:
  std::atomic<int> cancelled{0};

  grpc::Status Generate(grpc::ServerContext* ctx, const pagoda::v1::GenerateRequest* req,
                        grpc::ServerWriter<pagoda::v1::GenerateResponse>* writer) override {
    if (req->model() == "bad") {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "model: unknown model 'bad'");
    }
    const std::string auth = header(ctx, "authorization");
    for (int i = 0; i < 3 || req->text() == "block"; ++i) {
      if (ctx->IsCancelled()) {
        ++cancelled;
        return grpc::Status::CANCELLED;
      }
      pagoda::v1::GenerateResponse r;
      r.set_request_id(auth);
      r.set_text(std::to_string(i).insert(0, 1, 't'));
      r.add_token_ids(10 + i);
      r.mutable_usage()->set_completion_tokens(i + 1);
      writer->Write(r);
      if (req->text() == "block") std::this_thread::sleep_for(milliseconds(2));
    }
    pagoda::v1::GenerateResponse last;
    last.set_request_id(auth);
    last.set_finish_reason(pagoda::v1::FINISH_REASON_LENGTH);
    last.mutable_usage()->set_completion_tokens(3);
    last.set_model_id("fake");
    writer->Write(last);
    return grpc::Status::OK;
  }

  grpc::Status Complete(grpc::ServerContext* ctx, const pagoda::v1::GenerateRequest* req,
                        pagoda::v1::GenerateResponse* r) override {
    if (req->text() == "block") {
      while (!ctx->IsCancelled()) std::this_thread::sleep_for(milliseconds(1));
      ++cancelled;
      return grpc::Status::CANCELLED;
    }
    r->set_text("all");
    r->set_finish_reason(pagoda::v1::FINISH_REASON_STOP);
    return grpc::Status::OK;
  }

 private:
  static std::string header(grpc::ServerContext* ctx, const std::string& key) {
    auto it = ctx->client_metadata().find(key);
    if (it == ctx->client_metadata().end()) return "";
    return std::string(it->second.data(), it->second.size());
  }
};

class FakeServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    server_->GetHealthCheckService()->SetServingStatus("pagoda.v1.Generation", false);
    ClientOptions options;
    options.metadata = {{"authorization", "Bearer k1"}};
    auto c = Client::connect("127.0.0.1:" + std::to_string(port), options);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client_ = std::move(c).value();
  }
  void TearDown() override {
    client_.reset();
    server_->Shutdown();
  }

  FakeGeneration service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(FakeServerTest, StreamPutsTheChunksTogether) {
  GenerateOptions o;
  o.text = "x";
  std::vector<Chunk> chunks;
  GenerateResult result;
  const Status status = client_->generate(
      o,
      [&](const Chunk& c) {
        chunks.push_back(c);
        return true;
      },
      &result);
  ASSERT_TRUE(status.ok()) << status.to_string();
  ASSERT_EQ(chunks.size(), 4u);
  EXPECT_TRUE(chunks.back().is_final());
  EXPECT_FALSE(chunks.front().is_final());
  EXPECT_EQ(result.text, "t0t1t2");
  EXPECT_EQ(result.token_ids, (std::vector<int>{10, 11, 12}));
  EXPECT_EQ(result.usage.completion_tokens, 3);
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(result.model_id, "fake");
  EXPECT_EQ(result.chunks, 4);
  EXPECT_EQ(result.request_id, "Bearer k1") << "client metadata reaches the server";

  o.call.metadata = {{"authorization-extra", "x"}};
  auto unary = client_->complete(o);
  ASSERT_TRUE(unary.ok());
  EXPECT_EQ(unary->text, "all");
  EXPECT_EQ(unary->finish_reason, FinishReason::kStop);
}

TEST_F(FakeServerTest, ErrorsKeepCodeAndMessage) {
  GenerateOptions o;
  o.model = "bad";
  const Status status = client_->generate(o, nullptr, nullptr);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "model: unknown model 'bad'");
  auto tokens = client_->tokenize("x");  // not implemented by the fake
  EXPECT_EQ(rpc_code(tokens.status()), RpcCode::kUnimplemented);
}

TEST_F(FakeServerTest, CallbackCancelAndDeadlineReachTheServer) {
  GenerateOptions o;
  o.text = "block";
  int seen = 0;
  GenerateResult result;
  Status status = client_->generate(
      o, [&](const Chunk&) { return ++seen < 5; }, &result);
  EXPECT_EQ(status.code(), StatusCode::kCancelled) << status.to_string();
  EXPECT_EQ(seen, 5);
  EXPECT_EQ(result.finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(e2e::poll_until([&] { return service_.cancelled.load() == 1; }, milliseconds(5000)));

  o.call.deadline = milliseconds(50);
  auto unary = client_->complete(o);
  EXPECT_EQ(rpc_code(unary.status()), RpcCode::kDeadlineExceeded) << unary.status().to_string();
  EXPECT_TRUE(e2e::poll_until([&] { return service_.cancelled.load() == 2; }, milliseconds(5000)));
}

TEST_F(FakeServerTest, Health) {
  auto live = client_->healthy(kLivenessService);
  ASSERT_TRUE(live.ok()) << live.status().to_string();
  EXPECT_TRUE(*live);
  auto ready = client_->healthy(kReadinessService);
  ASSERT_TRUE(ready.ok()) << ready.status().to_string();
  EXPECT_FALSE(*ready);
  server_->GetHealthCheckService()->SetServingStatus("pagoda.v1.Generation", true);
  EXPECT_TRUE(*client_->healthy(kReadinessService));
  EXPECT_EQ(rpc_code(client_->healthy("nope").status()), RpcCode::kNotFound);
}

TEST(ClientConnect, NoServerIsUnavailableWithinTheTimeout) {
  ClientOptions options;
  options.connect_timeout = milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  auto c = Client::connect("127.0.0.1:1", options);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(Client::connect("", options).ok());
}

}  // namespace
}  // namespace pagoda::client
