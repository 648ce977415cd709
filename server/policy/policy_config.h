// The policy file (YAML): named policies, a tenant → policy map, and a default policy.
//
//   default: standard              # required: the policy of tenants not listed
//   tenants:                       # optional: tenant id -> policy name
//     acme: strict
//   policies:
//     standard:
//       input:                     # ordered; each item is a map with exactly one filter key
//         - prompt_length: {max_chars: 32000}        # Unicode code points
//         - token_limit: {max_tokens: 8192}          # of the count the caller provides
//         - deny:
//             name: jailbreak                        # optional; default: the filter key
//             case_insensitive: true                 # optional; default false
//             patterns: ["ignore (all )?previous instructions"]
//         - redact: {kinds: [iban, card, email, phone]}  # filters pii_iban, pii_card, ...
//       output:                    # run together over the stream (see OutputFilterStream)
//         - deny: {patterns: ["forbidden"], max_len: 16}
//         - redact: {kinds: [email, card], max_len: {email: 100}}
//         - stop:
//             patterns:
//               - "-----BEGIN [A-Z ]*PRIVATE KEY"        # uses the filter's max_len
//               - {pattern: "sk-[A-Za-z0-9]{20}", max_len: 23}
//             max_len: 40
//
// Patterns are RE2 syntax. On output every deny/stop pattern needs a max match length in bytes
// (`max_len` on the pattern or on the filter); it bounds the holdback. A redact item's
// `max_len` map overrides the built-in defaults (filters.h). Filter names are unique within a
// chain. Unknown keys, bad values, invalid regexes (with RE2's message), unknown policies and
// a missing default are errors naming the file, line and key.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "server/policy/filters.h"
#include "server/policy/policy.h"

namespace pagoda::policy {

struct PatternSpec {
  std::string pattern;
  size_t max_len = 0;  // 0: not given
};

enum class FilterType { kPromptLength, kTokenLimit, kDeny, kRedact, kStop };

struct FilterSpec {
  FilterType type = FilterType::kDeny;
  std::string name;
  int line = 0;                       // 1-based line in the file
  int64_t limit = 0;                  // prompt_length: max_chars; token_limit: max_tokens
  std::vector<PatternSpec> patterns;  // deny, stop
  bool case_insensitive = false;
  std::vector<PiiKind> kinds;              // redact
  std::map<PiiKind, size_t> kind_max_len;  // redact overrides
};

struct PolicySpec {
  std::string name;
  std::vector<FilterSpec> input;
  std::vector<FilterSpec> output;
};

struct PolicyConfig {
  std::vector<PolicySpec> policies;
  std::map<std::string, std::string> tenants;
  std::string default_policy;

  // Parses and validates (every regex is compiled once to check it).
  static StatusOr<PolicyConfig> load(const std::string& path);
  static StatusOr<PolicyConfig> parse(std::string_view yaml, std::string_view source);
};

// Compiles a validated config; decisions are counted in `counters` (may be null).
StatusOr<std::shared_ptr<const PolicySet>> build_policy_set(
    const PolicyConfig& config, DecisionCounters* counters = &DecisionCounters::global());
StatusOr<std::shared_ptr<const PolicySet>> load_policy_set(
    const std::string& path, DecisionCounters* counters = &DecisionCounters::global());

// The current PolicySet, swapped whole. Readers take a shared_ptr and keep using it for the
// whole request; reload() (the server calls it on SIGHUP) swaps in a new set only when the
// file loads and compiles, and otherwise keeps the old one and returns the error.
class PolicyStore {
 public:
  explicit PolicyStore(std::shared_ptr<const PolicySet> initial,
                       DecisionCounters* counters = &DecisionCounters::global());
  static StatusOr<std::unique_ptr<PolicyStore>> open(
      const std::string& path, DecisionCounters* counters = &DecisionCounters::global());

  std::shared_ptr<const PolicySet> current() const;
  Status reload(const std::string& path);
  uint64_t generation() const;  // successful loads so far (open counts as the first)

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const PolicySet> current_;
  DecisionCounters* counters_;
  uint64_t generation_ = 1;
};

}  // namespace pagoda::policy
