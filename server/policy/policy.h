// The policy-filter stage: types, decisions, counters, the input chain, the streaming output
// filter, and the per-tenant policy set. No engine, no gRPC: the server translates decisions
// into status codes (see block_status()) and finish reasons.
//
// Input: an ordered chain of InputFilters over the prompt text (plus an optional token count
// from the caller). Each filter that runs returns one Decision; redaction rewrites the text for
// the filters after it; the first block wins and stops the chain.
//
// Output: OutputFilterStream filters the generated text as it streams. It holds back only as
// much text as the longest possible match needs, so a match split across chunks is still caught
// and nothing matching is ever released (see OutputFilterStream below for the exact bound).
//
// Counters: every decision is counted per (filter name, action) in a DecisionCounters registry
// (atomic increments; the registry survives policy reloads), readable for metrics.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pagoda::policy {

// allow: the filter ran and let the text pass unchanged. redact: it replaced matches with
// placeholders. block: the request (input) or the stream (output) is refused. stop (output
// only): a stop-on-match rule fired; the text before the match is released and the stream ends
// normally.
enum class Action { kAllow = 0, kRedact = 1, kBlock = 2, kStop = 3 };
inline constexpr int kNumActions = 4;
const char* action_name(Action action);  // "allow", "redact", "block", "stop"

// One filter's verdict. `reason` is a stable snake_case code for the ledger and metrics:
//   ok                      allow
//   prompt_too_long         input longer than max_chars (Unicode code points)
//   prompt_too_many_tokens  input token count above max_tokens
//   deny_pattern            a deny pattern matched (input or output)
//   stop_pattern            a stop-on-match pattern matched (output)
//   pii_email, pii_phone, pii_card, pii_iban   redactions
// `detail` is for people (which pattern, how many matches); it never contains matched text.
struct Decision {
  Action action = Action::kAllow;
  std::string filter;
  std::string reason;
  std::string detail;
  bool operator==(const Decision&) const = default;
};

// How the server answers an input block: limits (length, tokens) → FAILED_PRECONDITION;
// content (deny patterns) → PERMISSION_DENIED. An output block ends the stream with finish
// reason CONTENT_FILTER.
enum class BlockStatus { kFailedPrecondition, kPermissionDenied };
BlockStatus block_status(const Decision& block);

// Decision counters per (filter, action). slot() is taken once when a policy is compiled;
// increments are lock-free afterwards.
class DecisionCounters {
 public:
  struct Slot {
    std::array<std::atomic<uint64_t>, kNumActions> by_action{};
  };
  struct Row {
    std::string filter;
    Action action;
    uint64_t count;
  };

  static DecisionCounters& global();

  Slot* slot(std::string_view filter);  // stable for the registry's lifetime
  static void add(Slot* slot, Action action) {
    if (slot) slot->by_action[static_cast<int>(action)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t get(std::string_view filter, Action action) const;
  std::vector<Row> snapshot() const;  // rows with count > 0, sorted by filter then action

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Slot>, std::less<>> slots_;
};

// ---- Input ------------------------------------------------------------------------------

struct InputContext {
  // The prompt's token count as the caller computed it (of the text as submitted). The token
  // limit filter allows the prompt, with detail "token count unknown", when it is not given.
  std::optional<int64_t> prompt_tokens;
};

class InputFilter {
 public:
  virtual ~InputFilter() = default;
  virtual const std::string& name() const = 0;
  // May rewrite `text` (redaction). Returns this filter's decision.
  virtual Decision apply(std::string& text, const InputContext& ctx) const = 0;
};

struct InputResult {
  std::string text;                 // the (possibly redacted) prompt
  std::vector<Decision> decisions;  // one per filter that ran, in chain order
  // The block decision (always the last one) or nullptr.
  const Decision* block() const;
  bool blocked() const { return block() != nullptr; }
};

class InputChain {
 public:
  InputChain() = default;
  InputChain(std::vector<std::unique_ptr<InputFilter>> filters, DecisionCounters* counters);
  InputResult run(std::string_view text, const InputContext& ctx = {}) const;
  size_t size() const { return filters_.size(); }

 private:
  std::vector<std::unique_ptr<InputFilter>> filters_;
  std::vector<DecisionCounters::Slot*> slots_;
};

// ---- Output -----------------------------------------------------------------------------

class OutputRules;  // compiled output filters (filters.h)

// Streaming output filter. Semantics (identical for every way of chunking the same text):
// the text is scanned left to right; at the current position the earliest match of any rule
// wins (on a tie: a deny/stop rule over a redaction, then chain order). A redaction releases
// the text before it plus the placeholder and continues after the match; a deny or stop match
// releases the text before it (if it starts inside a redaction's match, only the text before
// that match) and ends the stream.
//
// Bounded matching: every rule has a max match length max_len (explicit `max_len` for deny/stop
// patterns; defaults for the PII patterns, see filters.h). A match starting at p is looked for
// only within text[p, p + max_len), with one byte after it as context (for \b, $ and the PII
// digit boundaries). Position p is therefore decided once p + max_len + 1 bytes are known, so
// the stream holds back at most L = max over rules of max_len bytes (that is max_len - 1 bytes
// of a possible match's tail plus 1 byte of lookahead), moved back further only so as never to
// split a UTF-8 character. Text is released as soon as it is decided. A match longer than
// max_len is not seen as one (document the bound in the config).
class OutputFilterStream {
 public:
  // An empty rule set passes everything through without holding back.
  explicit OutputFilterStream(std::shared_ptr<const OutputRules> rules);

  // Feeds more generated text; returns the text that is now safe to send (maybe empty).
  // After the stream ended (blocked, stopped or finished) returns "".
  std::string push(std::string_view delta);
  // End of generation: releases the rest (filtered). Counts the decisions once.
  std::string finish();

  bool blocked() const { return blocked_; }  // deny matched: finish reason CONTENT_FILTER
  bool stopped() const { return stopped_; }  // stop-on-match: ends normally
  bool ended() const { return blocked_ || stopped_ || finished_; }
  // One decision per output filter, in chain order (allow / redact with a count / block / stop).
  std::vector<Decision> decisions() const;
  size_t held_bytes() const { return buf_.size() - pos_; }
  size_t max_holdback() const;

 private:
  void scan(bool final, std::string& out);
  void end_stream();

  std::shared_ptr<const OutputRules> rules_;
  std::string buf_;  // a little released text (left context) + the text not yet decided
  size_t pos_ = 0;   // start of the undecided text in buf_
  std::vector<uint64_t> redactions_;        // per filter
  std::optional<size_t> terminal_filter_;   // filter that blocked / stopped
  std::optional<size_t> terminal_pattern_;  // its pattern index
  bool blocked_ = false, stopped_ = false, finished_ = false, counted_ = false;
};

// Filters the whole text at once: the same as one push() and finish().
std::string filter_output_text(std::shared_ptr<const OutputRules> rules, std::string_view text,
                               bool* blocked = nullptr, std::vector<Decision>* decisions = nullptr);

// ---- Policies ---------------------------------------------------------------------------

class Policy {
 public:
  Policy(std::string name, InputChain input, std::shared_ptr<const OutputRules> output);
  const std::string& name() const { return name_; }
  InputResult filter_input(std::string_view text, const InputContext& ctx = {}) const {
    return input_.run(text, ctx);
  }
  OutputFilterStream output_stream() const { return OutputFilterStream(output_); }
  const std::shared_ptr<const OutputRules>& output_rules() const { return output_; }

 private:
  std::string name_;
  InputChain input_;
  std::shared_ptr<const OutputRules> output_;
};

// Compiled policies plus the tenant → policy map. Immutable once built; swapped whole on reload
// (PolicyStore in policy_config.h). Streams keep their rules alive across a swap.
class PolicySet {
 public:
  PolicySet(std::map<std::string, std::shared_ptr<const Policy>, std::less<>> policies,
            std::map<std::string, std::string, std::less<>> tenants, std::string default_policy);
  // The tenant's policy, or the default policy for tenants not listed.
  const Policy& for_tenant(std::string_view tenant) const;
  std::shared_ptr<const Policy> find(std::string_view name) const;
  const std::string& default_policy() const { return default_; }
  size_t size() const { return policies_.size(); }

 private:
  std::map<std::string, std::shared_ptr<const Policy>, std::less<>> policies_;
  std::map<std::string, std::string, std::less<>> tenants_;
  std::string default_;
  const Policy* default_ptr_ = nullptr;
};

}  // namespace pagoda::policy
