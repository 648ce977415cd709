// The CUDA emulator's runtime: runs a grid on the host, one CTA at a time, each thread of the
// CTA as a ucontext fiber, and checks every memory access the kernel code makes.
//
// Scheduling: a fiber runs until it reaches __syncthreads (state BAR), a warp collective that
// not all of its lanes have reached (WARP), or its end (DONE). When no fiber can run, every
// BAR fiber is released into the next barrier phase ("epoch"). The order in which CTAs and
// threads are taken can be forward, reversed or shuffled (g_order), so code that depends on an
// order the hardware does not promise gives different results between orders.
//
// Access checking: the kernel translation units are compiled with -fsanitize=thread, which
// makes GCC call __tsan_read4(p), __tsan_write8(p), ... before every load and store. This file
// defines those hooks itself (libtsan is never linked), and checks each access against the
// buffers the test registered (register_buffer): a hit in a guard band is OOB, a sized access
// not aligned to its size is ALIGN, and a per-byte shadow (last writer and readers: CTA,
// thread, barrier phase) finds two threads of a CTA touching a byte in the same phase with at
// least one write (RACE), and a byte written by one CTA and read or written by another (XCTA).
// Accesses inside the executable's .data/.bss are __shared__ arrays (function statics, see
// emu_cuda.h); reading shared bytes not written by the current CTA is SHARED_UNINIT.
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "emu_cuda.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
static cudaError_t g_last_err = cudaSuccess;
cudaError_t cudaGetLastError() {
  auto e = g_last_err;
  g_last_err = cudaSuccess;
  return e;
}

namespace emu {
int g_order = 0;  // 0 forward CTAs and threads, 1 reverse, 2 random
unsigned g_seed = 1;
std::map<std::string, long> g_counts;
void report(const char* kind, const char* msg) {
  long& c = g_counts[kind];
  if (c++ < 5)
    fprintf(stderr, "  [EMU %s] cta=%u tid=%u: %s\n", kind, blockIdx.x, threadIdx.x, msg);
}
long total_reports() {
  long s = 0;
  for (auto& kv : g_counts) s += kv.second;
  return s;
}
void reset_reports() {
  g_counts.clear();
}

enum State { RUN, BAR, WARP, DONE };
struct Fiber {
  ucontext_t ctx;
  char* stack;
  State st;
  int gen;
};
static std::vector<Fiber> fibers;
static ucontext_t sched_ctx;
static int cur = -1;
static bool in_kernel = false;
static int g_cta = 0, g_epoch = 0;
static const std::function<void()>* g_body;
static constexpr size_t kStack = 256 * 1024;  // kernels keep small frames; no deep calls
static std::vector<char*> stack_pool;
struct Warp {
  int gen = 0;
  unsigned arrived = 0;
  uint64_t vals[2][32];
  unsigned mask = 0;
};
static std::vector<Warp> warps;

static void fiber_main() {
  (*g_body)();
  fibers[cur].st = DONE;
  swapcontext(&fibers[cur].ctx, &sched_ctx);
}
void syncthreads() {
  fibers[cur].st = BAR;
  swapcontext(&fibers[cur].ctx, &sched_ctx);
}
unsigned lane_id() {
  return cur % 32;
}
const uint64_t* warp_collective(unsigned mask, uint64_t bits) {
  int lane = cur % 32;
  Warp& w = warps[cur / 32];
  if (!((mask >> lane) & 1u)) report("SHFL", "calling lane not in mask");
  int nthreads = (int)blockDim.x;
  int wbase = (cur / 32) * 32;
  for (int l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && wbase + l >= nthreads) {
      report("SHFL", "mask names a lane beyond blockDim");
      break;
    }
  if (w.arrived == 0)
    w.mask = mask;
  else if (w.mask != mask)
    report("SHFL", "lanes disagree on mask");
  int g = w.gen;
  w.vals[g & 1][lane] = bits;
  w.arrived |= 1u << lane;
  unsigned need = mask;
  for (int l = 0; l < 32; ++l)
    if (wbase + l >= nthreads) need &= ~(1u << l);
  if ((w.arrived & need) == need) {
    w.gen++;
    w.arrived = 0;
    for (int l = 0; l < 32; ++l) {
      int f = wbase + l;
      if (f < nthreads && fibers[f].st == WARP && fibers[f].gen == g) fibers[f].st = RUN;
    }
  } else {
    fibers[cur].st = WARP;
    fibers[cur].gen = g;
    swapcontext(&fibers[cur].ctx, &sched_ctx);
  }
  return w.vals[g & 1];
}

void shadow_new_cta();
void reset_shadow();
void launch_grid(dim3 g, dim3 b, size_t smem, const std::function<void()>& body) {
  long nb = (long)b.x * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0 || nb > 1024 ||
      b.z > 64 || g.y > 65535 || g.z > 65535 || g.x > 2147483647u || smem > 48 * 1024) {
    fprintf(stderr, "  [EMU LAUNCH] invalid config grid=(%u,%u,%u) block=(%u,%u,%u) smem=%zu\n",
            g.x, g.y, g.z, b.x, b.y, b.z, smem);
    g_counts["LAUNCH"]++;
    g_last_err = cudaErrorInvalidValue;
    return;
  }
  // The emulated kernels use 1-D blocks only; threadIdx.y/z would need a wider fiber index.
  if (b.y != 1 || b.z != 1) {
    fprintf(stderr, "emu: only 1-D blocks\n");
    abort();
  }
  gridDim = g;
  blockDim = b;
  g_body = &body;
  std::vector<long> ctas;
  for (long i = 0; i < (long)g.x * g.y * g.z; ++i) ctas.push_back(i);
  std::mt19937 rng(g_seed);
  if (g_order == 1) std::reverse(ctas.begin(), ctas.end());
  if (g_order == 2) std::shuffle(ctas.begin(), ctas.end(), rng);
  int n = (int)b.x;
  while ((int)stack_pool.size() < n) {
    char* s =
        (char*)mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    stack_pool.push_back(s);
  }
  reset_shadow();
  in_kernel = true;
  for (long c : ctas) {
    blockIdx.x = c % g.x;
    blockIdx.y = (c / g.x) % g.y;
    blockIdx.z = c / ((long)g.x * g.y);
    g_cta = (int)c;
    g_epoch = 0;
    shadow_new_cta();
    fibers.assign(n, Fiber{});
    warps.assign((n + 31) / 32, Warp{});
    for (int t = 0; t < n; ++t) {
      Fiber& f = fibers[t];
      getcontext(&f.ctx);
      f.stack = stack_pool[t];
      f.ctx.uc_stack.ss_sp = f.stack;
      f.ctx.uc_stack.ss_size = kStack;
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, fiber_main, 0);
      f.st = RUN;
    }
    std::vector<int> order(n);
    for (int t = 0; t < n; ++t) order[t] = t;
    for (;;) {
      if (g_order == 1) std::reverse(order.begin(), order.end());
      if (g_order == 2) std::shuffle(order.begin(), order.end(), rng);
      bool progress = false;
      for (int t : order) {
        if (fibers[t].st != RUN) continue;
        progress = true;
        cur = t;
        threadIdx.x = t;
        threadIdx.y = threadIdx.z = 0;
        swapcontext(&sched_ctx, &fibers[t].ctx);
      }
      if (progress) continue;
      int nbar = 0, nwarp = 0, ndone = 0;
      for (auto& f : fibers) {
        nbar += f.st == BAR;
        nwarp += f.st == WARP;
        ndone += f.st == DONE;
      }
      if (ndone == n) break;
      if (nwarp > 0) {
        report("DEADLOCK", "threads wait in a warp collective that can never complete");
        break;
      }
      if (ndone > 0)
        report("BARRIER", "__syncthreads reached while some threads of the CTA have exited");
      g_epoch++;
      for (auto& f : fibers)
        if (f.st == BAR) f.st = RUN;
    }
  }
  in_kernel = false;
  cur = -1;
}

// ---------------- shadow ----------------
// Per-byte shadow: the last writer (CTA, thread, phase), the CTA(s) that read it (-2: several),
// and the reader in the current phase (-2: several threads).
struct Sh {
  int w_cta = -1, w_tid = -1, w_ep = -1;
  int r_any = -1;
  int r_cta = -1, r_tid = -1, r_ep = -1;
};
struct Buf {
  uintptr_t lo, hi;
  std::string name;
  std::vector<Sh> sh;
  bool guard;
};
static std::vector<Buf> bufs;
static std::unordered_map<uintptr_t, Sh> shared_sh;
extern "C" char __data_start[], _end[];
void shadow_new_cta() {
  shared_sh.clear();
}
void register_buffer(void* p, size_t n, const char* name, bool guard) {
  bufs.push_back(Buf{(uintptr_t)p, (uintptr_t)p + n, name,
                     guard ? std::vector<Sh>() : std::vector<Sh>(n), guard});
}
void clear_buffers() {
  bufs.clear();
}
void reset_shadow() {
  for (auto& b : bufs)
    if (!b.guard) std::fill(b.sh.begin(), b.sh.end(), Sh{});
}
static bool is_emu_global(uintptr_t a) {
  auto in = [&](const void* p, size_t n) { return a >= (uintptr_t)p && a < (uintptr_t)p + n; };
  return in(&threadIdx, sizeof threadIdx) || in(&blockIdx, sizeof blockIdx) ||
         in(&blockDim, sizeof blockDim) || in(&gridDim, sizeof gridDim);
}
// The writer id of an atomic read-modify-write (atomicAdd below): atomics from several threads
// in one phase do not race with each other, only with plain accesses.
static constexpr int kAtomicTid = -3;
static void check_byte(Sh& s, bool write, const char* name, uintptr_t a, bool is_shared,
                       bool atomic = false) {
  int cta = g_cta, tid = cur, ep = g_epoch;
  char msg[256];
  if (is_shared && (!write || atomic) && s.w_cta != cta) {
    snprintf(msg, sizeof msg, "read of shared byte %#lx never written in this CTA",
             (unsigned long)a);
    report("SHARED_UNINIT", msg);
  }
  if (s.w_cta != -1 && s.w_cta != cta) {
    snprintf(msg, sizeof msg, "%s byte %s+%ld: %s after write by CTA %d", write ? "write" : "read",
             name, 0L, write ? "WW" : "RAW", s.w_cta);
    report("XCTA", msg);
  }
  if (write && s.r_any != -1 && (s.r_any == -2 || s.r_any != cta)) {
    snprintf(msg, sizeof msg, "write to %s after read by another CTA", name);
    report("XCTA", msg);
  }
  if (s.w_cta == cta && s.w_ep == ep && s.w_tid != tid && !(atomic && s.w_tid == kAtomicTid)) {
    snprintf(msg, sizeof msg, "%s of %s byte %#lx, written by thread %d in same barrier phase",
             write ? "write" : "read", name, (unsigned long)a, s.w_tid);
    report("RACE", msg);
  }
  if (write && s.r_cta == cta && s.r_ep == ep && s.r_tid != tid) {
    snprintf(msg, sizeof msg, "write of %s byte %#lx, read by thread %d in same barrier phase",
             name, (unsigned long)a, s.r_tid);
    report("RACE", msg);
  }
  if (write) {
    s.w_cta = cta;
    s.w_tid = atomic ? kAtomicTid : tid;
    s.w_ep = ep;
  } else {
    s.r_any = (s.r_any == -1 || s.r_any == cta) ? cta : -2;
    if (s.r_cta == cta && s.r_ep == ep && s.r_tid != tid)
      s.r_tid = -2;
    else if (!(s.r_cta == cta && s.r_ep == ep)) {
      s.r_cta = cta;
      s.r_ep = ep;
      s.r_tid = tid;
    }
  }
}
static void access(uintptr_t a, size_t n, bool write, bool sized, bool atomic = false) {
  if (!in_kernel || cur < 0) return;
  if (a >= (uintptr_t)__data_start && a < (uintptr_t)_end) {
    if (is_emu_global(a)) return;
    for (size_t i = 0; i < n; ++i)
      check_byte(shared_sh[a + i], write, "shared", a + i, true, atomic);
    return;
  }
  for (auto& b : bufs) {
    if (a + n <= b.lo || a >= b.hi) continue;
    char msg[200];
    if (b.guard) {
      snprintf(msg, sizeof msg, "%s of %zu bytes at %#lx hits guard band %s",
               write ? "write" : "read", n, (unsigned long)a, b.name.c_str());
      report("OOB", msg);
      return;
    }
    if (sized && (a % n) != 0) {
      snprintf(msg, sizeof msg, "%zu-byte %s at %s+%ld misaligned", n, write ? "store" : "load",
               b.name.c_str(), (long)(a - b.lo));
      report("ALIGN", msg);
    }
    for (size_t i = 0; i < n; ++i) {
      uintptr_t x = a + i;
      if (x >= b.lo && x < b.hi)
        check_byte(b.sh[x - b.lo], write, b.name.c_str(), x, false, atomic);
    }
  }
}
}  // namespace emu

// Atomics (declared in emu_cuda.h): a plain read-modify-write, since one fiber runs at a time.
// This file is not instrumented, so the access is checked here, once, as atomic.
int atomicAdd(int* p, int v) {
  emu::access((uintptr_t)p, sizeof *p, true, true, true);
  const int old = *p;
  *p = old + v;
  return old;
}
double atomicAdd(double* p, double v) {
  emu::access((uintptr_t)p, sizeof *p, true, true, true);
  const double old = *p;
  *p = old + v;
  return old;
}

// The hooks -fsanitize=thread instrumentation calls. Only the kernel translation units are
// instrumented, and accesses outside a launch are ignored (in_kernel), so host code (argument
// checks, the test drivers) costs nothing.
extern "C" {
#define R(N)                                    \
  void __tsan_read##N(void* p) {                \
    emu::access((uintptr_t)p, N, false, true);  \
  }                                             \
  void __tsan_write##N(void* p) {               \
    emu::access((uintptr_t)p, N, true, true);   \
  }                                             \
  void __tsan_unaligned_read##N(void* p) {      \
    emu::access((uintptr_t)p, N, false, false); \
  }                                             \
  void __tsan_unaligned_write##N(void* p) {     \
    emu::access((uintptr_t)p, N, true, false);  \
  }                                             \
  void __tsan_volatile_read##N(void* p) {       \
    emu::access((uintptr_t)p, N, false, true);  \
  }                                             \
  void __tsan_volatile_write##N(void* p) {      \
    emu::access((uintptr_t)p, N, true, true);   \
  }
R(1) R(2) R(4) R(8) R(16) void __tsan_read_range(void* p, unsigned long n) {
  emu::access((uintptr_t)p, n, false, false);
}
void __tsan_write_range(void* p, unsigned long n) {
  emu::access((uintptr_t)p, n, true, false);
}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_init() {}
void __tsan_vptr_update(void*, void*) {}
void __tsan_vptr_read(void*) {}
}
