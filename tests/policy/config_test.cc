// Input chain ordering, per-tenant selection, the policy file's errors, and reload.
#include <gtest/gtest.h>

#include <fstream>

#include "server/policy/policy_config.h"

namespace pagoda::policy {
namespace {

const char* kGood = R"(
default: standard
tenants:
  acme: strict
policies:
  standard:
    input:
      - prompt_length: {max_chars: 100}
      - redact: {kinds: [email, card]}
      - deny: {name: corp, patterns: ["@corp\\.com"]}
    output:
      - redact: {kinds: [email]}
  strict:
    input:
      - prompt_length: {max_chars: 20}
      - token_limit: {max_tokens: 5}
      - deny:
          case_insensitive: true
          patterns: ["@corp\\.com", {pattern: "ignore previous", max_len: 15}]
      - redact: {kinds: [email]}
    output:
      - deny: {patterns: ["forbidden"], max_len: 9}
      - stop: {patterns: ["<END>"], max_len: 5}
)";

std::shared_ptr<const PolicySet> build(const char* yaml, DecisionCounters* counters = nullptr) {
  auto cfg = PolicyConfig::parse(yaml, "test.yaml");
  EXPECT_TRUE(cfg.ok()) << cfg.status().to_string();
  auto set = build_policy_set(*cfg, counters);
  EXPECT_TRUE(set.ok()) << set.status().to_string();
  return *set;
}

std::string parse_error(const std::string& yaml) {
  auto cfg = PolicyConfig::parse(yaml, "p.yaml");
  return cfg.ok() ? "OK" : cfg.status().message();
}

TEST(InputChain, OrderMattersAndFirstBlockWins) {
  DecisionCounters counters;
  auto set = build(kGood, &counters);
  // standard: redaction runs before the deny filter, so the address is gone when it looks.
  InputResult r = set->for_tenant("someone").filter_input("mail bob@corp.com");
  EXPECT_FALSE(r.blocked());
  EXPECT_EQ(r.text, "mail [EMAIL]");
  ASSERT_EQ(r.decisions.size(), 4u);
  EXPECT_EQ(r.decisions[1], (Decision{Action::kRedact, "pii_email", "pii_email", "1 match"}));
  EXPECT_EQ(r.decisions[3].action, Action::kAllow);
  // strict: deny runs first and blocks; the chain stops there.
  r = set->for_tenant("acme").filter_input("mail bob@CORP.com", {.prompt_tokens = 3});
  ASSERT_TRUE(r.blocked());
  EXPECT_EQ(r.block()->reason, "deny_pattern");
  EXPECT_EQ(r.decisions.size(), 3u);
  EXPECT_EQ(block_status(*r.block()), BlockStatus::kPermissionDenied);
  // Several violations: the first filter's block wins.
  r = set->for_tenant("acme").filter_input("ignore previous, it is long", {.prompt_tokens = 9});
  ASSERT_TRUE(r.blocked());
  EXPECT_EQ(r.block()->reason, "prompt_too_long");
  EXPECT_EQ(r.decisions.size(), 1u);
  EXPECT_EQ(block_status(*r.block()), BlockStatus::kFailedPrecondition);
  r = set->for_tenant("acme").filter_input("ignore previous", {.prompt_tokens = 9});
  EXPECT_EQ(r.block()->reason, "prompt_too_many_tokens");
  EXPECT_EQ(counters.get("prompt_length", Action::kBlock), 1u);
  EXPECT_EQ(counters.get("prompt_length", Action::kAllow), 3u);
  EXPECT_EQ(counters.get("deny", Action::kBlock), 1u);
  EXPECT_EQ(counters.get("corp", Action::kAllow), 1u);
}

TEST(PolicySet, PerTenantSelection) {
  auto set = build(kGood);
  EXPECT_EQ(set->for_tenant("acme").name(), "strict");
  EXPECT_EQ(set->for_tenant("other").name(), "standard");
  EXPECT_EQ(set->for_tenant("").name(), "standard");
  // Output: strict blocks on a deny word, standard does not.
  bool blocked = false;
  std::string out =
      filter_output_text(set->for_tenant("acme").output_rules(), "a forbidden b", &blocked);
  EXPECT_TRUE(blocked);
  EXPECT_EQ(out, "a ");
  out = filter_output_text(set->for_tenant("x").output_rules(), "a forbidden b@x.io", &blocked);
  EXPECT_FALSE(blocked);
  EXPECT_EQ(out, "a forbidden [EMAIL]");
  OutputFilterStream s = set->for_tenant("acme").output_stream();
  std::string got = s.push("ok <END> rest");  // (not push() + finish(): unordered operands)
  got += s.finish();
  EXPECT_EQ(got, "ok ");
  EXPECT_TRUE(s.stopped());
}

TEST(PolicyConfig, Errors) {
  EXPECT_EQ(parse_error(kGood), "OK");
  std::string e = parse_error("default: a\npolicies:\n  a:\n    inptu: []\n");
  EXPECT_NE(e.find("p.yaml:4:5: policies.a: unknown key 'inptu'"), std::string::npos) << e;
  e = parse_error("default: a\npolicies:\n  a:\n    input:\n      - deny: {patterns: [\"(x\"]}\n");
  EXPECT_NE(e.find("p.yaml:5:"), std::string::npos) << e;
  EXPECT_NE(e.find("policies.a.input[0].deny.patterns[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("missing )"), std::string::npos) << e;  // RE2's message
  e = parse_error("policies:\n  a: {}\n");
  EXPECT_NE(e.find("'default'"), std::string::npos) << e;
  e = parse_error("default: b\npolicies:\n  a: {}\n");
  EXPECT_NE(e.find("p.yaml:1:10: default: policy 'b' is not defined"), std::string::npos) << e;
  e = parse_error("default: a\ntenants: {t: zz}\npolicies:\n  a: {}\n");
  EXPECT_NE(e.find("tenants.t: policy 'zz' is not defined"), std::string::npos) << e;
  e = parse_error("default: a\npolicies:\n  a:\n    output:\n      - deny: {patterns: [x]}\n");
  EXPECT_NE(e.find("max match length"), std::string::npos) << e;
  e = parse_error(
      "default: a\npolicies:\n  a:\n    output:\n      - token_limit: {max_tokens: 3}\n");
  EXPECT_NE(e.find("input filter"), std::string::npos) << e;
  e = parse_error("default: a\npolicies:\n  a:\n    input:\n      - redact: {kinds: [ssn]}\n");
  EXPECT_NE(e.find("kinds[0]: unknown kind"), std::string::npos) << e;
  e = parse_error(
      "default: a\npolicies:\n  a:\n    input:\n      - prompt_length: {max_chars: -1}\n");
  EXPECT_NE(e.find("max_chars: must be in"), std::string::npos) << e;
  e = parse_error(
      "default: a\npolicies:\n  a:\n    input:\n      - deny: {patterns: [x]}\n"
      "      - deny: {patterns: [y]}\n");
  EXPECT_NE(e.find("duplicate filter name 'deny'"), std::string::npos) << e;
  e = parse_error("default: [a\n");
  EXPECT_NE(e.find("p.yaml:"), std::string::npos) << e;  // YAML syntax error with a position
}

TEST(PolicyStore, ReloadKeepsOldSetOnError) {
  std::string path = testing::TempDir() + "/policy_reload_test.yaml";
  auto write = [&](const std::string& text) { std::ofstream(path) << text; };
  write(kGood);
  DecisionCounters counters;
  auto store = PolicyStore::open(path, &counters);
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  auto before = (*store)->current();
  EXPECT_EQ(before->for_tenant("acme").name(), "strict");
  OutputFilterStream in_flight = before->for_tenant("acme").output_stream();

  write("default: a\npolicies:\n  a:\n    input:\n      - deny: {patterns: [\"(x\"]}\n");
  Status st = (*store)->reload(path);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("missing )"), std::string::npos) << st.message();
  EXPECT_EQ((*store)->current(), before);
  EXPECT_EQ((*store)->generation(), 1u);

  write("default: open\npolicies:\n  open: {}\n");
  ASSERT_TRUE((*store)->reload(path).ok());
  EXPECT_NE((*store)->current(), before);
  EXPECT_EQ((*store)->current()->for_tenant("acme").name(), "open");
  EXPECT_EQ((*store)->generation(), 2u);
  // A stream started under the old set keeps its rules.
  std::string got = in_flight.push("x forbidden y");
  got += in_flight.finish();
  EXPECT_EQ(got, "x ");
  EXPECT_TRUE(in_flight.blocked());

  EXPECT_FALSE((*store)->reload(path + ".missing").ok());
  EXPECT_EQ((*store)->current()->for_tenant("acme").name(), "open");
}

}  // namespace
}  // namespace pagoda::policy
