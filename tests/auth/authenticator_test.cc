#include "server/auth/authenticator.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace pagoda::auth {
namespace {

KeysFile keys() {
  auto f = parse_keys(
      "tenants:\n"
      "  - name: acme\n"
      "    keys:\n"
      "      - {id: acme-prod, hash: " +
      hash_key("sk-acme-123") +
      "}\n"
      "      - {id: acme-ops, hash: " +
      hash_key("sk-ops-456") +
      ", admin: true}\n"
      "  - name: globex\n"
      "    keys:\n"
      "      - {id: globex-1, hash: " +
      hash_key("sk-globex-789") + "}\n");
  EXPECT_TRUE(f.ok()) << f.status().to_string();
  return *f;
}

TEST(Authenticator, KnownKeysMapToTheirPrincipal) {
  Authenticator auth(keys());
  EXPECT_EQ(auth.key_count(), 3u);
  AuthResult r = auth.authenticate("Bearer sk-acme-123");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.principal->tenant, "acme");
  EXPECT_EQ(r.principal->key_id, "acme-prod");
  EXPECT_FALSE(r.principal->admin);

  r = auth.authenticate("Bearer sk-ops-456");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.principal->key_id, "acme-ops");
  EXPECT_TRUE(r.principal->admin);

  r = auth.authenticate("Bearer sk-globex-789");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.principal->tenant, "globex");
}

TEST(Authenticator, SchemeIsCaseInsensitiveAndSpacesTolerated) {
  Authenticator auth(keys());
  for (const char* v : {"bearer sk-acme-123", "BEARER sk-acme-123", "Bearer   sk-acme-123",
                        " Bearer sk-acme-123 ", "Bearer\tsk-acme-123"}) {
    AuthResult r = auth.authenticate(v);
    ASSERT_TRUE(r.ok()) << v << ": " << r.error;
    EXPECT_EQ(r.principal->key_id, "acme-prod");
  }
}

void expect_refused(const Authenticator& auth, std::optional<std::string_view> value,
                    const std::string& why) {
  AuthResult r = auth.authenticate(value);
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(r.principal);
  EXPECT_NE(r.error.find(why), std::string::npos) << r.error;
  // The message never repeats what was sent.
  for (const char* secret : {"sk-", "wrong", "Basic", "dXNlcjpwYXNz"}) {
    EXPECT_EQ(r.error.find(secret), std::string::npos) << r.error;
  }
}

TEST(Authenticator, RefusalsNeverEchoTheKey) {
  Authenticator auth(keys());
  expect_refused(auth, std::nullopt, "missing 'authorization' metadata");
  expect_refused(auth, "", "empty 'authorization' metadata");
  expect_refused(auth, "   ", "empty 'authorization' metadata");
  expect_refused(auth, "sk-acme-123", "Bearer scheme");  // key without a scheme
  expect_refused(auth, "Basic dXNlcjpwYXNz", "Bearer scheme");
  expect_refused(auth, "Bearersk-acme-123", "Bearer scheme");
  expect_refused(auth, "Bearer", "empty API key");
  expect_refused(auth, "Bearer    ", "empty API key");
  expect_refused(auth, "Bearer sk-wrong", "unknown API key");
  expect_refused(auth, "Bearer sk-acme-12", "unknown API key");    // prefix of a key
  expect_refused(auth, "Bearer sk-acme-1234", "unknown API key");  // key plus a character
  expect_refused(auth, "Bearer SK-ACME-123", "unknown API key");   // keys are case-sensitive
}

TEST(Authenticator, TheHashItselfIsNotAKey) {
  Authenticator auth(keys());
  expect_refused(auth, "Bearer " + hash_key("sk-acme-123"), "unknown API key");
}

TEST(Authenticator, NoKeysRefusesEverything) {
  Authenticator auth(KeysFile{});
  expect_refused(auth, "Bearer sk-acme-123", "unknown API key");
}

TEST(Authenticator, ReplaceSwapsTheWholeKeyList) {
  Authenticator auth(keys());
  auto next = parse_keys(
      "tenants:\n"
      "  - name: acme\n"
      "    keys:\n"
      "      - {id: acme-prod, hash: " +
      hash_key("sk-acme-123") +
      "}\n"
      "      - {id: acme-new, hash: " +
      hash_key("sk-acme-new") + "}\n");
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  auth.replace(*next);
  EXPECT_EQ(auth.key_count(), 2u);
  EXPECT_TRUE(auth.authenticate("Bearer sk-acme-123").ok());  // kept
  AuthResult r = auth.authenticate("Bearer sk-acme-new");     // added
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.principal->key_id, "acme-new");
  for (const char* gone : {"Bearer sk-ops-456", "Bearer sk-globex-789"}) {  // removed
    r = auth.authenticate(gone);
    EXPECT_FALSE(r.ok()) << gone;
    EXPECT_EQ(r.error, "unknown API key");
  }
}

// Readers during replace() see either list whole: a key that is in both always authenticates,
// as the same principal.
TEST(Authenticator, ReplaceWhileAuthenticating) {
  const KeysFile a = keys();
  KeysFile b = a;
  b.keys.pop_back();  // globex-1 goes and comes back
  Authenticator auth(a);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        AuthResult r = auth.authenticate("Bearer sk-ops-456");
        if (!r.ok() || r.principal->key_id != "acme-ops" || !r.principal->admin) ++failures;
      }
    });
  }
  for (int i = 0; i < 2000; ++i) auth.replace(i % 2 ? a : b);
  stop.store(true);
  for (auto& th : readers) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(RequiresKeys, LoopbackOnlyIsExempt) {
  for (const char* host :
       {"127.0.0.1", "127.0.0.1:50051", "127.1.2.3", "127.255.255.255:1", "::1", "[::1]",
        "[::1]:50051", "0:0:0:0:0:0:0:1", "[0:0:0:0:0:0:0:1]:8080", "::ffff:127.0.0.1", "localhost",
        "LocalHost:50051", "localhost.", "localhost.:9"}) {
    EXPECT_FALSE(requires_keys(host)) << host;
  }
  for (const char* host : {"0.0.0.0",
                           "0.0.0.0:50051",
                           "",
                           ":50051",
                           "[::]",
                           "[::]:50051",
                           "::",
                           "10.0.0.1",
                           "192.168.1.5:50051",
                           "128.0.0.1",
                           "126.255.255.255",
                           "[::2]:1",
                           "::ffff:10.0.0.1",
                           "example.com",
                           "localhost.example.com",
                           "127.0.0.1.nip.io",
                           "127.evil.com:80",
                           "127.0.0",
                           "[::1",
                           "[::1]x",
                           "ipv4:127.0.0.1:50051",
                           "my-localhost"}) {
    EXPECT_TRUE(requires_keys(host)) << host;
  }
}

}  // namespace
}  // namespace pagoda::auth

namespace pagoda::auth {
namespace {

// The keys file shown in server/auth/README.md loads, and its example keys authenticate.
TEST(Readme, ExampleKeysFileWorks) {
  std::ifstream in(std::string(PAGODA_SOURCE_DIR) + "/server/auth/README.md");
  ASSERT_TRUE(in);
  std::stringstream text;
  text << in.rdbuf();
  std::string md = text.str();
  size_t begin = md.find("```yaml\n");
  ASSERT_NE(begin, std::string::npos);
  begin += 8;
  size_t end = md.find("```", begin);
  auto f = parse_keys(md.substr(begin, end - begin), "README.md");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->tenants.size(), 2u);
  Authenticator auth(*f);
  AuthResult r = auth.authenticate("Bearer pk-acme-prod-example");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.principal->key_id, "acme-prod");
  r = auth.authenticate("Bearer pk-acme-ops-example");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.principal->admin);
  r = auth.authenticate("Bearer pk-globex-example");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.principal->tenant, "globex");
}

}  // namespace
}  // namespace pagoda::auth
