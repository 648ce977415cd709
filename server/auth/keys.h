// The keys file: tenants, their limits, and their API keys stored as SHA-256 hashes
// ("sha256:<64 hex>"). Format and semantics: server/auth/README.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "server/auth/sha256.h"

namespace pagoda::auth {

// Every limit is optional: absent means "no limit". Present values are positive.
struct TenantLimits {
  std::optional<double> requests_per_second;  // token bucket refill rate
  std::optional<int64_t> burst;               // bucket capacity (default: ceil(rps), at least 1)
  std::optional<int64_t> tokens_per_minute;   // sliding 60 s window of prompt + completion tokens
  std::optional<int64_t> max_concurrent_requests;
  std::optional<int64_t> max_prompt_tokens;      // per request
  std::optional<int64_t> max_completion_tokens;  // per request (the request's max_tokens)
};

struct Tenant {
  std::string name;
  TenantLimits limits;
};

struct ApiKey {
  std::string id;      // a name for the key (logs, ledger); never the key itself
  std::string tenant;  // Tenant::name
  Sha256Digest hash{};
  bool admin = false;  // admin keys see every tenant's usage
};

struct KeysFile {
  std::vector<Tenant> tenants;
  std::vector<ApiKey> keys;

  const Tenant* find_tenant(std::string_view name) const;
};

// Parses keys-file YAML. `source` names the input in error messages ("<source>:<line>:<col>: ...").
// Errors are kInvalidArgument; never throws.
StatusOr<KeysFile> parse_keys(std::string_view yaml_text, std::string_view source = "keys");
// Reads and parses a keys file (kNotFound when it cannot be read).
StatusOr<KeysFile> load_keys_file(const std::string& path);

// "sha256:<lowercase hex>" of a plain API key: the value to put into the keys file. The same as
// `printf %s "$KEY" | sha256sum`.
std::string hash_key(std::string_view plain_key);
// Parses "sha256:<64 hex digits>" (hex in either case).
StatusOr<Sha256Digest> parse_key_hash(std::string_view text);

}  // namespace pagoda::auth
