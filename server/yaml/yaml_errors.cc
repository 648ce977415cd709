#include "server/yaml/yaml_errors.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

namespace pagoda::yaml {
namespace {

// yaml-cpp marks are 0-based; a null mark (line -1) means "no position".
std::string with_mark(std::string_view source, const YAML::Mark& mark) {
  std::string loc(source);
  if (mark.line >= 0) {
    // Appended piece by piece: `":" + std::to_string(...)` trips GCC 12's bogus -Wrestrict.
    loc.append(":").append(std::to_string(mark.line + 1));
    loc.append(":").append(std::to_string(mark.column + 1));
  }
  return loc;
}

}  // namespace

std::string location(std::string_view source, const YAML::Node& node) {
  // Mark() of an undefined node (a missing key) throws InvalidNode; it has no position anyway.
  if (!node.IsDefined()) return std::string(source);
  return with_mark(source, node.Mark());
}

Status error_at(std::string_view source, const YAML::Node& node, std::string_view where,
                std::string_view message) {
  std::string text = location(source, node) + ": ";
  if (!where.empty()) text += std::string(where) + ": ";
  text += message;
  return InvalidArgument(std::move(text));
}

Status from_exception(std::string_view source, const YAML::Exception& e) {
  return InvalidArgument(with_mark(source, e.mark) + ": " + e.msg);
}

Status check_map(std::string_view source, const YAML::Node& node, std::string_view where,
                 std::initializer_list<std::string_view> allowed, std::string_view noun) {
  if (!node.IsMap()) return error_at(source, node, where, "expected a map");
  for (auto it = node.begin(); it != node.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    return error_at(
        source, it->first, where,
        "unknown " + std::string(noun) + " '" + key + "' (expected one of: " + list + ")");
  }
  return OkStatus();
}

}  // namespace pagoda::yaml
