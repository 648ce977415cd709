// kernels/cuda/swiglu.cu under the emulator: the fused form (gate_up [T, 2I]) gives the same
// bits as gate/up apart, f32 is within 4 ulp of the CPU twin (expf is the host's here), and
// add is exact; with in-place output and misaligned operands.
#include <random>

#include "core/thread_pool.h"
#include "emu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/launchers.h"

namespace pagoda::emu_test {
namespace {

void run_case(int H, int T, bool bf16, bool mis, bool alias, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "H=" << H << " T=" << T << " bf16=" << bf16
                                  << " misalign=" << mis << " alias=" << alias);
  ThreadPool pool(1);
  std::normal_distribution<float> nd(0, 3);
  const size_t as = bf16 ? 2 : 4, n = size_t(T) * H;
  const DType adt = bf16 ? DType::kBF16 : DType::kF32;
  auto put = [&](void* d, size_t i, float v) {
    if (bf16)
      static_cast<uint16_t*>(d)[i] = f2bf(v);
    else
      static_cast<float*>(d)[i] = v;
  };
  auto get = [&](const void* d, size_t i) {
    return bf16 ? bf2f(static_cast<const uint16_t*>(d)[i]) : static_cast<const float*>(d)[i];
  };
  std::vector<float> gu(2 * n);
  for (auto& x : gu) x = bf16 ? bf2f(f2bf(nd(rng))) : nd(rng);

  Buffers b;
  void* dgu = b.alloc(2 * n * as, "gate_up", mis ? as : 0);
  void* dg = b.alloc(n * as, "gate", mis ? as : 0);
  void* du = b.alloc(n * as, "up");
  void* dof = b.alloc(n * as, "out_fused");
  for (size_t i = 0; i < 2 * n; ++i) put(dgu, i, gu[i]);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < H; ++j) {
      put(dg, size_t(t) * H + j, gu[size_t(t) * 2 * H + j]);
      put(du, size_t(t) * H + j, gu[size_t(t) * 2 * H + H + j]);
    }
  void* dout = alias ? dg : b.alloc(n * as, "out");
  std::vector<float> g(n), u(n);
  for (size_t i = 0; i < n; ++i) g[i] = get(dg, i), u[i] = get(du, i);

  ReportScope reports;
  SwigluArgs f;
  f.gate_up = TensorView(dgu, adt, {T, 2 * H}, Device::kCuda);
  f.out = TensorView(dof, adt, {T, H}, Device::kCuda);
  ASSERT_TRUE(cuda::swiglu_cuda(f, nullptr).ok());
  SwigluArgs s;
  s.gate = TensorView(dg, adt, {T, H}, Device::kCuda);
  s.up = TensorView(du, adt, {T, H}, Device::kCuda);
  s.out = TensorView(dout, adt, {T, H}, Device::kCuda);
  ASSERT_TRUE(cuda::swiglu_cuda(s, nullptr).ok());
  EXPECT_EQ(memcmp(dof, dout, n * as), 0) << "fused and unfused swiglu differ";

  if (!bf16) {
    std::vector<float> cg = g, cu = u, co(n);
    SwigluArgs c;
    c.gate = TensorView(cg.data(), DType::kF32, {T, H});
    c.up = TensorView(cu.data(), DType::kF32, {T, H});
    c.out = TensorView(co.data(), DType::kF32, {T, H});
    ASSERT_TRUE(cpu::swiglu(pool, c).ok());
    int bad = 0;
    for (size_t i = 0; i < n; ++i) bad += ulpdist(co[i], get(dout, i)) > 4;
    EXPECT_EQ(bad, 0) << "outputs more than 4 ulp from the CPU twin";
  }

  // add: a += b, rounded once to the activation dtype.
  void* da = b.alloc(n * as, "a", mis ? as : 0);
  for (size_t i = 0; i < n; ++i) put(da, i, g[i]);
  AddArgs ad;
  ad.a = TensorView(da, adt, {T, H}, Device::kCuda);
  ad.b = TensorView(du, adt, {T, H}, Device::kCuda);
  ASSERT_TRUE(cuda::add_cuda(ad, nullptr).ok());
  int bad = 0;
  for (size_t i = 0; i < n; ++i) {
    float e = g[i] + u[i];
    if (bf16) e = bf2f(f2bf(e));
    bad += ulpdist(e, get(da, i)) != 0;
  }
  EXPECT_EQ(bad, 0) << "add is not exact";
  EXPECT_EQ(reports.new_reports(), 0) << "emulator findings (see stderr)";
}

TEST(CudaEmuSwiglu, FusedUnfusedCpuAndAdd) {
  std::mt19937 rng(5);
  ::emu::g_order = 0;
  for (int H : {1, 7, 64, 65, 4099})
    for (int T : {1, 3})
      for (int flags = 0; flags < 8; ++flags) {
        ::emu::g_order = flags % 3;
        run_case(H, T, flags & 1, flags & 2, flags & 4, rng);
      }
}

}  // namespace
}  // namespace pagoda::emu_test
