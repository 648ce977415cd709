// GenerationService: pagoda.v1.Generation over the Engine. It only translates between the wire
// and the engine (DESIGN.md §1): validation into an engine Request, admission to the bounded
// queue, streaming of outputs, and client cancellation/deadline/disconnect into Engine::cancel.
#pragma once

#include "pagoda/v1/generation.grpc.pb.h"
#include "server/server_state.h"

namespace pagoda {

class GenerationService final : public pagoda::v1::Generation::Service {
 public:
  explicit GenerationService(ServerState* state) : state_(state) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const pagoda::v1::GenerateRequest* req,
                        grpc::ServerWriter<pagoda::v1::GenerateResponse>* writer) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const pagoda::v1::GenerateRequest* req,
                        pagoda::v1::GenerateResponse* resp) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const pagoda::v1::TokenizeRequest* req,
                        pagoda::v1::TokenizeResponse* resp) override;
  grpc::Status Detokenize(grpc::ServerContext* ctx, const pagoda::v1::DetokenizeRequest* req,
                          pagoda::v1::DetokenizeResponse* resp) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const pagoda::v1::GetModelInfoRequest* req,
                            pagoda::v1::ModelInfo* resp) override;
  grpc::Status GetServerInfo(grpc::ServerContext* ctx, const pagoda::v1::GetServerInfoRequest* req,
                             pagoda::v1::ServerInfo* resp) override;

 private:
  // Runs one request; on_output sees every engine output (return false: the client is gone).
  grpc::Status run(
      grpc::ServerContext* ctx, const pagoda::v1::GenerateRequest& req,
      const std::function<bool(const RequestOutput&, const std::string& request_id)>& on_output);
  grpc::Status run_traced(
      grpc::ServerContext* ctx, const pagoda::v1::GenerateRequest& req,
      const std::function<bool(const RequestOutput&, const std::string& request_id)>& on_output,
      EngineClock::time_point received, class RequestTrace* trace);
  grpc::Status check_model(const std::string& model) const;
  // One ledger row (when the server keeps a ledger); returns once it is durable.
  Status record_usage(const std::string& request_id, const std::string& tenant, const Usage& usage,
                      const std::string& finish_reason, const std::string& policy_outcome,
                      std::chrono::system_clock::time_point received_wall);
  // The caller's tenant from `authorization: Bearer KEY`, or "default" when the server has no
  // keys file. UNAUTHENTICATED (never echoing what was sent) otherwise.
  grpc::Status authenticate(grpc::ServerContext* ctx, std::string* tenant) const;

  ServerState* state_;
};

// pagoda::Status → grpc::Status, keeping the message.
grpc::Status to_grpc(const Status& s);

// The caller from `authorization: Bearer KEY`: its tenant and whether its key is an admin key.
// Without a keys file every caller is the non-admin tenant "default". UNAUTHENTICATED
// (never echoing what was sent) otherwise.
grpc::Status authenticate_caller(const ServerState& state, grpc::ServerContext* ctx,
                                 std::string* tenant, bool* admin);

}  // namespace pagoda
