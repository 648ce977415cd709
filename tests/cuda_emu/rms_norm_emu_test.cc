// kernels/cuda/rms_norm.cu under the emulator: f32 against the CPU twin, bf16 against the
// contract computed in double (the CPU twin takes f32 activations only here), with the
// residual form, in-place output, misaligned activations, and a row whose sum of squares
// overflows f32.
#include <algorithm>
#include <random>

#include "core/thread_pool.h"
#include "emu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/launchers.h"

namespace pagoda::emu_test {
namespace {

struct Case {
  int dim, T;
  bool bf16, residual, alias, misalign;
  int wdt;  // weight: 0 f32, 1 f16, 2 bf16
  int order;
};

std::string describe(const Case& c) {
  char s[160];
  snprintf(s, sizeof s, "dim=%d T=%d bf16=%d w=%d residual=%d alias=%d misalign=%d order=%d", c.dim,
           c.T, c.bf16, c.wdt, c.residual, c.alias, c.misalign, c.order);
  return s;
}

void run_case(const Case& c, std::mt19937& rng) {
  SCOPED_TRACE(describe(c));
  ThreadPool pool(1);
  std::normal_distribution<float> nd(0, 1);
  ::emu::g_order = c.order;
  const int dim = c.dim, T = c.T;
  const size_t n = size_t(T) * dim, as = c.bf16 ? 2 : 4, ws = c.wdt ? 2 : 4;
  const DType adt = c.bf16 ? DType::kBF16 : DType::kF32;
  const DType wd = c.wdt == 0 ? DType::kF32 : c.wdt == 1 ? DType::kF16 : DType::kBF16;
  std::vector<float> in(n), res(n), w(dim);
  for (auto& x : in) x = nd(rng) * 3;
  for (auto& x : res) x = nd(rng);
  for (auto& x : w) x = 1 + 0.1f * nd(rng);
  if (dim >= 7 && T >= 2) in[dim + 3] = 1e30f;  // row 1: x*x overflows, the result is 0 or ±x/inf
  // Quantize to the stored dtypes first, so that the references see the kernel's inputs.
  if (c.bf16)
    for (size_t i = 0; i < n; ++i) in[i] = bf2f(f2bf(in[i])), res[i] = bf2f(f2bf(res[i]));
  for (auto& x : w) x = c.wdt == 1 ? h2f(f2h(x)) : c.wdt == 2 ? bf2f(f2bf(x)) : x;

  Buffers b;
  void* din = b.alloc(n * as, "input", c.misalign ? as : 0);
  void* dres = c.residual ? b.alloc(n * as, "residual") : nullptr;
  void* dw = b.alloc(dim * ws, "weight");
  void* dout = c.alias ? din : b.alloc(n * as, "out");
  for (size_t i = 0; i < n; ++i) {
    if (c.bf16) {
      static_cast<uint16_t*>(din)[i] = f2bf(in[i]);
      if (dres) static_cast<uint16_t*>(dres)[i] = f2bf(res[i]);
    } else {
      static_cast<float*>(din)[i] = in[i];
      if (dres) static_cast<float*>(dres)[i] = res[i];
    }
  }
  for (int i = 0; i < dim; ++i) {
    if (c.wdt == 0) static_cast<float*>(dw)[i] = w[i];
    if (c.wdt == 1) static_cast<uint16_t*>(dw)[i] = f2h(w[i]);
    if (c.wdt == 2) static_cast<uint16_t*>(dw)[i] = f2bf(w[i]);
  }
  RmsNormArgs a;
  a.input = TensorView(din, adt, {T, dim}, Device::kCuda);
  if (dres) a.residual = TensorView(dres, adt, {T, dim}, Device::kCuda);
  a.weight = TensorView(dw, wd, {dim}, Device::kCuda);
  a.out = TensorView(dout, adt, {T, dim}, Device::kCuda);
  a.eps = 1e-5f;
  ReportScope reports;
  ASSERT_TRUE(cuda::rms_norm_cuda(a, nullptr).ok());
  EXPECT_EQ(reports.new_reports(), 0) << "emulator findings (see stderr)";

  if (!c.bf16) {
    // f32: the CPU twin. The kernel reduces in another order (and the emulator's rsqrtf is
    // the host's), so a few ulp apart; the residual sum is exact.
    std::vector<float> cin = in, cres = res, cout_(n);
    std::vector<char> wcopy(static_cast<char*>(dw), static_cast<char*>(dw) + dim * ws);
    RmsNormArgs r;
    r.input = TensorView(cin.data(), DType::kF32, {T, dim});
    if (dres) r.residual = TensorView(cres.data(), DType::kF32, {T, dim});
    r.weight = TensorView(wcopy.data(), wd, {dim});
    r.out = TensorView(c.alias ? cin.data() : cout_.data(), DType::kF32, {T, dim});
    r.eps = 1e-5f;
    ASSERT_TRUE(cpu::rms_norm(pool, r).ok());
    const float* ref = c.alias ? cin.data() : cout_.data();
    const float* got = static_cast<const float*>(dout);
    int bad = 0;
    for (size_t i = 0; i < n; ++i) bad += ulpdist(ref[i], got[i]) > 8;
    EXPECT_EQ(bad, 0) << "outputs more than 8 ulp from the CPU twin";
    if (dres) {
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(fbits(cres[i]), fbits(static_cast<float*>(dres)[i])) << "residual " << i;
    }
    return;
  }
  // bf16: residual = bf16(res + x) exactly; out within 1 bf16 ulp of the f64 contract.
  int bad = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<float> x(dim);
    double ss = 0;
    float ssf = 0;
    for (int i = 0; i < dim; ++i) {
      float v = in[size_t(t) * dim + i];
      if (dres) v = bf2f(f2bf(res[size_t(t) * dim + i] + v));
      x[i] = v;
      ss += double(v) * v;
      ssf += v * v;
    }
    if (std::isinf(ssf)) ss = INFINITY;  // the contract sums in f32: overflow is inf
    if (dres)
      for (int i = 0; i < dim; ++i)
        bad += static_cast<uint16_t*>(dres)[size_t(t) * dim + i] != f2bf(x[i]);
    float inv = float(1.0 / std::sqrt(ss / dim + 1e-5));
    for (int i = 0; i < dim; ++i) {
      float got = bf2f(static_cast<uint16_t*>(dout)[size_t(t) * dim + i]);
      bad += (ulpdist(bf2f(f2bf(x[i] * inv * w[i])), got) >> 16) > 1;
    }
  }
  EXPECT_EQ(bad, 0) << "bf16 outputs off the contract";
}

TEST(CudaEmuRmsNorm, MatchesReference) {
  std::mt19937 rng(123);
  // Odd widths (1, 7, 65) take the scalar tail; 4099 spans several loads per thread.
  for (int dim : {1, 7, 64, 65, 4099})
    for (int T : {1, 3})
      for (int bf16 = 0; bf16 < 2; ++bf16)
        for (int wdt = 0; wdt < 3; ++wdt)
          for (int flags = 0; flags < 8; ++flags) {
            Case c{dim, T, bool(bf16), bool(flags & 1), bool(flags & 2), bool(flags & 4), wdt, 0};
            c.order = (dim + T + flags) % 3;  // spread the three schedules over the cases
            run_case(c, rng);
          }
}

}  // namespace
}  // namespace pagoda::emu_test
