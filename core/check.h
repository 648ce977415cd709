// PAGODA_CHECK: fail fast on broken internal invariants, printing the values involved.
// Not for bad input: bad input gets a Status.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace pagoda::internal {

[[noreturn]] inline void check_failed(const char* file, int line, const char* expr,
                                      const std::string& detail) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, expr, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

template <typename A, typename B>
std::string format_pair(const A& a, const B& b) {
  std::ostringstream os;
  os << "(" << a << " vs " << b << ")";
  return os.str();
}

}  // namespace pagoda::internal

#define PAGODA_CHECK(cond)                                                        \
  do {                                                                            \
    if (!(cond)) ::pagoda::internal::check_failed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define PAGODA_CHECK_OP_(a, op, b)                                                             \
  do {                                                                                         \
    const auto& pagoda_a_ = (a);                                                               \
    const auto& pagoda_b_ = (b);                                                               \
    if (!(pagoda_a_ op pagoda_b_))                                                             \
      ::pagoda::internal::check_failed(__FILE__, __LINE__, #a " " #op " " #b,                  \
                                       ::pagoda::internal::format_pair(pagoda_a_, pagoda_b_)); \
  } while (0)

#define PAGODA_CHECK_EQ(a, b) PAGODA_CHECK_OP_(a, ==, b)
#define PAGODA_CHECK_NE(a, b) PAGODA_CHECK_OP_(a, !=, b)
#define PAGODA_CHECK_LT(a, b) PAGODA_CHECK_OP_(a, <, b)
#define PAGODA_CHECK_LE(a, b) PAGODA_CHECK_OP_(a, <=, b)
#define PAGODA_CHECK_GT(a, b) PAGODA_CHECK_OP_(a, >, b)
#define PAGODA_CHECK_GE(a, b) PAGODA_CHECK_OP_(a, >=, b)
