// SHA-256 (FIPS 180-4), self-contained so that API-key hashing needs no OpenSSL headers. Used only
// to hash API keys; not a general crypto library.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pagoda::auth {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hashing: update() any number of times, then finish() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  Sha256Digest finish();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

Sha256Digest sha256(std::string_view data);
// Lowercase hex, 64 characters.
std::string to_hex(const Sha256Digest& digest);
// Compares two digests in time independent of where they differ.
bool digests_equal(const Sha256Digest& a, const Sha256Digest& b);

}  // namespace pagoda::auth
