// Flags: a strict --name value / --name=value parser for the pagoda command line. Unknown
// flags, missing values and malformed numbers are errors that name the flag.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace pagoda {

class Flags {
 public:
  // `known`: flag names (without "--") that take a value; `switches`: flags without a value.
  static StatusOr<Flags> parse(const std::vector<std::string>& args,
                               const std::vector<std::string>& known,
                               const std::vector<std::string>& switches = {});

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string get_string(const std::string& name, const std::string& fallback) const;
  StatusOr<int64_t> get_int(const std::string& name, int64_t fallback, int64_t min,
                            int64_t max) const;
  StatusOr<double> get_double(const std::string& name, double fallback, double min,
                              double max) const;
  StatusOr<uint64_t> get_uint64(const std::string& name) const;  // has(name) must hold

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace pagoda
