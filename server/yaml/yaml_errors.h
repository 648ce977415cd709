// Error messages for YAML config files (the keys file, the policy file) that point at the place
// in the file: "<source>:<line>:<column>: <where>: <message>", lines and columns 1-based, as
// editors and compilers print them, so a person can jump straight to the offending node.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "core/status.h"

namespace YAML {
class Node;
class Exception;
}  // namespace YAML

namespace pagoda::yaml {

// "<source>:<line>:<column>" where `node` starts in the text, or just "<source>" for a node with
// no place in it (undefined: a missing key, or built in code).
std::string location(std::string_view source, const YAML::Node& node);

// kInvalidArgument "<location>: <where>: <message>"; "<location>: <message>" when `where` is
// empty. `where` names the field in the file's own terms ("tenant 'acme': limits.burst").
Status error_at(std::string_view source, const YAML::Node& node, std::string_view where,
                std::string_view message);

// OK when `node` is a map whose keys are all in `allowed`; else error_at() "expected a map", or
// at the first other key "unknown <noun> '<key>' (expected one of: a, b, ...)".
Status check_map(std::string_view source, const YAML::Node& node, std::string_view where,
                 std::initializer_list<std::string_view> allowed, std::string_view noun);

// A yaml-cpp exception (a syntax error while loading, or a conversion that threw) as
// kInvalidArgument "<source>:<line>:<column>: <what yaml-cpp says>" (no position when the
// exception carries none). Parsers catch YAML::Exception around YAML::Load and their own walk
// and return this, so that nothing throws past them.
Status from_exception(std::string_view source, const YAML::Exception& e);

}  // namespace pagoda::yaml
