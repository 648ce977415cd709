#include "core/flags.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace pagoda {

StatusOr<Flags> Flags::parse(const std::vector<std::string>& args,
                             const std::vector<std::string>& known,
                             const std::vector<std::string>& switches) {
  Flags f;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a.size() == 2)
      return InvalidArgument("unexpected argument '" + a + "' (flags look like --name value)");
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const bool is_switch = std::find(switches.begin(), switches.end(), name) != switches.end();
    const bool takes_value = std::find(known.begin(), known.end(), name) != known.end();
    if (!is_switch && !takes_value) return InvalidArgument("unknown flag --" + name);
    if (f.values_.count(name)) return InvalidArgument("flag --" + name + " given twice");
    if (is_switch) {
      if (inline_value) return InvalidArgument("flag --" + name + " takes no value");
      f.values_[name] = "1";
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) return InvalidArgument("flag --" + name + " needs a value");
      value = args[++i];
    }
    f.values_[name] = value;
  }
  return f;
}

std::string Flags::get_string(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

StatusOr<int64_t> Flags::get_int(const std::string& name, int64_t fallback, int64_t min,
                                 int64_t max) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const std::string& s = it->second;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE)
    return InvalidArgument("--" + name + " must be an integer, got '" + s + "'");
  if (v < min || v > max)
    return InvalidArgument("--" + name + " must be in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "], got " + s);
  return static_cast<int64_t>(v);
}

StatusOr<double> Flags::get_double(const std::string& name, double fallback, double min,
                                   double max) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  const std::string& s = it->second;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
    return InvalidArgument("--" + name + " must be a number, got '" + s + "'");
  if (v < min || v > max)
    return InvalidArgument("--" + name + " must be in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "], got " + s);
  return v;
}

StatusOr<uint64_t> Flags::get_uint64(const std::string& name) const {
  const std::string s = get_string(name, "");
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE)
    return InvalidArgument("--" + name + " must be a non-negative integer, got '" + s + "'");
  return static_cast<uint64_t>(v);
}

}  // namespace pagoda
