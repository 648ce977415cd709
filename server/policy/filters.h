// The filters of the policy stage: input limits, deny patterns, PII redaction, and the bounded
// match rules that the streaming output filter runs.
//
// Built-in PII patterns (ASCII; redaction placeholder; default max match length in bytes):
//   email  [EMAIL]  80   local@domain.tld: local part [A-Za-z0-9._%+-]+, one or more
//                        [A-Za-z0-9-]+ labels each followed by '.', a TLD of 2+ letters.
//                        "user@localhost" and "a@b.c" are not emails. On output an address
//                        longer than max_len has only its last max_len bytes redacted.
//   phone  [PHONE]  32   international: '+', a 1-3 digit country code, an optional (area) in
//                        parentheses, then 2-5 groups of 2-5 digits separated by at most one
//                        space, '.' or '-', 8-15 digits in all (E.164 allows 15);
//                        NANP-ish: optional "+1"/"1", area code [2-9]dd (optionally in
//                        parentheses), exchange [2-9]dd, line dddd, single separators allowed.
//                        Not preceded by a digit or '+', not followed by a digit. A greedy
//                        international match is cut back to the longest one with <= 15 digits,
//                        so "+1 415 555 2671 4111 …" is read as one number (+1 415 555 2671 4111).
//   card   [CARD]   40   13-19 digits, single spaces or dashes between them allowed, that pass
//                        the Luhn check; not preceded or followed by a digit. When the longest
//                        run fails Luhn, shorter runs from the same start that end before a
//                        separator are tried (a card followed by " 2024" is still found); a
//                        digit run with no Luhn-valid card is left alone.
//   iban   [IBAN]   44   2 uppercase letters, 2 digits, then 11-30 uppercase letters/digits,
//                        optionally grouped by 4 with single spaces ("GB82 WEST 1234 5698
//                        7654 32"), that pass the ISO 13616 mod-97 check; not preceded or
//                        followed by a letter or digit. Like cards, the longest valid prefix
//                        (ending at a group end) wins; otherwise the run is left alone.
#pragma once

#include <re2/re2.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "server/policy/policy.h"

namespace pagoda::policy {

enum class PiiKind { kEmail, kPhone, kCard, kIban };
std::string_view pii_kind_name(PiiKind kind);  // "email", "phone", "card", "iban"
std::optional<PiiKind> parse_pii_kind(std::string_view name);
std::string_view pii_placeholder(PiiKind kind);  // "[EMAIL]", ...
std::string_view pii_reason(PiiKind kind);       // "pii_email", ...
size_t pii_default_max_len(PiiKind kind);

// Luhn check over the digits of `s` (spaces and dashes skipped; any other byte: false).
// Needs at least 2 digits.
bool luhn_valid(std::string_view s);
// ISO 13616 mod-97 check of an IBAN (spaces skipped): country letters, check digits, and
// 11-30 alphanumerics; the rearranged number mod 97 must be 1.
bool iban_valid(std::string_view s);

// One bounded pattern: an RE2 plus, for built-in PII, boundary checks and a validator.
struct MatchRule {
  std::shared_ptr<const RE2> re;
  size_t max_len = 0;
  std::optional<PiiKind> pii;
};

// A compiled regex from a config pattern (UTF-8; case-insensitive on request). Errors name
// RE2's message; patterns that match the empty string are refused.
StatusOr<std::shared_ptr<const RE2>> compile_pattern(const std::string& pattern,
                                                     bool case_insensitive);
MatchRule pii_rule(PiiKind kind, size_t max_len = 0);  // 0: the default max_len

struct Span {
  size_t start = 0, end = 0;
};
// The earliest position p in [from, limit) at which `rule` has a valid match inside
// text[p, min(p + max_len, text.size())) (text is the whole context for \b, ^, $ and the PII
// boundaries). Empty matches do not count.
std::optional<Span> earliest_match(const MatchRule& rule, std::string_view text, size_t from,
                                   size_t limit);

// ---- Output filters, compiled ------------------------------------------------------------

enum class OutputKind { kRedact, kDeny, kStop };

struct OutputFilterDef {
  std::string name;
  OutputKind kind = OutputKind::kRedact;
  std::string reason;       // "deny_pattern", "stop_pattern", "pii_email", ...
  std::string placeholder;  // redactions only
  std::vector<MatchRule> rules;
};

class OutputRules {
 public:
  OutputRules(std::vector<OutputFilterDef> filters, DecisionCounters* counters);
  const std::vector<OutputFilterDef>& filters() const { return filters_; }
  size_t max_len() const { return max_len_; }  // the holdback bound
  DecisionCounters::Slot* slot(size_t filter) const { return slots_[filter]; }
  bool empty() const { return filters_.empty(); }

 private:
  std::vector<OutputFilterDef> filters_;
  std::vector<DecisionCounters::Slot*> slots_;
  size_t max_len_ = 0;
};

// ---- Input filters -----------------------------------------------------------------------

// Blocks prompts longer than max_chars Unicode code points (invalid UTF-8 bytes count one each).
class PromptLengthFilter : public InputFilter {
 public:
  PromptLengthFilter(std::string name, int64_t max_chars);
  const std::string& name() const override { return name_; }
  Decision apply(std::string& text, const InputContext& ctx) const override;

 private:
  std::string name_;
  int64_t max_chars_;
};

// Blocks prompts whose token count (InputContext::prompt_tokens) is above max_tokens.
class TokenLimitFilter : public InputFilter {
 public:
  TokenLimitFilter(std::string name, int64_t max_tokens);
  const std::string& name() const override { return name_; }
  Decision apply(std::string& text, const InputContext& ctx) const override;

 private:
  std::string name_;
  int64_t max_tokens_;
};

// Blocks when any pattern matches anywhere in the text (no length bound on input).
class DenyFilter : public InputFilter {
 public:
  DenyFilter(std::string name, std::vector<std::shared_ptr<const RE2>> patterns);
  const std::string& name() const override { return name_; }
  Decision apply(std::string& text, const InputContext& ctx) const override;

 private:
  std::string name_;
  std::vector<std::shared_ptr<const RE2>> patterns_;
};

// Replaces every valid match of one PII kind with its placeholder.
class PiiRedactFilter : public InputFilter {
 public:
  PiiRedactFilter(std::string name, PiiKind kind);
  const std::string& name() const override { return name_; }
  Decision apply(std::string& text, const InputContext& ctx) const override;

 private:
  std::string name_;
  PiiKind kind_;
  MatchRule rule_;
};

}  // namespace pagoda::policy
