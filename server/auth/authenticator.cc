#include "server/auth/authenticator.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace pagoda::auth {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

AuthResult fail(std::string why) {
  return AuthResult{std::nullopt, std::move(why)};
}

}  // namespace

Authenticator::Authenticator(const KeysFile& keys)
    : keys_(std::make_shared<const Keys>(keys.keys)) {}

void Authenticator::replace(const KeysFile& keys) {
  auto fresh = std::make_shared<const Keys>(keys.keys);
  std::lock_guard lock(mu_);
  keys_.swap(fresh);  // the old list is freed outside the lock (by `fresh`), or by the last reader
}

std::shared_ptr<const Authenticator::Keys> Authenticator::snapshot() const {
  std::lock_guard lock(mu_);
  return keys_;
}

AuthResult Authenticator::authenticate(std::optional<std::string_view> authorization) const {
  if (!authorization) {
    return fail("missing 'authorization' metadata (expected 'authorization: Bearer <API key>')");
  }
  std::string_view v = *authorization;
  while (!v.empty() && is_space(v.front())) v.remove_prefix(1);
  while (!v.empty() && is_space(v.back())) v.remove_suffix(1);
  if (v.empty()) return fail("empty 'authorization' metadata (expected 'Bearer <API key>')");
  size_t sp = 0;
  while (sp < v.size() && !is_space(v[sp])) ++sp;
  // The scheme is case-insensitive (RFC 7235). Whatever came instead is not echoed: it may be a
  // key sent without the scheme.
  if (iequals(v, "Bearer")) return fail("empty API key in 'authorization' metadata");
  if (sp == v.size() || !iequals(v.substr(0, sp), "Bearer")) {
    return fail("'authorization' metadata must use the Bearer scheme ('Bearer <API key>')");
  }
  std::string_view key = v.substr(sp);
  while (!key.empty() && is_space(key.front())) key.remove_prefix(1);
  if (key.empty()) return fail("empty API key in 'authorization' metadata");

  Sha256Digest presented = sha256(key);
  // Compare against every key, without stopping early, so timing says nothing about which key
  // (or which prefix of which hash) matched.
  const std::shared_ptr<const Keys> keys = snapshot();
  const ApiKey* match = nullptr;
  for (const ApiKey& k : *keys) {
    bool eq = digests_equal(presented, k.hash);
    match = eq ? &k : match;
  }
  if (!match) return fail("unknown API key");
  return AuthResult{Principal{match->tenant, match->id, match->admin}, {}};
}

bool requires_keys(std::string_view address) {
  std::string_view host = address;
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos) return true;
    std::string_view rest = host.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return true;
    host = host.substr(1, close - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host = host.substr(0, host.find(':'));  // host:port
  }
  if (host.empty()) return true;  // ":50051" listens on every interface
  if (host.back() == '.') host.remove_suffix(1);
  if (iequals(host, "localhost")) return false;

  std::string h(host);
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) != 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    static const uint8_t kLoopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (std::memcmp(v6.s6_addr, kLoopback, 16) == 0) return false;
    // IPv4-mapped ::ffff:127.x.x.x
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(v6.s6_addr, kMapped, 12) == 0 && v6.s6_addr[12] == 127) return false;
    return true;
  }
  return true;
}

}  // namespace pagoda::auth
