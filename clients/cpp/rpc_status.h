// gRPC status codes <-> pagoda::Status.
//
// pagoda::StatusCode (core/status.h) has no twin for every gRPC code (DEADLINE_EXCEEDED,
// UNAUTHENTICATED, PERMISSION_DENIED, ABORTED, ALREADY_EXISTS, UNKNOWN). The mapping keeps the
// gRPC code anyway:
// - a gRPC code whose name is also a pagoda code's name (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
//   UNAVAILABLE, CANCELLED, ...) becomes that pagoda code, with the message as is. The match is
//   by name (status_code_name), so a code added to core/status.h later is picked up untouched;
// - any other becomes the nearest pagoda code (below) and the message starts with the gRPC
//   code's name: "DEADLINE_EXCEEDED: Deadline Exceeded".
// rpc_code() undoes either: rpc_code(status_from_rpc(c, m)) == c for every code c.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace pagoda::client {

// The gRPC status codes, with gRPC's numbers (grpc::StatusCode / google.rpc.Code).
enum class RpcCode {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "DEADLINE_EXCEEDED", ...; "UNKNOWN" for a number outside 0..16.
const char* rpc_code_name(RpcCode code);

// The pagoda::Status for a gRPC status (code as its number, so that gRPC's enum need not be
// included here). Codes without a pagoda twin go to: DEADLINE_EXCEEDED, ABORTED -> kUnavailable
// (retryable); UNAUTHENTICATED, PERMISSION_DENIED, ALREADY_EXISTS -> kFailedPrecondition;
// UNKNOWN and numbers outside 0..16 -> kInternal.
Status status_from_rpc(int code, std::string_view message);

// The gRPC code a Status stands for (see the header comment); kOk for an OK status.
RpcCode rpc_code(const Status& status);

}  // namespace pagoda::client
