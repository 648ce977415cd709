#include "server/auth/key_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace pagoda::auth {
namespace {

const LimitTime kT0 = LimitTime{} + std::chrono::hours(1000);

// A keys file on disk, rewritten between reloads as an operator would.
class KeysFileOnDisk {
 public:
  KeysFileOnDisk() {
    char name[] = "/tmp/pagoda-keystore-XXXXXX";
    const int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    if (fd >= 0) close(fd);
    path_ = name;
  }
  ~KeysFileOnDisk() { std::remove(path_.c_str()); }

  void write(const std::string& text) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << text;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// acme (concurrency cap `acme_cap`, max_completion_tokens `acme_max_completion`) with key
// acme-1; globex with key globex-1 unless `with_globex` is false; initech (key initech-1) when
// `with_initech`.
std::string keys_yaml(int acme_cap, int acme_max_completion, bool with_globex = true,
                      bool with_initech = false) {
  std::string text =
      "tenants:\n"
      "  - name: acme\n"
      "    limits: {max_concurrent_requests: " +
      std::to_string(acme_cap) + ", max_completion_tokens: " + std::to_string(acme_max_completion) +
      "}\n"
      "    keys:\n"
      "      - {id: acme-1, hash: \"" +
      hash_key("k-acme") + "\"}\n";
  if (with_globex) {
    text += "  - name: globex\n    keys:\n      - {id: globex-1, hash: \"" + hash_key("k-globex") +
            "\"}\n";
  }
  if (with_initech) {
    text += "  - name: initech\n    keys:\n      - {id: initech-1, hash: \"" +
            hash_key("k-initech") + "\"}\n";
  }
  return text;
}

std::string tenant_of(KeyStore& store, const std::string& key) {
  AuthResult r = store.authenticator()->authenticate("Bearer " + key);
  return r.ok() ? r.principal->tenant : "(" + r.error + ")";
}

TEST(KeyStore, OpenRefusesABadFile) {
  KeysFileOnDisk file;
  file.write("tenants: []\n");
  auto store = KeyStore::open(file.path());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(KeyStore::open(file.path() + ".missing").status().code(), StatusCode::kNotFound);
}

TEST(KeyStore, InvalidFileKeepsTheOldKeysAndLimits) {
  KeysFileOnDisk file;
  file.write(keys_yaml(1, 10));
  auto opened = KeyStore::open(file.path());
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  KeyStore& store = **opened;
  Limiter& limiter = *store.limiter();
  Admission running = limiter.admit("acme", 1, 1, kT0);
  ASSERT_TRUE(running.ok());

  // A syntax error, then a semantic one, then a missing file: each is reported (with the
  // place in the file) and changes nothing.
  file.write(keys_yaml(5, 100) + "  - name: [unclosed\n");
  Status s = store.reload(file.path(), kT0);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(file.path() + ":"), std::string::npos) << s.message();
  file.write(keys_yaml(5, 100) + "  - name: acme\n");
  s = store.reload(file.path(), kT0);
  EXPECT_NE(s.message().find("duplicate tenant name"), std::string::npos) << s.message();
  s = store.reload(file.path() + ".missing", kT0);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);

  EXPECT_EQ(store.generation(), 1u);
  EXPECT_EQ(tenant_of(store, "k-acme"), "acme");
  EXPECT_EQ(tenant_of(store, "k-globex"), "globex");
  EXPECT_EQ(store.authenticator()->key_count(), 2u);
  // The old limits: cap 1 (one runs), max_completion_tokens 10.
  Admission a = limiter.admit("acme", 1, 1, kT0);
  EXPECT_EQ(a.limit, LimitKind::kMaxConcurrentRequests) << a.status.to_string();
  ASSERT_TRUE(limiter.release(running.ticket, 1, 1, kT0).ok());
  EXPECT_EQ(limiter.admit("acme", 1, 11, kT0).limit, LimitKind::kMaxCompletionTokens);
}

TEST(KeyStore, ReloadAddsAndRemovesKeysAndAppliesNewLimits) {
  KeysFileOnDisk file;
  file.write(keys_yaml(2, 10));
  auto opened = KeyStore::open(file.path());
  ASSERT_TRUE(opened.ok()) << opened.status().to_string();
  KeyStore& store = **opened;
  Limiter& limiter = *store.limiter();
  EXPECT_EQ(tenant_of(store, "k-initech"), "(unknown API key)");
  // Two acme requests in flight across the reload.
  Admission a = limiter.admit("acme", 1, 1, kT0), b = limiter.admit("acme", 1, 1, kT0);
  ASSERT_TRUE(a.ok() && b.ok());

  // globex removed, initech added; acme's cap 2 -> 3 and max_completion_tokens 10 -> 4.
  file.write(keys_yaml(3, 4, /*with_globex=*/false, /*with_initech=*/true));
  ASSERT_TRUE(store.reload(file.path(), kT0).ok());
  EXPECT_EQ(store.generation(), 2u);

  EXPECT_EQ(tenant_of(store, "k-acme"), "acme");
  EXPECT_EQ(tenant_of(store, "k-globex"), "(unknown API key)");  // UNAUTHENTICATED on the wire
  EXPECT_EQ(tenant_of(store, "k-initech"), "initech");
  EXPECT_TRUE(limiter.admit("initech", 1, 1, kT0).ok());

  // The kept tenant's count survived: with cap 3 and two running, one more fits, not two.
  EXPECT_EQ(limiter.usage("acme", kT0).running, 2);
  Admission c = limiter.admit("acme", 1, 1, kT0);
  ASSERT_TRUE(c.ok()) << c.status.to_string();
  Admission d = limiter.admit("acme", 1, 1, kT0);
  EXPECT_EQ(d.limit, LimitKind::kMaxConcurrentRequests) << d.status.to_string();
  EXPECT_NE(d.status.message().find("limit (3) reached: 3 requests running"), std::string::npos)
      << d.status.message();
  // The changed per-request cap applies.
  for (Admission* t : {&a, &b, &c}) ASSERT_TRUE(limiter.release(t->ticket, 1, 1, kT0).ok());
  Admission e = limiter.admit("acme", 1, 5, kT0);
  EXPECT_EQ(e.limit, LimitKind::kMaxCompletionTokens) << e.status.to_string();
  EXPECT_NE(e.status.message().find("max_completion_tokens limit (4)"), std::string::npos);
  EXPECT_TRUE(limiter.admit("acme", 1, 4, kT0).ok());
}

}  // namespace
}  // namespace pagoda::auth
