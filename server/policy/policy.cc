#include "server/policy/policy.h"

#include <algorithm>

#include "server/policy/filters.h"

namespace pagoda::policy {
namespace {

bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

size_t utf8_len(char lead) {
  unsigned char c = static_cast<unsigned char>(lead);
  if (c >= 0xF0) return 4;
  if (c >= 0xE0) return 3;
  if (c >= 0xC0) return 2;
  return 1;
}

// The largest c <= cut such that s[from, c) does not end inside a UTF-8 character.
size_t char_boundary(std::string_view s, size_t from, size_t cut) {
  if (cut < s.size()) {
    while (cut > from && is_continuation(s[cut])) --cut;
    return cut;
  }
  for (size_t j = cut; j > from && cut - j < 4; --j) {
    if (!is_continuation(s[j - 1])) return j - 1 + utf8_len(s[j - 1]) > cut ? j - 1 : cut;
  }
  return cut;
}

// Bytes of released text kept before the undecided text, as context for \b and boundaries.
constexpr size_t kLeftContext = 8;

}  // namespace

const char* action_name(Action action) {
  switch (action) {
    case Action::kAllow: return "allow";
    case Action::kRedact: return "redact";
    case Action::kBlock: return "block";
    case Action::kStop: return "stop";
  }
  return "unknown";
}

BlockStatus block_status(const Decision& block) {
  if (block.reason == "prompt_too_long" || block.reason == "prompt_too_many_tokens") {
    return BlockStatus::kFailedPrecondition;
  }
  return BlockStatus::kPermissionDenied;
}

DecisionCounters& DecisionCounters::global() {
  static DecisionCounters* counters = new DecisionCounters();
  return *counters;
}

DecisionCounters::Slot* DecisionCounters::slot(std::string_view filter) {
  std::lock_guard lock(mu_);
  auto it = slots_.find(filter);
  if (it == slots_.end()) it = slots_.emplace(std::string(filter), std::make_unique<Slot>()).first;
  return it->second.get();
}

uint64_t DecisionCounters::get(std::string_view filter, Action action) const {
  std::lock_guard lock(mu_);
  auto it = slots_.find(filter);
  if (it == slots_.end()) return 0;
  return it->second->by_action[static_cast<int>(action)].load(std::memory_order_relaxed);
}

std::vector<DecisionCounters::Row> DecisionCounters::snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<Row> rows;
  for (const auto& [name, slot] : slots_) {
    for (int a = 0; a < kNumActions; ++a) {
      uint64_t v = slot->by_action[a].load(std::memory_order_relaxed);
      if (v > 0) rows.push_back(Row{name, static_cast<Action>(a), v});
    }
  }
  return rows;
}

// ---- Input ------------------------------------------------------------------------------

const Decision* InputResult::block() const {
  if (!decisions.empty() && decisions.back().action == Action::kBlock) return &decisions.back();
  return nullptr;
}

InputChain::InputChain(std::vector<std::unique_ptr<InputFilter>> filters,
                       DecisionCounters* counters)
    : filters_(std::move(filters)) {
  for (const auto& f : filters_) slots_.push_back(counters ? counters->slot(f->name()) : nullptr);
}

InputResult InputChain::run(std::string_view text, const InputContext& ctx) const {
  InputResult result{std::string(text), {}};
  for (size_t i = 0; i < filters_.size(); ++i) {
    Decision d = filters_[i]->apply(result.text, ctx);
    DecisionCounters::add(slots_[i], d.action);
    bool block = d.action == Action::kBlock;
    result.decisions.push_back(std::move(d));
    if (block) break;  // the first block wins
  }
  return result;
}

// ---- Output -----------------------------------------------------------------------------

OutputFilterStream::OutputFilterStream(std::shared_ptr<const OutputRules> rules)
    : rules_(std::move(rules)) {
  if (!rules_)
    rules_ = std::make_shared<const OutputRules>(std::vector<OutputFilterDef>{}, nullptr);
  redactions_.assign(rules_->filters().size(), 0);
}

size_t OutputFilterStream::max_holdback() const {
  return rules_->max_len();
}

void OutputFilterStream::scan(bool final, std::string& out) {
  struct Found {
    Span span;
    size_t filter = 0, pattern = 0;
  };
  const auto& filters = rules_->filters();
  const size_t n = buf_.size();
  while (!blocked_ && !stopped_ && pos_ < n) {
    // For each rule: its earliest valid match among the decided positions, or how far it is
    // decided (a position p is decided when p + max_len + 1 <= n, or at the end of the text).
    size_t undecided = n;       // every rule is decided (or matched) before this position
    size_t term_undecided = n;  // the same, over deny/stop rules without a match
    std::optional<Found> red, term;
    for (size_t fi = 0; fi < filters.size(); ++fi) {
      const OutputFilterDef& f = filters[fi];
      bool terminal = f.kind != OutputKind::kRedact;
      for (size_t ri = 0; ri < f.rules.size(); ++ri) {
        const MatchRule& r = f.rules[ri];
        size_t limit = final ? n : (n > r.max_len ? n - r.max_len : 0);
        std::optional<Span> m;
        if (limit > pos_) m = earliest_match(r, buf_, pos_, limit);
        if (!m) {
          undecided = std::min(undecided, std::max(limit, pos_));
          if (terminal) term_undecided = std::min(term_undecided, std::max(limit, pos_));
          continue;
        }
        std::optional<Found>& best = terminal ? term : red;
        if (!best || m->start < best->span.start) best = Found{*m, fi, ri};
      }
    }
    if (term && (!red || term->span.start < red->span.end) && term->span.start <= undecided) {
      // A deny/stop match wins over a redaction it overlaps; text of that redaction's match
      // is never released.
      size_t cut = red ? std::min(red->span.start, term->span.start) : term->span.start;
      out.append(buf_, pos_, cut - pos_);
      pos_ = cut;
      terminal_filter_ = term->filter;
      terminal_pattern_ = term->pattern;
      (filters[term->filter].kind == OutputKind::kDeny ? blocked_ : stopped_) = true;
      end_stream();
      return;
    }
    if (red && (!term || term->span.start >= red->span.end) && red->span.start <= undecided &&
        term_undecided >= red->span.end) {
      out.append(buf_, pos_, red->span.start - pos_);
      out.append(filters[red->filter].placeholder);
      pos_ = red->span.end;
      ++redactions_[red->filter];
      continue;
    }
    size_t safe = undecided;
    if (red) safe = std::min(safe, red->span.start);
    if (term) safe = std::min(safe, term->span.start);
    if (!final) safe = char_boundary(buf_, pos_, safe);
    out.append(buf_, pos_, safe - pos_);
    pos_ = safe;
    break;
  }
}

std::string OutputFilterStream::push(std::string_view delta) {
  std::string out;
  if (ended()) return out;
  buf_.append(delta);
  scan(/*final=*/false, out);
  if (pos_ > kLeftContext) {
    size_t keep = pos_ - kLeftContext;
    while (keep < pos_ && is_continuation(buf_[keep])) ++keep;
    buf_.erase(0, keep);
    pos_ -= keep;
  }
  return out;
}

std::string OutputFilterStream::finish() {
  std::string out;
  if (ended()) return out;
  scan(/*final=*/true, out);
  finished_ = true;
  end_stream();
  return out;
}

void OutputFilterStream::end_stream() {
  buf_.clear();
  pos_ = 0;
  if (counted_) return;
  counted_ = true;
  std::vector<Decision> ds = decisions();
  for (size_t i = 0; i < ds.size(); ++i) DecisionCounters::add(rules_->slot(i), ds[i].action);
}

std::vector<Decision> OutputFilterStream::decisions() const {
  std::vector<Decision> ds;
  const auto& filters = rules_->filters();
  for (size_t i = 0; i < filters.size(); ++i) {
    const OutputFilterDef& f = filters[i];
    if (terminal_filter_ == i) {
      ds.push_back(Decision{blocked_ ? Action::kBlock : Action::kStop, f.name, f.reason,
                            "matched pattern " + std::to_string(*terminal_pattern_ + 1)});
    } else if (redactions_[i] > 0) {
      ds.push_back(
          Decision{Action::kRedact, f.name, f.reason,
                   std::to_string(redactions_[i]) + (redactions_[i] == 1 ? " match" : " matches")});
    } else {
      ds.push_back(Decision{Action::kAllow, f.name, "ok", ""});
    }
  }
  return ds;
}

std::string filter_output_text(std::shared_ptr<const OutputRules> rules, std::string_view text,
                               bool* blocked, std::vector<Decision>* decisions) {
  OutputFilterStream stream(std::move(rules));
  std::string out = stream.push(text);
  out += stream.finish();
  if (blocked) *blocked = stream.blocked();
  if (decisions) *decisions = stream.decisions();
  return out;
}

// ---- Policies ---------------------------------------------------------------------------

Policy::Policy(std::string name, InputChain input, std::shared_ptr<const OutputRules> output)
    : name_(std::move(name)), input_(std::move(input)), output_(std::move(output)) {}

PolicySet::PolicySet(std::map<std::string, std::shared_ptr<const Policy>, std::less<>> policies,
                     std::map<std::string, std::string, std::less<>> tenants,
                     std::string default_policy)
    : policies_(std::move(policies)), tenants_(std::move(tenants)), default_(default_policy) {
  auto it = policies_.find(default_);
  if (it != policies_.end()) default_ptr_ = it->second.get();
}

const Policy& PolicySet::for_tenant(std::string_view tenant) const {
  auto t = tenants_.find(tenant);
  if (t != tenants_.end()) {
    auto p = policies_.find(t->second);
    if (p != policies_.end()) return *p->second;
  }
  return *default_ptr_;  // the loader guarantees the default exists
}

std::shared_ptr<const Policy> PolicySet::find(std::string_view name) const {
  auto it = policies_.find(name);
  return it == policies_.end() ? nullptr : it->second;
}

}  // namespace pagoda::policy
