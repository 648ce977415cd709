// Helpers shared by the emulator tests: device-like buffers with guard bands, 16-bit float
// conversions, ulp distance, and the emulator's report counter.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace emu {
// Defined in emu_rt.cc.
void register_buffer(void* p, size_t n, const char* name, bool guard);
void clear_buffers();
long total_reports();
extern int g_order;  // 0: CTAs and threads in order, 1: reversed, 2: shuffled by g_seed
extern unsigned g_seed;
}  // namespace emu

namespace pagoda::emu_test {

// Owns the buffers of one case. Each buffer sits between two 256-byte guard bands that the
// emulator reports any kernel access to; `misalign` shifts the base off its 256-byte alignment
// (the allocator's), as a view into the middle of a tensor would be.
class Buffers {
 public:
  Buffers() = default;
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
  ~Buffers() {
    for (void* p : allocs_) free(p);
    ::emu::clear_buffers();
  }
  void* alloc(size_t n, const char* name, size_t misalign = 0) {
    char* base = static_cast<char*>(aligned_alloc(256, n + 1024 + 256));
    allocs_.push_back(base);
    char* p = base + 512 + misalign;
    memset(base, 0xCD, n + 1024 + 256);  // garbage, not zeros: reads of unwritten bytes show
    ::emu::register_buffer(p - 256, 256, (std::string(name) + "-guard-lo").c_str(), true);
    ::emu::register_buffer(p + n, 256, (std::string(name) + "-guard-hi").c_str(), true);
    ::emu::register_buffer(p, n, name, false);
    return p;
  }
  template <typename T>
  T* alloc_as(size_t count, const char* name, size_t misalign = 0) {
    return static_cast<T*>(alloc(count * sizeof(T), name, misalign));
  }

 private:
  std::vector<void*> allocs_;
};

inline uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
inline uint16_t f2bf(float f) {
  if (std::isnan(f)) return 0x7fff;
  uint32_t u = fbits(f);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf2f(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f2h(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t r;
  memcpy(&r, &h, 2);
  return r;
}
inline float h2f(uint16_t b) {
  _Float16 h;
  memcpy(&h, &b, 2);
  return static_cast<float>(h);
}
// Distance in units in the last place between two floats; NaN equals NaN, and NaN against a
// number is "very far".
inline int64_t ulpdist(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return 0;
  if (std::isnan(a) || std::isnan(b)) return int64_t{1} << 40;
  int64_t ia = static_cast<int32_t>(fbits(a)), ib = static_cast<int32_t>(fbits(b));
  if (ia < 0) ia = int64_t{INT32_MIN} - ia;
  if (ib < 0) ib = int64_t{INT32_MIN} - ib;
  return std::llabs(ia - ib);
}

// Counts the emulator's findings during one case; the test fails if there were any (they are
// printed to stderr by the emulator as they happen).
class ReportScope {
 public:
  ReportScope() : before_(::emu::total_reports()) {}
  long new_reports() const { return ::emu::total_reports() - before_; }

 private:
  long before_;
};

}  // namespace pagoda::emu_test
