#include "server/admin_service.h"

#include "server/generation_service.h"

namespace pagoda {

namespace v1 = ::pagoda::v1;

namespace {

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

grpc::Status AdminService::GetUsage(grpc::ServerContext* ctx, const v1::GetUsageRequest* req,
                                    v1::GetUsageResponse* resp) {
  std::string tenant;
  bool admin = false;
  if (grpc::Status s = authenticate_caller(*state_, ctx, &tenant, &admin); !s.ok()) return s;
  ledger::Ledger* l = state_->ledger();
  if (l == nullptr)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this server keeps no usage ledger (start it with --ledger FILE)");
  if (!admin && !req->tenant().empty() && req->tenant() != tenant)
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "tenant: only an admin key may read another tenant's usage");
  if (req->limit() > static_cast<uint32_t>(ledger::Ledger::kMaxPageRows))
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "limit: must be at most " + std::to_string(ledger::Ledger::kMaxPageRows));
  const ledger::Scope scope{admin, tenant};
  const std::string wanted = req->tenant().empty() && !admin ? tenant : req->tenant();
  const int64_t until = req->until_unix_ms() > 0 ? req->until_unix_ms() : unix_ms_now() + 1;
  StatusOr<ledger::Usage> totals = l->totals(scope, wanted, req->since_unix_ms(), until);
  if (!totals.ok()) return to_grpc(totals.status());
  v1::UsageTotals* t = resp->mutable_totals();
  t->set_requests(static_cast<uint64_t>(totals->requests));
  t->set_prompt_tokens(static_cast<uint64_t>(totals->prompt_tokens));
  t->set_completion_tokens(static_cast<uint64_t>(totals->completion_tokens));
  t->set_cached_tokens(static_cast<uint64_t>(totals->cached_tokens));
  if (req->totals_only()) return grpc::Status::OK;
  StatusOr<std::vector<ledger::LedgerRow>> rows =
      l->rows(scope, wanted, req->since_unix_ms(), until,
              req->limit() == 0 ? 100 : static_cast<int>(req->limit()), req->after_cursor());
  if (!rows.ok()) return to_grpc(rows.status());
  for (const ledger::LedgerRow& row : *rows) {
    v1::UsageRow* w = resp->add_rows();
    w->set_request_id(row.request_id);
    w->set_tenant(row.tenant);
    w->set_model_id(row.model_id);
    w->set_model_revision(row.model_revision);
    w->set_prompt_tokens(static_cast<uint64_t>(row.prompt_tokens));
    w->set_completion_tokens(static_cast<uint64_t>(row.completion_tokens));
    w->set_cached_tokens(static_cast<uint64_t>(row.cached_tokens));
    w->set_finish_reason(row.finish_reason);
    w->set_policy_outcome(row.policy_outcome);
    w->set_received_unix_ms(row.received_unix_ms);
    w->set_finished_unix_ms(row.finished_unix_ms);
    w->set_cursor(row.cursor);
  }
  return grpc::Status::OK;
}

}  // namespace pagoda
