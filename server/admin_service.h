// AdminService: pagoda.v1.Admin over the usage ledger.
#pragma once

#include "pagoda/v1/generation.grpc.pb.h"
#include "server/server_state.h"

namespace pagoda {

// pagoda.v1.Admin: usage from the ledger, scoped to the caller's tenant (admins: any).
class AdminService final : public pagoda::v1::Admin::Service {
 public:
  explicit AdminService(ServerState* state) : state_(state) {}
  grpc::Status GetUsage(grpc::ServerContext* ctx, const pagoda::v1::GetUsageRequest* req,
                        pagoda::v1::GetUsageResponse* resp) override;

 private:
  ServerState* state_;
};

}  // namespace pagoda
