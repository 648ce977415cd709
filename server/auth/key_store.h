// The keys file as the server holds it: the Authenticator and the Limiter built from it, and
// reload() for SIGHUP. The server hands out the two raw pointers once at start; they stay valid
// for the store's lifetime, and a reload changes what is behind them in place.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/status.h"
#include "server/auth/authenticator.h"
#include "server/auth/keys.h"
#include "server/auth/limits.h"

namespace pagoda::auth {

class KeyStore {
 public:
  explicit KeyStore(const KeysFile& keys);
  // Loads `path`; the error (kNotFound, kInvalidArgument with file:line:col) when it is bad.
  static StatusOr<std::unique_ptr<KeyStore>> open(const std::string& path);

  // Parses `path` again. A bad file changes nothing and returns the error: the old keys,
  // tenants and limits stay. A good one is applied with apply().
  Status reload(const std::string& path, LimitTime now = LimitClock::now());
  // The limiter learns the new tenants and limits first (Limiter::update: kept tenants keep
  // their running requests and windows), then the key list is swapped whole. In that order a
  // new key never authenticates a tenant the limiter does not know yet; a request that
  // authenticated with a removed key just before the swap is refused at admission (UNAVAILABLE,
  // retry). Requests already admitted are never revoked.
  void apply(const KeysFile& keys, LimitTime now = LimitClock::now());

  Authenticator* authenticator() { return &authenticator_; }
  Limiter* limiter() { return &limiter_; }
  uint64_t generation() const;  // files applied so far (construction counts as the first)

 private:
  mutable std::mutex mu_;  // one reload at a time; guards generation_
  Authenticator authenticator_;
  Limiter limiter_;
  uint64_t generation_ = 1;
};

}  // namespace pagoda::auth
