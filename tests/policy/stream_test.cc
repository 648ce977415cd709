// The streaming output filter: chunk-split matches, holdback bound, block/stop, and the
// property that every chunking gives the one-shot output and never releases a raw match.
#include <gtest/gtest.h>

#include <random>

#include "core/utf8.h"
#include "server/policy/filters.h"

namespace pagoda::policy {
namespace {

std::shared_ptr<const RE2> re(const std::string& p, bool ci = false) {
  auto r = compile_pattern(p, ci);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return *r;
}

OutputFilterDef redact_def(PiiKind k) {
  return OutputFilterDef{std::string(pii_reason(k)),
                         OutputKind::kRedact,
                         std::string(pii_reason(k)),
                         std::string(pii_placeholder(k)),
                         {pii_rule(k)}};
}

std::shared_ptr<const OutputRules> rules(bool deny = true, bool stop = false,
                                         DecisionCounters* counters = nullptr) {
  std::vector<OutputFilterDef> defs;
  if (deny) {
    defs.push_back(
        {"deny",
         OutputKind::kDeny,
         "deny_pattern",
         "",
         {{re(R"(\bforbidden\b)", true), 9, std::nullopt}, {re(R"(secret)"), 6, std::nullopt}}});
  }
  if (stop) {
    defs.push_back(
        {"stop", OutputKind::kStop, "stop_pattern", "", {{re("<END>"), 5, std::nullopt}}});
  }
  for (PiiKind k : {PiiKind::kIban, PiiKind::kCard, PiiKind::kEmail, PiiKind::kPhone}) {
    defs.push_back(redact_def(k));
  }
  return std::make_shared<const OutputRules>(std::move(defs), counters);
}

struct StreamRun {
  std::string out;
  bool blocked = false, stopped = false;
  std::vector<Decision> decisions;
};

// Feeds `text` in chunks of the given sizes; checks after every push that the released text
// is valid UTF-8 and contains none of `raw`.
StreamRun stream(std::shared_ptr<const OutputRules> r, std::string_view text,
                 const std::vector<size_t>& sizes, const std::vector<std::string>& raw = {}) {
  OutputFilterStream s(std::move(r));
  StreamRun run;
  size_t pos = 0;
  for (size_t i = 0; pos < text.size(); ++i) {
    size_t n = std::min(sizes.empty() ? text.size() : sizes[i % sizes.size()], text.size() - pos);
    std::string piece = s.push(text.substr(pos, n));
    pos += n;
    EXPECT_TRUE(valid_utf8(piece)) << "split a UTF-8 character";
    run.out += piece;
    for (const auto& m : raw) {
      EXPECT_EQ(run.out.find(m), std::string::npos) << "released raw match: " << m;
    }
  }
  run.out += s.finish();
  run.blocked = s.blocked();
  run.stopped = s.stopped();
  run.decisions = s.decisions();
  return run;
}

TEST(OutputStream, RedactsAcrossChunkBoundaries) {
  auto r = rules();
  std::string text =
      "write to bob@example.com or call +1 (415) 555-2671, card 4111 1111 1111 1111.";
  StreamRun one = stream(r, text, {});
  EXPECT_EQ(one.out, "write to [EMAIL] or call [PHONE], card [CARD].");
  StreamRun bytes = stream(r, text, {1}, {"bob@example.com", "4111 1111 1111 1111", "555-2671"});
  EXPECT_EQ(bytes.out, one.out);
  EXPECT_FALSE(bytes.blocked);
  EXPECT_EQ(bytes.decisions, one.decisions);
}

TEST(OutputStream, DenySplitAcrossChunksBlocks) {
  OutputFilterStream s(rules());
  std::string out = s.push("this is forb");
  out += s.push("idden text");
  // Blocked once the text before the match is decided: the longest rule (email, 80 bytes)
  // could still start before "forbidden" and run on, so it takes up to 80 more bytes.
  EXPECT_FALSE(s.blocked());
  out += s.push(std::string(80, '.'));
  EXPECT_TRUE(s.blocked());
  out += s.push("more");
  out += s.finish();
  EXPECT_EQ(out, "this is ");
  auto ds = s.decisions();
  EXPECT_EQ(ds[0].action, Action::kBlock);
  EXPECT_EQ(ds[0].reason, "deny_pattern");
  EXPECT_EQ(ds[0].detail, "matched pattern 1");
}

TEST(OutputStream, DenyRespectsWordBoundaryAcrossChunks) {
  StreamRun run = stream(rules(), "the forbiddenness of it", {3});
  EXPECT_FALSE(run.blocked);
  EXPECT_EQ(run.out, "the forbiddenness of it");
}

TEST(OutputStream, StopOnMatchEndsNormally) {
  StreamRun run = stream(rules(false, true), "answer: 42 <EN", {});
  EXPECT_FALSE(run.stopped);
  run = stream(rules(false, true), "answer: a@b.io 42 <END> more text", {2});
  EXPECT_TRUE(run.stopped);
  EXPECT_FALSE(run.blocked);
  EXPECT_EQ(run.out, "answer: [EMAIL] 42 ");
  EXPECT_EQ(run.decisions[0].action, Action::kStop);
  EXPECT_EQ(run.decisions[0].reason, "stop_pattern");
}

TEST(OutputStream, DenyInsideARedactionWins) {
  // "secret" starts an email: the deny wins and none of the address is released.
  StreamRun run = stream(rules(), "mail secret@corp.com now", {4});
  EXPECT_TRUE(run.blocked);
  EXPECT_EQ(run.out, "mail ");
  // Starting inside the address: the text before the address is released, the rest is not.
  run = stream(rules(), "mail topsecret@corp.com now", {1});
  EXPECT_TRUE(run.blocked);
  EXPECT_EQ(run.out, "mail ");
}

TEST(OutputStream, HoldbackBound) {
  auto r = rules();  // longest rule: the email's 80 bytes
  OutputFilterStream s(r);
  ASSERT_EQ(s.max_holdback(), 80u);
  size_t released = 0, pushed = 0;
  for (int i = 0; i < 40; ++i) {
    released += s.push("lorem ipsum ").size();
    pushed += 12;
    // Everything but the last max_len bytes is released at once.
    EXPECT_EQ(released, pushed > 80 ? pushed - 80 : 0) << "after " << pushed << " bytes";
    EXPECT_LE(s.held_bytes(), 80u);
  }
  EXPECT_EQ(released + s.finish().size(), pushed);
}

TEST(OutputStream, HoldbackNeverSplitsUtf8) {
  std::vector<OutputFilterDef> defs{redact_def(PiiKind::kCard)};  // max_len 40
  OutputFilterStream s(std::make_shared<const OutputRules>(std::move(defs), nullptr));
  std::string text(38, 'a');
  text += "日本";                         // bytes 38..43
  std::string out = s.push(text + "bb");  // 46 bytes: positions < 6 decided
  EXPECT_EQ(out, "aaaaaa");
  out = s.push("cc");  // 48 bytes: < 8
  EXPECT_EQ(out, "aa");
  // Without rules nothing is held back except an incomplete character.
  OutputFilterStream pass(nullptr);
  EXPECT_EQ(pass.push("h\xC3"), "h");
  EXPECT_EQ(pass.push("\xA9!"), "\xC3\xA9!");
}

TEST(OutputStream, ReleasesRedactionAsSoonAsDecided) {
  std::vector<OutputFilterDef> defs{redact_def(PiiKind::kCard)};  // max_len 40
  OutputFilterStream s(std::make_shared<const OutputRules>(std::move(defs), nullptr));
  std::string out = s.push("pay 4111 1111 1111 1111");
  EXPECT_EQ(out, "");  // the card could still go on
  out = s.push(std::string(60, ' '));
  EXPECT_EQ(out.substr(0, 10), "pay [CARD]");
}

TEST(OutputStream, CountsDecisionsOncePerStream) {
  DecisionCounters counters;
  auto r = rules(true, false, &counters);
  stream(r, "a@b.io and c@d.io", {3});
  stream(r, "nothing", {3});
  stream(r, "forbidden", {3});
  EXPECT_EQ(counters.get("pii_email", Action::kRedact), 1u);
  EXPECT_EQ(counters.get("pii_email", Action::kAllow), 2u);
  EXPECT_EQ(counters.get("deny", Action::kBlock), 1u);
  EXPECT_EQ(counters.get("deny", Action::kAllow), 2u);
}

// ---- Property: chunking never changes the result --------------------------------------------

struct Planted {
  std::string text, expected;  // expected: the filtered text (up to a deny word)
  std::vector<std::string> raw;
  bool blocked = false;
};

Planted make_text(std::mt19937& rng, bool with_deny) {
  static const char* kWords[] = {"the",    "quick", "brown", "fox",  "héllo", "naïve",
                                 "日本語", "über",  "call",  "mail", "to",    "at",
                                 "card",   "ok",    "—",     "🙂"};
  static const char* kEmails[] = {"bob@example.com", "first.last+tag@sub.example.co.uk",
                                  "x_y@mail.io"};
  static const char* kCards[] = {"4111 1111 1111 1111", "5500-0055-5555-5559", "378282246310005",
                                 "4222222222222"};
  static const char* kIbans[] = {"GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"};
  static const char* kPhones[] = {"+1 (415) 555-2671", "+44 20 7946 0958", "(212) 555-0100"};
  Planted p;
  int n = std::uniform_int_distribution<>(5, 60)(rng);
  bool prev_pii = false;
  int deny_at = with_deny ? std::uniform_int_distribution<>(0, n - 1)(rng) : -1;
  for (int i = 0; i < n; ++i) {
    std::string tok, out;
    int kind = std::uniform_int_distribution<>(0, 9)(rng);
    auto pick = [&](auto& arr) {
      return std::string(arr[std::uniform_int_distribution<size_t>(0, std::size(arr) - 1)(rng)]);
    };
    if (i == deny_at) {
      tok = std::uniform_int_distribution<>(0, 1)(rng) ? "Forbidden" : "secret";
      p.raw.push_back(tok);
      p.text += (i ? " " : "") + tok;
      p.blocked = true;
      if (i) p.expected += " ";
      for (; i + 1 < n; ++i) p.text += " " + pick(kWords);  // text after it is never released
      break;
    }
    if (kind == 0) {
      tok = pick(kEmails), out = "[EMAIL]";
    } else if (kind == 1) {
      tok = pick(kCards), out = "[CARD]";
    } else if (kind == 2) {
      tok = pick(kIbans), out = "[IBAN]";
    } else if (kind == 3) {
      tok = pick(kPhones), out = "[PHONE]";
    } else {
      tok = out = pick(kWords);
    }
    // Planted items are kept apart by a word: "+1 415 555 2671 4111 1111 ..." is ambiguous
    // (read as one international number of up to 15 digits; see filters.h).
    bool pii = tok != out;
    const char* sep = i == 0 ? "" : (pii && prev_pii ? " and " : (kind % 3 == 0 ? ", " : " "));
    prev_pii = pii;
    if (pii) p.raw.push_back(tok);
    p.text += sep + tok;
    p.expected += sep + out;
  }
  return p;
}

TEST(OutputStreamProperty, EveryChunkingEqualsOneShot) {
  auto r = rules(true, false);
  for (uint32_t seed = 1; seed <= 150; ++seed) {
    std::mt19937 rng(seed);
    Planted p = make_text(rng, seed % 3 == 0);
    SCOPED_TRACE("seed " + std::to_string(seed) + ": " + p.text);
    bool blocked = false;
    std::string one = filter_output_text(r, p.text, &blocked);
    ASSERT_EQ(one, p.expected);  // an independent oracle for the one-shot result
    ASSERT_EQ(blocked, p.blocked);
    std::vector<std::vector<size_t>> chunkings = {{1}, {2}, {3}, {7}, {64}};
    for (int k = 0; k < 6; ++k) {
      std::vector<size_t> sizes;
      for (int j = 0; j < 32; ++j) sizes.push_back(std::uniform_int_distribution<>(1, 20)(rng));
      chunkings.push_back(sizes);
    }
    for (const auto& sizes : chunkings) {
      StreamRun run = stream(r, p.text, sizes, p.raw);
      ASSERT_EQ(run.out, one);
      ASSERT_EQ(run.blocked, blocked);
    }
  }
}

TEST(OutputStreamProperty, AllTwoAndThreeWaySplits) {
  auto r = rules(true, true);
  const std::string text = "x bob@ex.io 4111-1111-1111-1111 (212) 555-0100 <END> z";
  const std::string one = filter_output_text(r, text);
  ASSERT_EQ(one, "x [EMAIL] [CARD] [PHONE] ");
  const std::vector<std::string> raw = {"bob@ex.io", "4111-1111-1111-1111", "555-0100", "<END>"};
  for (size_t a = 1; a < text.size(); ++a) {
    for (size_t b = a; b < text.size(); ++b) {
      OutputFilterStream s(r);
      std::string out = s.push(text.substr(0, a));
      out += s.push(text.substr(a, b - a));
      out += s.push(text.substr(b));
      out += s.finish();
      ASSERT_EQ(out, one) << "split at " << a << ", " << b;
      ASSERT_TRUE(s.stopped());
    }
  }
}

}  // namespace
}  // namespace pagoda::policy
