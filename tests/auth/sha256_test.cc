#include "server/auth/sha256.h"

#include <gtest/gtest.h>

#include <string>

#include "server/auth/keys.h"

namespace pagoda::auth {
namespace {

// FIPS 180-2 appendix B vectors.
TEST(Sha256, Abc) {
  EXPECT_EQ(to_hex(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, Empty) {
  EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, TwoBlockMessage448Bits) {
  EXPECT_EQ(to_hex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, MillionA) {
  Sha256 h;
  std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.update(chunk);
  EXPECT_EQ(to_hex(h.finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Padding edge cases around the 56- and 64-byte boundaries, fed in pieces vs. at once.
TEST(Sha256, IncrementalMatchesOneShotAtBlockBoundaries) {
  for (size_t n : {55u, 56u, 57u, 63u, 64u, 65u, 119u, 120u, 128u}) {
    std::string msg(n, 'x');
    for (size_t i = 0; i < n; ++i) msg[i] = static_cast<char>('a' + i % 26);
    Sha256 h;
    for (size_t i = 0; i < n; i += 7) h.update(std::string_view(msg).substr(i, 7));
    EXPECT_EQ(to_hex(h.finish()), to_hex(sha256(msg))) << n;
  }
  // Known value for 64 bytes of 'a' (one full block plus a padding block).
  EXPECT_EQ(to_hex(sha256(std::string(64, 'a'))),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256, DigestsEqual) {
  Sha256Digest a = sha256("a"), b = sha256("a"), c = sha256("b");
  EXPECT_TRUE(digests_equal(a, b));
  EXPECT_FALSE(digests_equal(a, c));
  b[31] ^= 1;
  EXPECT_FALSE(digests_equal(a, b));
}

TEST(HashKey, FormatMatchesSha256sum) {
  // printf %s abc | sha256sum
  EXPECT_EQ(hash_key("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto parsed = parse_key_hash(hash_key("abc"));
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(digests_equal(*parsed, sha256("abc")));
}

}  // namespace
}  // namespace pagoda::auth
