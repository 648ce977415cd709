#include "clients/cpp/rpc_status.h"

#include <array>
#include <cstring>
#include <optional>

namespace pagoda::client {
namespace {

constexpr int kNumRpcCodes = 17;

constexpr std::array<const char*, kNumRpcCodes> kRpcCodeNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

// The pagoda code named like gRPC code `rpc`, if core/status.h has one. pagoda's codes are
// found by probing status_code_name over a range of values well beyond today's enum; names it
// does not know come back as "UNKNOWN", which is never taken as a match.
std::optional<StatusCode> same_named_code(int rpc) {
  static const std::array<int, kNumRpcCodes> table = [] {
    std::array<int, kNumRpcCodes> t;
    t.fill(-1);
    constexpr int kProbe = 64;
    for (int value = 0; value < kProbe; ++value) {
      const char* name = status_code_name(static_cast<StatusCode>(value));
      if (std::strcmp(name, "UNKNOWN") == 0) continue;
      for (int c = 0; c < kNumRpcCodes; ++c) {
        if (t[c] < 0 && std::strcmp(name, kRpcCodeNames[c]) == 0) t[c] = value;
      }
    }
    return t;
  }();
  if (rpc < 0 || rpc >= kNumRpcCodes || table[rpc] < 0) return std::nullopt;
  return static_cast<StatusCode>(table[rpc]);
}

StatusCode nearest_code(int rpc) {
  switch (static_cast<RpcCode>(rpc)) {
    case RpcCode::kDeadlineExceeded:
    case RpcCode::kAborted: return StatusCode::kUnavailable;
    case RpcCode::kUnauthenticated:
    case RpcCode::kPermissionDenied:
    case RpcCode::kAlreadyExists: return StatusCode::kFailedPrecondition;
    default: return StatusCode::kInternal;
  }
}

// Inverse of same_named_code for a pagoda code.
std::optional<RpcCode> rpc_code_named_like(StatusCode code) {
  const char* name = status_code_name(code);
  for (int c = 0; c < kNumRpcCodes; ++c) {
    if (std::strcmp(name, kRpcCodeNames[c]) == 0) return static_cast<RpcCode>(c);
  }
  return std::nullopt;
}

}  // namespace

const char* rpc_code_name(RpcCode code) {
  const int c = static_cast<int>(code);
  if (c < 0 || c >= kNumRpcCodes) return "UNKNOWN";
  return kRpcCodeNames[c];
}

Status status_from_rpc(int code, std::string_view message) {
  if (code == 0) return OkStatus();
  if (auto same = same_named_code(code)) return Status(*same, std::string(message));
  const int known = (code > 0 && code < kNumRpcCodes) ? code : static_cast<int>(RpcCode::kUnknown);
  std::string text = kRpcCodeNames[known];
  text += ": ";
  if (known != code) text += "(gRPC code " + std::to_string(code) + ") ";
  text += message;
  return Status(nearest_code(known), std::move(text));
}

RpcCode rpc_code(const Status& status) {
  if (status.ok()) return RpcCode::kOk;
  // A code without a pagoda twin: its name leads the message (status_from_rpc).
  const std::string& message = status.message();
  for (int c = 1; c < kNumRpcCodes; ++c) {
    if (same_named_code(c)) continue;
    const size_t n = std::strlen(kRpcCodeNames[c]);
    if (message.size() >= n + 2 && message.compare(0, n, kRpcCodeNames[c]) == 0 &&
        message.compare(n, 2, ": ") == 0) {
      return static_cast<RpcCode>(c);
    }
  }
  return rpc_code_named_like(status.code()).value_or(RpcCode::kUnknown);
}

}  // namespace pagoda::client
