// Custom gRPC deserialization for the requests that carry text: a string field that is not
// valid UTF-8 makes protobuf parsing fail, which gRPC would report as INTERNAL. We report
// INVALID_ARGUMENT naming the field instead. Force-included (-include) into every C++ file of
// the targets that use pagoda_proto, so every translation unit sees the same specialization.
#pragma once

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>

#include <string>
#include <vector>

#include "pagoda/v1/generation.pb.h"

namespace pagoda::proto_util {

// Names the string field of the wire message that is not valid UTF-8 ("text",
// "stop.stop", ...), or "" if none is.
std::string find_invalid_utf8_field(const std::string& wire,
                                    const google::protobuf::Descriptor* descriptor);

template <typename Message>
grpc::Status deserialize_or_name_field(grpc::ByteBuffer* buffer, Message* msg) {
  std::string wire;
  if (buffer != nullptr && buffer->Valid()) {
    std::vector<grpc::Slice> slices;
    (void)buffer->Dump(&slices);
    for (const grpc::Slice& s : slices) wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  grpc::Status s = grpc::GenericDeserialize<grpc::ProtoBufferReader, Message>(buffer, msg);
  if (s.ok()) return s;
  // The generated unary handlers deserialize through MessageLite: find the full message type.
  const auto* full = dynamic_cast<const google::protobuf::Message*>(msg);
  if (full == nullptr) return s;
  const std::string field = find_invalid_utf8_field(wire, full->GetDescriptor());
  if (!field.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, field + ": is not valid UTF-8");
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "request: not a valid " + full->GetDescriptor()->full_name());
}

}  // namespace pagoda::proto_util

#define PAGODA_UTF8_CHECKED_REQUEST(Message)                                                  \
  template <>                                                                                 \
  class grpc::SerializationTraits<Message, void> {                                            \
   public:                                                                                    \
    static grpc::Status Serialize(const Message& msg, grpc::ByteBuffer* bb, bool* own) {      \
      return grpc::GenericSerialize<grpc::ProtoBufferWriter, Message>(msg, bb, own);          \
    }                                                                                         \
    static grpc::Status Deserialize(grpc::ByteBuffer* buffer, Message* msg) {                 \
      return pagoda::proto_util::deserialize_or_name_field(buffer, msg);                      \
    }                                                                                         \
  };

// Server-streaming handlers deserialize the concrete request type; the generated unary handlers
// deserialize through MessageLite (and so does every other service in the process: for them
// this only turns a failed parse from INTERNAL into INVALID_ARGUMENT; valid messages take the
// same path as before).
PAGODA_UTF8_CHECKED_REQUEST(pagoda::v1::GenerateRequest)
PAGODA_UTF8_CHECKED_REQUEST(pagoda::v1::TokenizeRequest)
PAGODA_UTF8_CHECKED_REQUEST(grpc::protobuf::MessageLite)
