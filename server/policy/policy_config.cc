#include "server/policy/policy_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "server/yaml/yaml_errors.h"

namespace pagoda::policy {
namespace {

constexpr int64_t kMaxMatchLen = 4096;  // bound on max_len: it is the stream's holdback

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  Status error(const YAML::Node& node, const std::string& where, const std::string& msg) const {
    return yaml::error_at(source_, node, where, msg);
  }

  Status check_map(const YAML::Node& node, const std::string& where,
                   std::initializer_list<std::string_view> allowed) const {
    return yaml::check_map(source_, node, where, allowed, "key");
  }

  StatusOr<std::string> str(const YAML::Node& node, const std::string& where) const {
    if (!node.IsScalar()) return error(node, where, "expected a string");
    return node.Scalar();
  }

  StatusOr<int64_t> integer(const YAML::Node& node, const std::string& where, int64_t lo,
                            int64_t hi) const {
    int64_t v = 0;
    try {
      if (!node.IsScalar()) throw YAML::Exception(YAML::Mark(), "");
      v = node.as<int64_t>();
    } catch (const YAML::Exception&) {
      return error(node, where, "expected an integer");
    }
    if (v < lo || v > hi) {
      return error(node, where,
                   "must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " +
                       std::to_string(v));
    }
    return v;
  }

  StatusOr<bool> boolean(const YAML::Node& node, const std::string& where) const {
    try {
      if (node.IsScalar()) return node.as<bool>();
    } catch (const YAML::Exception&) {
    }
    return error(node, where, "expected true or false");
  }

  StatusOr<FilterSpec> filter(const YAML::Node& item, const std::string& where, bool output) const;
  StatusOr<PolicyConfig> config(const YAML::Node& root) const;

 private:
  std::string source_;
};

StatusOr<FilterSpec> Parser::filter(const YAML::Node& item, const std::string& where0,
                                    bool output) const {
  if (!item.IsMap() || item.size() != 1) {
    return error(item, where0, "expected a map with one filter key (e.g. 'deny: {...}')");
  }
  const std::string type = item.begin()->first.Scalar();
  const YAML::Node body = item.begin()->second;
  const std::string where = where0 + "." + type;
  FilterSpec spec;
  spec.name = type;
  spec.line = item.Mark().line + 1;
  if (type == "prompt_length" || type == "token_limit") {
    if (output) return error(item, where, "'" + type + "' is an input filter");
    const char* key = type == "prompt_length" ? "max_chars" : "max_tokens";
    PAGODA_RETURN_IF_ERROR(check_map(body, where, {"name", key}));
    if (!body[key]) return error(body, where, std::string("'") + key + "' is required");
    PAGODA_ASSIGN_OR_RETURN(spec.limit, integer(body[key], where + "." + key, 1, int64_t{1} << 40));
    spec.type = type == "prompt_length" ? FilterType::kPromptLength : FilterType::kTokenLimit;
  } else if (type == "deny" || type == "stop") {
    if (type == "stop" && !output) return error(item, where, "'stop' is an output filter");
    spec.type = type == "deny" ? FilterType::kDeny : FilterType::kStop;
    PAGODA_RETURN_IF_ERROR(
        check_map(body, where, {"name", "patterns", "case_insensitive", "max_len"}));
    size_t filter_max_len = 0;
    if (body["max_len"]) {
      PAGODA_ASSIGN_OR_RETURN(filter_max_len,
                              integer(body["max_len"], where + ".max_len", 1, kMaxMatchLen));
    }
    if (body["case_insensitive"]) {
      PAGODA_ASSIGN_OR_RETURN(spec.case_insensitive,
                              boolean(body["case_insensitive"], where + ".case_insensitive"));
    }
    const YAML::Node pats = body["patterns"];
    if (!pats || !pats.IsSequence() || pats.size() == 0) {
      return error(pats ? pats : body, where + ".patterns",
                   "expected a non-empty list of patterns");
    }
    for (size_t i = 0; i < pats.size(); ++i) {
      const std::string pw = where + ".patterns[" + std::to_string(i) + "]";
      const YAML::Node p = pats[i];
      PatternSpec ps{"", filter_max_len};
      if (p.IsMap()) {
        PAGODA_RETURN_IF_ERROR(check_map(p, pw, {"pattern", "max_len"}));
        if (!p["pattern"]) return error(p, pw, "'pattern' is required");
        PAGODA_ASSIGN_OR_RETURN(ps.pattern, str(p["pattern"], pw + ".pattern"));
        if (p["max_len"]) {
          PAGODA_ASSIGN_OR_RETURN(ps.max_len,
                                  integer(p["max_len"], pw + ".max_len", 1, kMaxMatchLen));
        }
      } else {
        PAGODA_ASSIGN_OR_RETURN(ps.pattern, str(p, pw));
      }
      auto re = compile_pattern(ps.pattern, spec.case_insensitive);
      if (!re.ok()) return error(p, pw, re.status().message());
      if (output && ps.max_len == 0) {
        return error(p, pw,
                     "output patterns need a max match length: set 'max_len' on the pattern or "
                     "the filter");
      }
      spec.patterns.push_back(std::move(ps));
    }
  } else if (type == "redact") {
    spec.type = FilterType::kRedact;
    PAGODA_RETURN_IF_ERROR(check_map(body, where, {"kinds", "max_len"}));
    const YAML::Node kinds = body["kinds"];
    if (!kinds || !kinds.IsSequence() || kinds.size() == 0) {
      return error(kinds ? kinds : body, where + ".kinds",
                   "expected a non-empty list of: email, phone, card, iban");
    }
    for (size_t i = 0; i < kinds.size(); ++i) {
      auto kind = kinds[i].IsScalar() ? parse_pii_kind(kinds[i].Scalar()) : std::nullopt;
      if (!kind) {
        return error(kinds[i], where + ".kinds[" + std::to_string(i) + "]",
                     "unknown kind (expected email, phone, card or iban)");
      }
      spec.kinds.push_back(*kind);
    }
    if (const YAML::Node ml = body["max_len"]) {
      PAGODA_RETURN_IF_ERROR(check_map(ml, where + ".max_len", {"email", "phone", "card", "iban"}));
      for (auto it = ml.begin(); it != ml.end(); ++it) {
        PAGODA_ASSIGN_OR_RETURN(
            size_t v,
            integer(it->second, where + ".max_len." + it->first.Scalar(), 8, kMaxMatchLen));
        spec.kind_max_len[*parse_pii_kind(it->first.Scalar())] = v;
      }
    }
  } else {
    return error(item.begin()->first, where0,
                 "unknown filter '" + type +
                     "' (expected prompt_length, token_limit, deny, redact or stop)");
  }
  if (spec.type != FilterType::kRedact && body["name"]) {
    PAGODA_ASSIGN_OR_RETURN(spec.name, str(body["name"], where + ".name"));
    if (spec.name.empty()) return error(body["name"], where + ".name", "must not be empty");
  }
  return spec;
}

// The names a filter spec's decisions carry (a redact item becomes one filter per kind).
std::vector<std::string> expanded_names(const FilterSpec& f) {
  if (f.type != FilterType::kRedact) return {f.name};
  std::vector<std::string> names;
  for (PiiKind k : f.kinds) names.emplace_back(pii_reason(k));
  return names;
}

StatusOr<PolicyConfig> Parser::config(const YAML::Node& root) const {
  PolicyConfig cfg;
  if (!root.IsMap()) return error(root, "policy file", "expected a map at the top level");
  PAGODA_RETURN_IF_ERROR(check_map(root, "policy file", {"default", "tenants", "policies"}));
  const YAML::Node pols = root["policies"];
  if (!pols || !pols.IsMap() || pols.size() == 0) {
    return error(pols ? pols : root, "policies", "expected a non-empty map of named policies");
  }
  for (auto it = pols.begin(); it != pols.end(); ++it) {
    PolicySpec ps;
    ps.name = it->first.Scalar();
    const std::string where = "policies." + ps.name;
    const YAML::Node body = it->second;
    if (body.IsNull()) {
      cfg.policies.push_back(std::move(ps));  // an empty policy: allows everything
      continue;
    }
    PAGODA_RETURN_IF_ERROR(check_map(body, where, {"input", "output"}));
    for (bool output : {false, true}) {
      const char* chain = output ? "output" : "input";
      const YAML::Node list = body[chain];
      if (!list || list.IsNull()) continue;
      if (!list.IsSequence()) return error(list, where + "." + chain, "expected a list of filters");
      std::set<std::string> names;
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string fw = where + "." + chain + "[" + std::to_string(i) + "]";
        PAGODA_ASSIGN_OR_RETURN(FilterSpec f, filter(list[i], fw, output));
        for (const std::string& n : expanded_names(f)) {
          if (!names.insert(n).second) {
            return error(list[i], fw, "duplicate filter name '" + n + "' in this chain");
          }
        }
        (output ? ps.output : ps.input).push_back(std::move(f));
      }
    }
    cfg.policies.push_back(std::move(ps));
  }
  auto defined = [&](const std::string& name) {
    for (const auto& p : cfg.policies) {
      if (p.name == name) return true;
    }
    return false;
  };
  const YAML::Node def = root["default"];
  if (!def) return error(root, "default", "'default' (the policy of unlisted tenants) is required");
  PAGODA_ASSIGN_OR_RETURN(cfg.default_policy, str(def, "default"));
  if (!defined(cfg.default_policy)) {
    return error(def, "default", "policy '" + cfg.default_policy + "' is not defined");
  }
  if (const YAML::Node tenants = root["tenants"]; tenants && !tenants.IsNull()) {
    if (!tenants.IsMap()) return error(tenants, "tenants", "expected a map tenant: policy");
    for (auto it = tenants.begin(); it != tenants.end(); ++it) {
      const std::string tw = "tenants." + it->first.Scalar();
      PAGODA_ASSIGN_OR_RETURN(std::string policy, str(it->second, tw));
      if (!defined(policy)) return error(it->second, tw, "policy '" + policy + "' is not defined");
      cfg.tenants[it->first.Scalar()] = policy;
    }
  }
  return cfg;
}

std::shared_ptr<const RE2> must_compile(const PatternSpec& p, bool ci) {
  auto re = compile_pattern(p.pattern, ci);
  return re.ok() ? *re : nullptr;  // validated by the parser
}

}  // namespace

StatusOr<PolicyConfig> PolicyConfig::parse(std::string_view yaml, std::string_view source) {
  Parser parser(source);
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    return parser.config(root);
  } catch (const YAML::Exception& e) {
    return yaml::from_exception(source, e);
  }
}

StatusOr<PolicyConfig> PolicyConfig::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read policy file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

StatusOr<std::shared_ptr<const PolicySet>> build_policy_set(const PolicyConfig& config,
                                                            DecisionCounters* counters) {
  std::map<std::string, std::shared_ptr<const Policy>, std::less<>> policies;
  for (const PolicySpec& ps : config.policies) {
    std::vector<std::unique_ptr<InputFilter>> input;
    for (const FilterSpec& f : ps.input) {
      switch (f.type) {
        case FilterType::kPromptLength:
          input.push_back(std::make_unique<PromptLengthFilter>(f.name, f.limit));
          break;
        case FilterType::kTokenLimit:
          input.push_back(std::make_unique<TokenLimitFilter>(f.name, f.limit));
          break;
        case FilterType::kDeny: {
          std::vector<std::shared_ptr<const RE2>> res;
          for (const auto& p : f.patterns) res.push_back(must_compile(p, f.case_insensitive));
          input.push_back(std::make_unique<DenyFilter>(f.name, std::move(res)));
          break;
        }
        case FilterType::kRedact:
          for (PiiKind k : f.kinds) {
            input.push_back(std::make_unique<PiiRedactFilter>(std::string(pii_reason(k)), k));
          }
          break;
        case FilterType::kStop: return Internal("stop filter in an input chain");
      }
    }
    std::vector<OutputFilterDef> output;
    for (const FilterSpec& f : ps.output) {
      if (f.type == FilterType::kRedact) {
        for (PiiKind k : f.kinds) {
          auto ml = f.kind_max_len.find(k);
          output.push_back(
              OutputFilterDef{std::string(pii_reason(k)),
                              OutputKind::kRedact,
                              std::string(pii_reason(k)),
                              std::string(pii_placeholder(k)),
                              {pii_rule(k, ml == f.kind_max_len.end() ? 0 : ml->second)}});
        }
        continue;
      }
      if (f.type != FilterType::kDeny && f.type != FilterType::kStop) {
        return Internal("input-only filter in an output chain");
      }
      OutputFilterDef def;
      def.name = f.name;
      def.kind = f.type == FilterType::kDeny ? OutputKind::kDeny : OutputKind::kStop;
      def.reason = f.type == FilterType::kDeny ? "deny_pattern" : "stop_pattern";
      for (const auto& p : f.patterns) {
        def.rules.push_back(
            MatchRule{must_compile(p, f.case_insensitive), p.max_len, std::nullopt});
      }
      output.push_back(std::move(def));
    }
    policies[ps.name] = std::make_shared<const Policy>(
        ps.name, InputChain(std::move(input), counters),
        std::make_shared<const OutputRules>(std::move(output), counters));
  }
  if (!policies.count(config.default_policy)) {
    return InvalidArgument("default policy '" + config.default_policy + "' is not defined");
  }
  std::map<std::string, std::string, std::less<>> tenants(config.tenants.begin(),
                                                          config.tenants.end());
  return std::shared_ptr<const PolicySet>(std::make_shared<const PolicySet>(
      std::move(policies), std::move(tenants), config.default_policy));
}

StatusOr<std::shared_ptr<const PolicySet>> load_policy_set(const std::string& path,
                                                           DecisionCounters* counters) {
  PAGODA_ASSIGN_OR_RETURN(PolicyConfig cfg, PolicyConfig::load(path));
  return build_policy_set(cfg, counters);
}

PolicyStore::PolicyStore(std::shared_ptr<const PolicySet> initial, DecisionCounters* counters)
    : current_(std::move(initial)), counters_(counters) {}

StatusOr<std::unique_ptr<PolicyStore>> PolicyStore::open(const std::string& path,
                                                         DecisionCounters* counters) {
  PAGODA_ASSIGN_OR_RETURN(auto set, load_policy_set(path, counters));
  return std::make_unique<PolicyStore>(std::move(set), counters);
}

std::shared_ptr<const PolicySet> PolicyStore::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

Status PolicyStore::reload(const std::string& path) {
  PAGODA_ASSIGN_OR_RETURN(auto set, load_policy_set(path, counters_));  // old set kept on error
  std::lock_guard lock(mu_);
  current_ = std::move(set);
  ++generation_;
  return OkStatus();
}

uint64_t PolicyStore::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

}  // namespace pagoda::policy
