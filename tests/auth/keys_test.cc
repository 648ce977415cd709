#include "server/auth/keys.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace pagoda::auth {
namespace {

// Line numbers matter: the error tests below replace single lines and expect them in messages.
std::string good_file() {
  const std::string lines[] = {
      "tenants:",                                      // 1
      "  - name: acme",                                // 2
      "    limits:",                                   // 3
      "      requests_per_second: 2.5",                // 4
      "      burst: 5",                                // 5
      "      tokens_per_minute: 10000",                // 6
      "      max_concurrent_requests: 4",              // 7
      "      max_prompt_tokens: 2048",                 // 8
      "      max_completion_tokens: 512",              // 9
      "    keys:",                                     // 10
      "      - id: acme-prod",                         // 11
      "        hash: " + hash_key("k-alpha"),          // 12
      "      - id: acme-ops",                          // 13
      "        hash: " + hash_key("k-admin"),          // 14
      "        admin: true",                           // 15
      "  - name: globex",                              // 16
      "    keys:",                                     // 17
      "      - id: globex-1",                          // 18
      "        hash: \"" + hash_key("k-beta") + "\"",  // 19
  };
  std::string text;
  for (const std::string& l : lines) text += l + "\n";
  return text;
}

std::string with_line(std::string text, int line, const std::string& replacement) {
  size_t pos = 0;
  for (int i = 1; i < line; ++i) pos = text.find('\n', pos) + 1;
  size_t end = text.find('\n', pos);
  return text.replace(pos, end - pos, replacement);
}

TEST(Keys, ParsesTenantsLimitsAndKeys) {
  auto f = parse_keys(good_file());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ(f->tenants.size(), 2u);
  const Tenant* acme = f->find_tenant("acme");
  ASSERT_NE(acme, nullptr);
  EXPECT_EQ(acme->limits.requests_per_second, 2.5);
  EXPECT_EQ(acme->limits.burst, 5);
  EXPECT_EQ(acme->limits.tokens_per_minute, 10000);
  EXPECT_EQ(acme->limits.max_concurrent_requests, 4);
  EXPECT_EQ(acme->limits.max_prompt_tokens, 2048);
  EXPECT_EQ(acme->limits.max_completion_tokens, 512);
  const Tenant* globex = f->find_tenant("globex");
  ASSERT_NE(globex, nullptr);
  EXPECT_FALSE(globex->limits.requests_per_second);
  EXPECT_FALSE(globex->limits.tokens_per_minute);
  EXPECT_FALSE(globex->limits.max_concurrent_requests);
  EXPECT_EQ(f->find_tenant("nobody"), nullptr);

  ASSERT_EQ(f->keys.size(), 3u);
  EXPECT_EQ(f->keys[0].id, "acme-prod");
  EXPECT_EQ(f->keys[0].tenant, "acme");
  EXPECT_FALSE(f->keys[0].admin);
  EXPECT_TRUE(digests_equal(f->keys[0].hash, sha256("k-alpha")));
  EXPECT_EQ(f->keys[1].id, "acme-ops");
  EXPECT_TRUE(f->keys[1].admin);
  EXPECT_EQ(f->keys[2].tenant, "globex");
  EXPECT_TRUE(digests_equal(f->keys[2].hash, sha256("k-beta")));
}

TEST(Keys, UppercaseHexAccepted) {
  std::string upper = hash_key("k-alpha");
  for (size_t i = 7; i < upper.size(); ++i) upper[i] = static_cast<char>(std::toupper(upper[i]));
  auto f = parse_keys(with_line(good_file(), 12, "        hash: " + upper));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_TRUE(digests_equal(f->keys[0].hash, sha256("k-alpha")));
}

void expect_error(const std::string& text, const std::string& where, const std::string& what) {
  auto f = parse_keys(text, "keys.yaml");
  ASSERT_FALSE(f.ok()) << "expected an error at " << where;
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = f.status().message();
  EXPECT_NE(m.find(where), std::string::npos) << m;
  EXPECT_NE(m.find(what), std::string::npos) << m;
}

TEST(Keys, BadHashFormatNamesLineAndKey) {
  // A plain key pasted instead of its hash: refused, and the message does not repeat it.
  std::string text = with_line(good_file(), 12, "        hash: my-secret-plain-key");
  expect_error(text, "keys.yaml:12:", "key 'acme-prod'");
  expect_error(text, "keys.yaml:12:", "sha256:<64 hex digits>");
  EXPECT_EQ(parse_keys(text).status().message().find("my-secret-plain-key"), std::string::npos);

  expect_error(with_line(good_file(), 12, "        hash: sha256:abcd"),
               "keys.yaml:12:", "got 4 characters");
  std::string nonhex = "sha256:" + std::string(63, 'a') + "g";
  expect_error(with_line(good_file(), 12, "        hash: " + nonhex), "keys.yaml:12:", "not hex");
  expect_error(with_line(good_file(), 12, "        hash: md5:" + std::string(32, 'a')),
               "keys.yaml:12:", "key 'acme-prod'");
}

TEST(Keys, MissingHash) {
  expect_error(with_line(good_file(), 12, "        admin: false"),
               "keys.yaml:11:", "key 'acme-prod': missing hash");
}

TEST(Keys, DuplicateKeyHashNamesSecondKey) {
  expect_error(with_line(good_file(), 19, "        hash: " + hash_key("k-alpha")),
               "keys.yaml:19:", "key 'globex-1': duplicate key");
}

TEST(Keys, DuplicateKeyIdAndTenant) {
  expect_error(with_line(good_file(), 18, "      - id: acme-prod"),
               "keys.yaml:18:", "key 'acme-prod': duplicate key id");
  expect_error(with_line(good_file(), 16, "  - name: acme"),
               "keys.yaml:16:", "tenant 'acme': duplicate tenant name");
}

TEST(Keys, UnknownFieldNamesLine) {
  expect_error(with_line(good_file(), 15, "        root: true"),
               "keys.yaml:15:", "unknown field 'root'");
  expect_error(with_line(good_file(), 6, "      tokens_per_hour: 5"),
               "keys.yaml:6:", "tenant 'acme': limits: unknown field 'tokens_per_hour'");
  expect_error(with_line(good_file(), 3, "    limitz:"), "keys.yaml:3:", "unknown field 'limitz'");
  expect_error("tenants: []\nversion: 2\n", "keys.yaml:2:", "unknown field 'version'");
}

TEST(Keys, NegativeOrZeroLimit) {
  expect_error(with_line(good_file(), 6, "      tokens_per_minute: -5"), "keys.yaml:6:",
               "tenant 'acme': limits.tokens_per_minute: must be a positive integer");
  expect_error(with_line(good_file(), 7, "      max_concurrent_requests: 0"), "keys.yaml:7:",
               "max_concurrent_requests: must be a positive integer (omit it for no limit), got 0");
  expect_error(with_line(good_file(), 4, "      requests_per_second: -1"),
               "keys.yaml:4:", "requests_per_second: must be a positive number");
  expect_error(with_line(good_file(), 8, "      max_prompt_tokens: 1.5"),
               "keys.yaml:8:", "max_prompt_tokens: expected an integer");
  expect_error(with_line(good_file(), 9, "      max_completion_tokens: lots"),
               "keys.yaml:9:", "expected an integer");
}

TEST(Keys, OtherErrors) {
  expect_error("", "keys.yaml", "empty keys file");
  expect_error("tenants: []\n", "keys.yaml:1:", "non-empty list of tenants");
  expect_error("tenants:\n  - name: bad name\n", "keys.yaml:2:", "[A-Za-z0-9._-]");
  expect_error("tenants:\n  - keys: []\n", "keys.yaml:2:", "name: missing");
  expect_error(with_line(good_file(), 15, "        admin: maybe"),
               "keys.yaml:15:", "expected true or false");
  expect_error("tenants:\n  - name: a\n    limits: {burst: 3}\n",
               "keys.yaml:3:", "needs requests_per_second");
  // YAML syntax errors come back as a Status (yaml-cpp throws inside).
  expect_error("tenants: [\n", "keys.yaml:", "");
}

TEST(Keys, LoadFile) {
  std::string path = testing::TempDir() + "/pagoda_keys_test.yaml";
  {
    std::ofstream out(path);
    out << good_file();
  }
  auto f = load_keys_file(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->keys.size(), 3u);
  std::remove(path.c_str());

  auto missing = load_keys_file("/nonexistent/keys.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/keys.yaml"), std::string::npos);
}

}  // namespace
}  // namespace pagoda::auth
