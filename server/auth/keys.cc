#include "server/auth/keys.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>

#include "server/yaml/yaml_errors.h"

namespace pagoda::auth {
namespace {

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  Status error(const YAML::Node& node, const std::string& where, const std::string& msg) const {
    return yaml::error_at(source_, node, where, msg);
  }

  Status check_map(const YAML::Node& node, const std::string& where,
                   std::initializer_list<std::string_view> allowed) const {
    return yaml::check_map(source_, node, where, allowed, "field");
  }

  StatusOr<std::string> name(const YAML::Node& parent, const char* field,
                             const std::string& where) const {
    YAML::Node node = parent[field];
    if (!node.IsDefined()) return error(parent, where, "missing (required)");
    if (!node.IsScalar() || !valid_name(node.Scalar())) {
      return error(node, where, "expected a name of 1-64 characters from [A-Za-z0-9._-]");
    }
    return node.Scalar();
  }

  StatusOr<std::optional<int64_t>> positive_int(const YAML::Node& node,
                                                const std::string& where) const {
    if (!node.IsDefined() || node.IsNull()) return std::optional<int64_t>();
    int64_t v = 0;
    try {
      if (!node.IsScalar()) return error(node, where, "expected an integer");
      v = node.as<int64_t>();
    } catch (const YAML::Exception&) {
      return error(node, where, "expected an integer");
    }
    if (v <= 0) {
      return error(node, where,
                   "must be a positive integer (omit it for no limit), got " + std::to_string(v));
    }
    return std::optional<int64_t>(v);
  }

  StatusOr<std::optional<double>> positive_number(const YAML::Node& node,
                                                  const std::string& where) const {
    if (!node.IsDefined() || node.IsNull()) return std::optional<double>();
    double v = 0;
    try {
      if (!node.IsScalar()) return error(node, where, "expected a number");
      v = node.as<double>();
    } catch (const YAML::Exception&) {
      return error(node, where, "expected a number");
    }
    // At most 1e9 per second: the bucket works in whole nanoseconds.
    if (!std::isfinite(v) || v <= 0 || v > 1e9) {
      std::ostringstream got;
      got << v;
      return error(node, where,
                   "must be a positive number up to 1e9 (omit it for no limit), got " + got.str());
    }
    return std::optional<double>(v);
  }

  StatusOr<TenantLimits> limits(const YAML::Node& node, const std::string& where) const {
    TenantLimits l;
    if (!node.IsDefined() || node.IsNull()) return l;
    PAGODA_RETURN_IF_ERROR(
        check_map(node, where,
                  {"requests_per_second", "burst", "tokens_per_minute", "max_concurrent_requests",
                   "max_prompt_tokens", "max_completion_tokens"}));
    PAGODA_ASSIGN_OR_RETURN(l.requests_per_second, positive_number(node["requests_per_second"],
                                                                   where + ".requests_per_second"));
    PAGODA_ASSIGN_OR_RETURN(l.burst, positive_int(node["burst"], where + ".burst"));
    if (l.burst && !l.requests_per_second) {
      return error(node["burst"], where + ".burst", "needs requests_per_second");
    }
    PAGODA_ASSIGN_OR_RETURN(l.tokens_per_minute,
                            positive_int(node["tokens_per_minute"], where + ".tokens_per_minute"));
    PAGODA_ASSIGN_OR_RETURN(
        l.max_concurrent_requests,
        positive_int(node["max_concurrent_requests"], where + ".max_concurrent_requests"));
    PAGODA_ASSIGN_OR_RETURN(l.max_prompt_tokens,
                            positive_int(node["max_prompt_tokens"], where + ".max_prompt_tokens"));
    PAGODA_ASSIGN_OR_RETURN(
        l.max_completion_tokens,
        positive_int(node["max_completion_tokens"], where + ".max_completion_tokens"));
    return l;
  }

  StatusOr<KeysFile> file(const YAML::Node& root) const;

 private:
  std::string source_;
};

StatusOr<KeysFile> Parser::file(const YAML::Node& root) const {
  if (!root.IsDefined() || root.IsNull()) return error(root, "", "empty keys file");
  PAGODA_RETURN_IF_ERROR(check_map(root, "", {"tenants"}));
  YAML::Node tenants = root["tenants"];
  if (!tenants.IsDefined() || !tenants.IsSequence() || tenants.size() == 0) {
    return error(tenants.IsDefined() ? tenants : root, "tenants",
                 "expected a non-empty list of tenants");
  }
  KeysFile out;
  std::set<std::string> tenant_names, key_ids, key_hashes;
  for (size_t i = 0; i < tenants.size(); ++i) {
    YAML::Node t = tenants[i];
    std::string where = "tenants[" + std::to_string(i) + "]";
    PAGODA_RETURN_IF_ERROR(check_map(t, where, {"name", "limits", "keys"}));
    Tenant tenant;
    PAGODA_ASSIGN_OR_RETURN(tenant.name, name(t, "name", where + ".name"));
    where = "tenant '" + tenant.name + "'";
    if (!tenant_names.insert(tenant.name).second) {
      return error(t["name"], where, "duplicate tenant name");
    }
    PAGODA_ASSIGN_OR_RETURN(tenant.limits, limits(t["limits"], where + ": limits"));
    YAML::Node keys = t["keys"];
    if (keys.IsDefined() && !keys.IsNull() && !keys.IsSequence()) {
      return error(keys, where + ": keys", "expected a list of keys");
    }
    for (size_t j = 0; keys.IsSequence() && j < keys.size(); ++j) {
      YAML::Node k = keys[j];
      std::string kwhere = where + ": keys[" + std::to_string(j) + "]";
      PAGODA_RETURN_IF_ERROR(check_map(k, kwhere, {"id", "hash", "admin"}));
      ApiKey key;
      key.tenant = tenant.name;
      PAGODA_ASSIGN_OR_RETURN(key.id, name(k, "id", kwhere + ".id"));
      kwhere = where + ": key '" + key.id + "'";
      if (!key_ids.insert(key.id).second) return error(k["id"], kwhere, "duplicate key id");
      YAML::Node h = k["hash"];
      if (!h.IsDefined()) return error(k, kwhere, "missing hash (required)");
      auto digest = h.IsScalar() ? parse_key_hash(h.Scalar())
                                 : StatusOr<Sha256Digest>(InvalidArgument("not a string"));
      if (!digest.ok()) return error(h, kwhere + ": hash", digest.status().message());
      key.hash = *digest;
      if (!key_hashes.insert(to_hex(key.hash)).second) {
        return error(h, kwhere, "duplicate key: this hash is already listed for another key");
      }
      YAML::Node admin = k["admin"];
      if (admin.IsDefined() && !admin.IsNull()) {
        try {
          if (!admin.IsScalar()) throw YAML::Exception(YAML::Mark(), "");
          key.admin = admin.as<bool>();
        } catch (const YAML::Exception&) {
          return error(admin, kwhere + ": admin", "expected true or false");
        }
      }
      out.keys.push_back(std::move(key));
    }
    out.tenants.push_back(std::move(tenant));
  }
  return out;
}

}  // namespace

const Tenant* KeysFile::find_tenant(std::string_view name) const {
  for (const Tenant& t : tenants) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

StatusOr<KeysFile> parse_keys(std::string_view yaml_text, std::string_view source) {
  Parser parser(source);
  try {
    return parser.file(YAML::Load(std::string(yaml_text)));
  } catch (const YAML::Exception& e) {
    return yaml::from_exception(source, e);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string(source) + ": " + e.what());
  }
}

StatusOr<KeysFile> load_keys_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot read keys file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return NotFound("cannot read keys file " + path);
  return parse_keys(text.str(), path);
}

std::string hash_key(std::string_view plain_key) {
  return "sha256:" + to_hex(sha256(plain_key));
}

StatusOr<Sha256Digest> parse_key_hash(std::string_view text) {
  constexpr std::string_view kPrefix = "sha256:";
  if (text.substr(0, kPrefix.size()) != kPrefix) {
    return InvalidArgument("expected 'sha256:<64 hex digits>' (the hash of the key, not the key)");
  }
  std::string_view hex = text.substr(kPrefix.size());
  if (hex.size() != 64) {
    return InvalidArgument("expected 'sha256:<64 hex digits>', got " + std::to_string(hex.size()) +
                           " characters after 'sha256:'");
  }
  Sha256Digest d{};
  for (size_t i = 0; i < 32; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("expected 'sha256:<64 hex digits>': not hex");
    d[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return d;
}

}  // namespace pagoda::auth
