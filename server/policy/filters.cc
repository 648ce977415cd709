#include "server/policy/filters.h"

#include <algorithm>
#include <climits>

namespace pagoda::policy {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_upper(char c) {
  return c >= 'A' && c <= 'Z';
}
bool is_alnum(char c) {
  return is_digit(c) || is_upper(c) || (c >= 'a' && c <= 'z');
}
bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// No bound on input: the whole prompt is one window.
constexpr size_t kUnbounded = size_t{1} << 40;

const char* pii_regex(PiiKind kind) {
  switch (kind) {
    case PiiKind::kEmail: return R"([A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})";
    case PiiKind::kPhone:
      return R"(\+[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{2,5}){2,5})"
             R"(|(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .-]?[2-9]\d{2}[ .-]?\d{4})";
    case PiiKind::kCard: return R"(\d(?:[ -]?\d){12,18})";
    case PiiKind::kIban: return R"([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)";
  }
  return "";
}

std::shared_ptr<const RE2> pii_re(PiiKind kind) {
  // Compiled once per process; RE2 is thread-safe for matching.
  static const std::shared_ptr<const RE2> res[] = {
      std::make_shared<const RE2>(pii_regex(PiiKind::kEmail)),
      std::make_shared<const RE2>(pii_regex(PiiKind::kPhone)),
      std::make_shared<const RE2>(pii_regex(PiiKind::kCard)),
      std::make_shared<const RE2>(pii_regex(PiiKind::kIban)),
  };
  return res[static_cast<int>(kind)];
}

char at(std::string_view text, size_t i) {
  return i < text.size() ? text[i] : '\0';
}
char before(std::string_view text, size_t i) {
  return i > 0 ? text[i - 1] : '\0';
}

// NANP forms are exact; an international form ('+') takes the longest end e' <= e that ends a
// digit group (the byte at e' not a digit) and holds 8-15 digits: a greedy match may have
// swallowed the groups of a number that follows.
std::optional<size_t> accept_phone(std::string_view text, size_t s, size_t e) {
  char prev = before(text, s);
  if (is_digit(prev) || prev == '+') return std::nullopt;
  if (text[s] != '+') return is_digit(at(text, e)) ? std::nullopt : std::optional<size_t>(e);
  for (size_t end = e; end > s; --end) {
    if (!is_digit(text[end - 1]) || is_digit(at(text, end))) continue;
    std::string_view cand = text.substr(s, end - s);
    auto digits = std::count_if(cand.begin(), cand.end(), is_digit);
    if (digits < 8) break;
    if (digits <= 15) return end;
  }
  return std::nullopt;
}

// Longest end e' in (s, e] with text[e'-1] a digit, the byte at e' not a digit, >= 13 digits
// and a valid Luhn sum.
std::optional<size_t> accept_card(std::string_view text, size_t s, size_t e) {
  if (is_digit(before(text, s))) return std::nullopt;
  for (size_t end = e; end > s; --end) {
    if (!is_digit(text[end - 1]) || is_digit(at(text, end))) continue;
    std::string_view cand = text.substr(s, end - s);
    if (std::count_if(cand.begin(), cand.end(), is_digit) < 13) break;
    if (luhn_valid(cand)) return end;
  }
  return std::nullopt;
}

std::optional<size_t> accept_iban(std::string_view text, size_t s, size_t e) {
  if (is_alnum(before(text, s))) return std::nullopt;
  for (size_t end = e; end > s; --end) {
    if (!is_alnum(text[end - 1]) || is_alnum(at(text, end))) continue;
    std::string_view cand = text.substr(s, end - s);
    if (std::count_if(cand.begin(), cand.end(), is_alnum) < 15) break;
    if (iban_valid(cand)) return end;
  }
  return std::nullopt;
}

std::optional<size_t> accept(const MatchRule& rule, std::string_view text, size_t s, size_t e) {
  if (!rule.pii) return e;
  switch (*rule.pii) {
    case PiiKind::kEmail: return e;
    case PiiKind::kPhone: return accept_phone(text, s, e);
    case PiiKind::kCard: return accept_card(text, s, e);
    case PiiKind::kIban: return accept_iban(text, s, e);
  }
  return std::nullopt;
}

Decision allow(const std::string& name, std::string detail = "") {
  return Decision{Action::kAllow, name, "ok", std::move(detail)};
}

}  // namespace

std::string_view pii_kind_name(PiiKind kind) {
  switch (kind) {
    case PiiKind::kEmail: return "email";
    case PiiKind::kPhone: return "phone";
    case PiiKind::kCard: return "card";
    case PiiKind::kIban: return "iban";
  }
  return "";
}

std::optional<PiiKind> parse_pii_kind(std::string_view name) {
  for (PiiKind k : {PiiKind::kEmail, PiiKind::kPhone, PiiKind::kCard, PiiKind::kIban}) {
    if (pii_kind_name(k) == name) return k;
  }
  return std::nullopt;
}

std::string_view pii_placeholder(PiiKind kind) {
  switch (kind) {
    case PiiKind::kEmail: return "[EMAIL]";
    case PiiKind::kPhone: return "[PHONE]";
    case PiiKind::kCard: return "[CARD]";
    case PiiKind::kIban: return "[IBAN]";
  }
  return "";
}

std::string_view pii_reason(PiiKind kind) {
  switch (kind) {
    case PiiKind::kEmail: return "pii_email";
    case PiiKind::kPhone: return "pii_phone";
    case PiiKind::kCard: return "pii_card";
    case PiiKind::kIban: return "pii_iban";
  }
  return "";
}

size_t pii_default_max_len(PiiKind kind) {
  switch (kind) {
    case PiiKind::kEmail: return 80;
    case PiiKind::kPhone: return 32;
    case PiiKind::kCard: return 40;
    case PiiKind::kIban: return 44;
  }
  return 0;
}

bool luhn_valid(std::string_view s) {
  int sum = 0, n = 0;
  for (size_t i = s.size(); i-- > 0;) {
    char c = s[i];
    if (c == ' ' || c == '-') continue;
    if (!is_digit(c)) return false;
    int d = c - '0';
    if (n % 2 == 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
    ++n;
  }
  return n >= 2 && sum % 10 == 0;
}

bool iban_valid(std::string_view s) {
  std::string compact;
  for (char c : s) {
    if (c == ' ') continue;
    if (!is_digit(c) && !is_upper(c)) return false;
    compact.push_back(c);
  }
  if (compact.size() < 15 || compact.size() > 34) return false;
  if (!is_upper(compact[0]) || !is_upper(compact[1]) || !is_digit(compact[2]) ||
      !is_digit(compact[3])) {
    return false;
  }
  std::string rearranged = compact.substr(4) + compact.substr(0, 4);
  int rem = 0;
  for (char c : rearranged) {
    int v = is_digit(c) ? c - '0' : c - 'A' + 10;
    rem = v >= 10 ? (rem * 100 + v) % 97 : (rem * 10 + v) % 97;
  }
  return rem == 1;
}

StatusOr<std::shared_ptr<const RE2>> compile_pattern(const std::string& pattern,
                                                     bool case_insensitive) {
  RE2::Options opts;
  opts.set_log_errors(false);
  opts.set_case_sensitive(!case_insensitive);
  auto re = std::make_shared<const RE2>(pattern, opts);
  if (!re->ok()) return InvalidArgument("invalid regex '" + pattern + "': " + re->error());
  if (RE2::FullMatch("", *re)) {
    return InvalidArgument("regex '" + pattern + "' matches the empty string");
  }
  return std::shared_ptr<const RE2>(std::move(re));
}

MatchRule pii_rule(PiiKind kind, size_t max_len) {
  return MatchRule{pii_re(kind), max_len ? max_len : pii_default_max_len(kind), kind};
}

std::optional<Span> earliest_match(const MatchRule& rule, std::string_view text, size_t from,
                                   size_t limit) {
  limit = std::min(limit, text.size());
  re2::StringPiece all(text.data(), text.size()), m;
  size_t p = from;
  while (p < limit) {
    if (!rule.re->Match(all, p, text.size(), RE2::UNANCHORED, &m, 1)) return std::nullopt;
    size_t s = static_cast<size_t>(m.data() - text.data());
    if (s >= limit) return std::nullopt;
    // A match found without the bound says only that no match starts before s; the rule's
    // match at s is the one inside text[s, s + max_len).
    size_t endpos = std::min(text.size(), s + std::min(rule.max_len, text.size()));
    if (rule.re->Match(all, s, endpos, RE2::ANCHOR_START, &m, 1) && !m.empty()) {
      if (auto end = accept(rule, text, s, s + m.size())) return Span{s, *end};
    }
    p = s + 1;
    while (p < text.size() && is_continuation(text[p])) ++p;
  }
  return std::nullopt;
}

OutputRules::OutputRules(std::vector<OutputFilterDef> filters, DecisionCounters* counters)
    : filters_(std::move(filters)) {
  for (const auto& f : filters_) {
    slots_.push_back(counters ? counters->slot(f.name) : nullptr);
    for (const auto& r : f.rules) max_len_ = std::max(max_len_, r.max_len);
  }
}

// ---- Input filters -----------------------------------------------------------------------

PromptLengthFilter::PromptLengthFilter(std::string name, int64_t max_chars)
    : name_(std::move(name)), max_chars_(max_chars) {}

Decision PromptLengthFilter::apply(std::string& text, const InputContext&) const {
  int64_t chars = 0;
  for (char c : text) chars += !is_continuation(c);
  if (chars > max_chars_) {
    return Decision{Action::kBlock, name_, "prompt_too_long",
                    "prompt has " + std::to_string(chars) + " characters; the limit is " +
                        std::to_string(max_chars_)};
  }
  return allow(name_);
}

TokenLimitFilter::TokenLimitFilter(std::string name, int64_t max_tokens)
    : name_(std::move(name)), max_tokens_(max_tokens) {}

Decision TokenLimitFilter::apply(std::string&, const InputContext& ctx) const {
  if (!ctx.prompt_tokens) return allow(name_, "token count unknown");
  if (*ctx.prompt_tokens > max_tokens_) {
    return Decision{Action::kBlock, name_, "prompt_too_many_tokens",
                    "prompt has " + std::to_string(*ctx.prompt_tokens) + " tokens; the limit is " +
                        std::to_string(max_tokens_)};
  }
  return allow(name_);
}

DenyFilter::DenyFilter(std::string name, std::vector<std::shared_ptr<const RE2>> patterns)
    : name_(std::move(name)), patterns_(std::move(patterns)) {}

Decision DenyFilter::apply(std::string& text, const InputContext&) const {
  for (size_t i = 0; i < patterns_.size(); ++i) {
    if (RE2::PartialMatch(text, *patterns_[i])) {
      return Decision{Action::kBlock, name_, "deny_pattern",
                      "matched pattern " + std::to_string(i + 1)};
    }
  }
  return allow(name_);
}

PiiRedactFilter::PiiRedactFilter(std::string name, PiiKind kind)
    : name_(std::move(name)), kind_(kind), rule_(pii_rule(kind, kUnbounded)) {}

Decision PiiRedactFilter::apply(std::string& text, const InputContext&) const {
  std::string out;
  size_t pos = 0, count = 0;
  while (auto m = earliest_match(rule_, text, pos, text.size())) {
    out.append(text, pos, m->start - pos);
    out.append(pii_placeholder(kind_));
    pos = m->end;
    ++count;
  }
  if (count == 0) return allow(name_);
  out.append(text, pos, std::string::npos);
  text = std::move(out);
  return Decision{Action::kRedact, name_, std::string(pii_reason(kind_)),
                  std::to_string(count) + (count == 1 ? " match" : " matches")};
}

}  // namespace pagoda::policy
