#include "request_traits.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/unknown_field_set.h>

#include "core/utf8.h"

namespace pagoda::proto_util {


std::string find_invalid_utf8_field(const std::string& wire,
                                    const google::protobuf::Descriptor* descriptor) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(wire)) return "";
  for (int i = 0; i < fields.field_count(); ++i) {
    const auto& f = fields.field(i);
    if (f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const google::protobuf::FieldDescriptor* fd = descriptor->FindFieldByNumber(f.number());
    if (fd == nullptr) continue;
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
        !valid_utf8(f.length_delimited()))
      return fd->name();
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      const std::string inner = find_invalid_utf8_field(f.length_delimited(), fd->message_type());
      if (!inner.empty()) return fd->name() + "." + inner;
    }
  }
  return "";
}

}  // namespace pagoda::proto_util
