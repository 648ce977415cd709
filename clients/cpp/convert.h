// Internal to pagoda_client: plain structs <-> pagoda.v1 protobuf messages, and the health
// messages' wire bytes. Exposed in a header so that tests can check the translation alone.
#pragma once

#include <string>
#include <string_view>

#include "clients/cpp/client.h"
#include "core/status.h"
#include "pagoda/v1/generation.pb.h"

namespace pagoda::client::internal {

// The request for `options`. Values are passed through unchecked (the server validates and
// names the field), except what the wire cannot carry: negative token ids, max_tokens or
// stop_token_ids, and logprobs < 0, which are INVALID_ARGUMENT here, named like the server does.
StatusOr<pagoda::v1::GenerateRequest> to_proto(const GenerateOptions& options);

FinishReason from_proto(pagoda::v1::FinishReason reason);
Chunk to_chunk(const pagoda::v1::GenerateResponse& response);
// Adds one message to a result being put together (text and ids appended; usage, finish
// reason, timings and model fields taken from the latest message that has them).
void append(const pagoda::v1::GenerateResponse& response, GenerateResult* result);
ModelInfo from_proto(const pagoda::v1::ModelInfo& info);
ServerInfo from_proto(const pagoda::v1::ServerInfo& info);

// grpc.health.v1 by hand (a generic call, so no health.proto is compiled into the client; see
// README). HealthCheckRequest{string service = 1}; HealthCheckResponse{ServingStatus status = 1}
// with UNKNOWN = 0, SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3.
std::string encode_health_request(std::string_view service);
// The status field of a HealthCheckResponse (0 when absent, as proto3 does), or DATA_LOSS for
// bytes that are not a HealthCheckResponse.
StatusOr<int> decode_health_response(std::string_view bytes);

}  // namespace pagoda::client::internal
