#include "clients/cpp/client.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>

#include "clients/cpp/convert.h"
#include "pagoda/v1/generation.grpc.pb.h"

namespace pagoda::client {
namespace {

Status from_grpc(const grpc::Status& status) {
  return status_from_rpc(static_cast<int>(status.error_code()), status.error_message());
}

const char* const kHealthCheckMethod = "/grpc.health.v1.Health/Check";

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kUnspecified: return "unspecified";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kStopSequence: return "stop_sequence";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeLimit: return "time_limit";
    case FinishReason::kContentFilter: return "content_filter";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

struct Client::Impl {
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pagoda::v1::Generation::Stub> stub;
  std::unique_ptr<grpc::GenericStub> generic;

  // Deadline and metadata: the call's, over the client's defaults.
  void configure(grpc::ClientContext* ctx, const CallOptions& call) const {
    const std::chrono::milliseconds deadline = call.deadline.value_or(options.default_deadline);
    if (deadline.count() > 0) ctx->set_deadline(std::chrono::system_clock::now() + deadline);
    for (const auto& [key, value] : options.metadata) ctx->AddMetadata(key, value);
    for (const auto& [key, value] : call.metadata) ctx->AddMetadata(key, value);
  }
};

Client::Client(std::string target, std::unique_ptr<Impl> impl)
    : target_(std::move(target)), impl_(std::move(impl)) {}

Client::~Client() = default;

StatusOr<std::unique_ptr<Client>> Client::connect(const std::string& target,
                                                  const ClientOptions& options) {
  if (target.empty()) return InvalidArgument("target: must be host:port, got an empty string");
  for (const auto& [key, value] : options.metadata) {
    for (char ch : key) {
      if (ch >= 'A' && ch <= 'Z') {
        return InvalidArgument("metadata key '" + key + "': must be lower-case");
      }
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  impl->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (!impl->channel) return Internal("could not create a gRPC channel to " + target);
  if (options.connect_timeout.count() > 0) {
    const auto deadline = std::chrono::system_clock::now() + options.connect_timeout;
    if (!impl->channel->WaitForConnected(deadline)) {
      return Unavailable("could not connect to " + target + " within " +
                         std::to_string(options.connect_timeout.count()) +
                         " ms (is `pagoda serve` running there?)");
    }
  }
  impl->stub = pagoda::v1::Generation::NewStub(impl->channel);
  impl->generic = std::make_unique<grpc::GenericStub>(impl->channel);
  return std::unique_ptr<Client>(new Client(target, std::move(impl)));
}

StatusOr<GenerateResult> Client::complete(const GenerateOptions& options) {
  PAGODA_ASSIGN_OR_RETURN(auto request, internal::to_proto(options));
  grpc::ClientContext ctx;
  impl_->configure(&ctx, options.call);
  pagoda::v1::GenerateResponse response;
  const grpc::Status status = impl_->stub->Complete(&ctx, request, &response);
  if (!status.ok()) return from_grpc(status);
  GenerateResult result;
  internal::append(response, &result);
  return result;
}

Status Client::generate(const GenerateOptions& options,
                        const std::function<bool(const Chunk&)>& on_chunk, GenerateResult* final) {
  GenerateResult local;
  GenerateResult* result = final != nullptr ? final : &local;
  *result = GenerateResult();
  PAGODA_ASSIGN_OR_RETURN(auto request, internal::to_proto(options));
  grpc::ClientContext ctx;
  impl_->configure(&ctx, options.call);
  std::unique_ptr<grpc::ClientReader<pagoda::v1::GenerateResponse>> reader =
      impl_->stub->Generate(&ctx, request);
  pagoda::v1::GenerateResponse response;
  bool cancelled = false;
  while (reader->Read(&response)) {
    internal::append(response, result);
    // false on the final message cancels nothing: the request is complete.
    if (on_chunk && !on_chunk(internal::to_chunk(response)) &&
        response.finish_reason() == pagoda::v1::FINISH_REASON_UNSPECIFIED) {
      cancelled = true;
      ctx.TryCancel();
      break;
    }
  }
  if (cancelled) {
    while (reader->Read(&response)) {
    }  // whatever was in flight; Finish then reports CANCELLED
  }
  const grpc::Status status = reader->Finish();
  if (cancelled) {
    result->finish_reason = FinishReason::kCancelled;
    return Cancelled("generate: cancelled by the on_chunk callback");
  }
  if (!status.ok()) return from_grpc(status);
  if (result->finish_reason == FinishReason::kUnspecified) {
    return DataLoss("generate: the stream ended without a final message (no finish reason)");
  }
  return OkStatus();
}

StatusOr<std::vector<int>> Client::tokenize(const std::string& text, bool add_bos,
                                            const CallOptions& call) {
  pagoda::v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_bos(add_bos);
  pagoda::v1::TokenizeResponse response;
  grpc::ClientContext ctx;
  impl_->configure(&ctx, call);
  const grpc::Status status = impl_->stub->Tokenize(&ctx, request, &response);
  if (!status.ok()) return from_grpc(status);
  return std::vector<int>(response.token_ids().begin(), response.token_ids().end());
}

StatusOr<std::string> Client::detokenize(const std::vector<int>& ids, const CallOptions& call) {
  pagoda::v1::DetokenizeRequest request;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      return InvalidArgument("token_ids[" + std::to_string(i) + "]: must be >= 0, got " +
                             std::to_string(ids[i]));
    }
    request.add_token_ids(static_cast<uint32_t>(ids[i]));
  }
  pagoda::v1::DetokenizeResponse response;
  grpc::ClientContext ctx;
  impl_->configure(&ctx, call);
  const grpc::Status status = impl_->stub->Detokenize(&ctx, request, &response);
  if (!status.ok()) return from_grpc(status);
  return response.text();
}

StatusOr<ModelInfo> Client::model_info(const CallOptions& call) {
  pagoda::v1::GetModelInfoRequest request;
  pagoda::v1::ModelInfo response;
  grpc::ClientContext ctx;
  impl_->configure(&ctx, call);
  const grpc::Status status = impl_->stub->GetModelInfo(&ctx, request, &response);
  if (!status.ok()) return from_grpc(status);
  return internal::from_proto(response);
}

StatusOr<ServerInfo> Client::server_info(const CallOptions& call) {
  pagoda::v1::GetServerInfoRequest request;
  pagoda::v1::ServerInfo response;
  grpc::ClientContext ctx;
  impl_->configure(&ctx, call);
  const grpc::Status status = impl_->stub->GetServerInfo(&ctx, request, &response);
  if (!status.ok()) return from_grpc(status);
  return internal::from_proto(response);
}

StatusOr<bool> Client::healthy(const std::string& service, const CallOptions& call) {
  const std::string bytes = internal::encode_health_request(service);
  grpc::Slice slice(bytes);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext ctx;
  impl_->configure(&ctx, call);

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  impl_->generic->UnaryCall(&ctx, kHealthCheckMethod, grpc::StubOptions(), &request, &response,
                            [&](grpc::Status s) {
                              std::lock_guard<std::mutex> lock(mu);
                              status = std::move(s);
                              done = true;
                              cv.notify_one();
                            });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
  }
  if (!status.ok()) return from_grpc(status);

  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return DataLoss("health check: unreadable response");
  std::string body;
  for (const auto& s : slices) body.append(reinterpret_cast<const char*>(s.begin()), s.size());
  PAGODA_ASSIGN_OR_RETURN(const int serving, internal::decode_health_response(body));
  constexpr int kServing = 1, kServiceUnknown = 3;
  if (serving == kServiceUnknown) {
    return status_from_rpc(static_cast<int>(RpcCode::kNotFound),
                           "health: unknown service '" + service + "'");
  }
  return serving == kServing;
}

}  // namespace pagoda::client
