// API-key authentication: the `authorization: Bearer <key>` metadata value -> the Principal
// (tenant, key id, admin), comparing SHA-256 hashes in constant time. Plus the start-up policy
// requires_keys(host).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/auth/keys.h"

namespace pagoda::auth {

struct Principal {
  std::string tenant;
  std::string key_id;
  bool admin = false;
};

// Either a principal or, for gRPC UNAUTHENTICATED, the reason. The reason never contains the
// presented key (nor any part of the metadata value).
struct AuthResult {
  std::optional<Principal> principal;
  std::string error;

  bool ok() const { return principal.has_value(); }
};

class Authenticator {
 public:
  explicit Authenticator(const KeysFile& keys);

  // `authorization`: the metadata value, or nullopt when the request has none. Thread-safe.
  AuthResult authenticate(std::optional<std::string_view> authorization) const;

  // Swaps in the keys of a reloaded keys file (SIGHUP), whole: a call to authenticate() sees
  // either the old keys or the new ones, never a mix. Thread-safe.
  void replace(const KeysFile& keys);

  size_t key_count() const { return snapshot()->size(); }

 private:
  using Keys = std::vector<ApiKey>;
  std::shared_ptr<const Keys> snapshot() const;

  // Readers copy the pointer under the lock and compare outside it, so a reload never waits
  // for (or makes wait) the hashing of requests in flight.
  mutable std::mutex mu_;
  std::shared_ptr<const Keys> keys_;
};

// Whether a server listening on `address` must have API keys: false only for loopback hosts
// (127.0.0.0/8, ::1, ::ffff:127.x.x.x, localhost). Accepts a bare host ("127.0.0.1", "::1",
// "localhost") or a listen address with a port ("127.0.0.1:50051", "[::1]:50051",
// "localhost:50051"). Anything else, wildcards ("0.0.0.0", "[::]", "") and names included,
// requires keys.
bool requires_keys(std::string_view address);

}  // namespace pagoda::auth
