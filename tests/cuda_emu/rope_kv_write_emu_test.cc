// kernels/cuda/rope_kv_write.cu under the emulator: bit for bit what rope.cu + kv_write.cu
// give on the same [q; k; v] input (the contract of the fusion), and for f32 within 4 ulp of
// the CPU twin (sincosf is the host's here). Cases include MQA/GQA/MHA, no q heads or no kv
// heads, tiny head dims, skipped slots (-1) and a slot past the cache.
#include <algorithm>
#include <random>

#include "core/thread_pool.h"
#include "emu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/launchers.h"

namespace pagoda::emu_test {
namespace {

struct Case {
  int T, hd, H, KV;
  bool bf16;
  int cdt;  // cache: 0 f32, 1 f16, 2 bf16
};

void put(void* d, const std::vector<float>& v, int dt) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (dt == 0) static_cast<float*>(d)[i] = v[i];
    if (dt == 1) static_cast<uint16_t*>(d)[i] = f2h(v[i]);
    if (dt == 2) static_cast<uint16_t*>(d)[i] = f2bf(v[i]);
  }
}

void run_case(const Case& c, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "T=" << c.T << " hd=" << c.hd << " H=" << c.H << " KV=" << c.KV
                                  << " bf16=" << c.bf16 << " cache=" << c.cdt);
  ThreadPool pool(1);
  std::normal_distribution<float> nd(0, 1);
  const int T = c.T, H = c.H, KV = c.KV, hd = c.hd, half = hd / 2;
  const size_t as = c.bf16 ? 2 : 4, cs = c.cdt ? 2 : 4;
  const DType adt = c.bf16 ? DType::kBF16 : DType::kF32;
  const DType cd = c.cdt == 0 ? DType::kF32 : c.cdt == 1 ? DType::kF16 : DType::kBF16;
  const int bs = 16, nb = (T + 40) / bs + 1, width = (H + 2 * KV) * hd;
  const int64_t nslots = int64_t(nb) * bs;
  std::vector<float> qkv(size_t(T) * width);
  for (auto& x : qkv) x = c.bf16 ? bf2f(f2bf(nd(rng))) : nd(rng);
  std::vector<int32_t> pos(T), slots(T), perm(nslots);
  for (int t = 0; t < T; ++t) pos[t] = rng() % 131072;
  for (int i = 0; i < nslots; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int t = 0; t < T; ++t) slots[t] = (t % 5 == 3) ? -1 : perm[t];
  if (T >= 5) slots[4] = int32_t(nslots) + 3;  // past the cache: skipped
  std::vector<float> invf(half);               // llama3-style scaled frequencies
  for (int i = 0; i < half; ++i) {
    double f = std::pow(500000.0, -2.0 * i / hd), wl = 2 * M_PI / f;
    if (wl > 8192)
      f /= 8;
    else if (wl > 2048)
      f = (1 - (8192 / wl - 1) / 3) * f / 8 + (8192 / wl - 1) / 3 * f;
    invf[i] = float(f);
  }
  const size_t cache_bytes = size_t(nslots) * KV * hd * cs, qbytes = size_t(T) * H * hd * as;

  Buffers b;
  void* dqkv = b.alloc(qkv.size() * as, "qkv");
  put(dqkv, qkv, c.bf16 ? 2 : 0);
  auto* dpos = b.alloc_as<int32_t>(T, "positions");
  memcpy(dpos, pos.data(), T * 4);
  auto* dinv = b.alloc_as<float>(half, "inv_freq");
  memcpy(dinv, invf.data(), half * 4);
  auto* dslot = b.alloc_as<int32_t>(T, "slot_mapping");
  memcpy(dslot, slots.data(), T * 4);
  void* dq = b.alloc(qbytes + 1, "q_out");  // +1: never 0 bytes
  void* dkc = b.alloc(cache_bytes + 1, "k_cache");
  void* dvc = b.alloc(cache_bytes + 1, "v_cache");
  memset(dkc, 0x11, cache_bytes);  // unwritten slots must stay as they were
  memset(dvc, 0x11, cache_bytes);

  ReportScope reports;
  RopeKvWriteArgs a;
  a.qkv = TensorView(dqkv, adt, {T, width}, Device::kCuda);
  a.positions = TensorView(dpos, DType::kI32, {T}, Device::kCuda);
  a.inv_freq = TensorView(dinv, DType::kF32, {half}, Device::kCuda);
  a.slot_mapping = TensorView(dslot, DType::kI32, {T}, Device::kCuda);
  a.q_out = TensorView(dq, adt, {T, H, hd}, Device::kCuda);
  a.k_cache = TensorView(dkc, cd, {nb, bs, KV, hd}, Device::kCuda);
  a.v_cache = TensorView(dvc, cd, {nb, bs, KV, hd}, Device::kCuda);
  ASSERT_TRUE(cuda::rope_kv_write_cuda(a, nullptr).ok());

  // Unfused: q, k, v split into their own buffers, rope in place, then kv_write.
  void* q2 = b.alloc(qbytes + 1, "q2");
  void* k2 = b.alloc(size_t(T) * KV * hd * as + 1, "k2");
  void* v2 = b.alloc(size_t(T) * KV * hd * as + 1, "v2");
  for (int t = 0; t < T; ++t) {
    const char* row = static_cast<char*>(dqkv) + size_t(t) * width * as;
    memcpy(static_cast<char*>(q2) + size_t(t) * H * hd * as, row, H * hd * as);
    memcpy(static_cast<char*>(k2) + size_t(t) * KV * hd * as, row + H * hd * as, KV * hd * as);
    memcpy(static_cast<char*>(v2) + size_t(t) * KV * hd * as, row + (H + KV) * hd * as,
           KV * hd * as);
  }
  void* kc2 = b.alloc(cache_bytes + 1, "k_cache2");
  void* vc2 = b.alloc(cache_bytes + 1, "v_cache2");
  memset(kc2, 0x11, cache_bytes);
  memset(vc2, 0x11, cache_bytes);
  RopeArgs r;
  r.q = TensorView(q2, adt, {T, H, hd}, Device::kCuda);
  r.k = TensorView(k2, adt, {T, KV, hd}, Device::kCuda);
  r.positions = a.positions;
  r.inv_freq = a.inv_freq;
  ASSERT_TRUE(cuda::rope_cuda(r, nullptr).ok());
  if (KV > 0) {
    KvWriteArgs kw;
    kw.k = r.k;
    kw.v = TensorView(v2, adt, {T, KV, hd}, Device::kCuda);
    kw.slot_mapping = a.slot_mapping;
    kw.k_cache = TensorView(kc2, cd, {nb, bs, KV, hd}, Device::kCuda);
    kw.v_cache = TensorView(vc2, cd, {nb, bs, KV, hd}, Device::kCuda);
    ASSERT_TRUE(cuda::kv_write_cuda(kw, nullptr).ok());
  }
  EXPECT_EQ(reports.new_reports(), 0) << "emulator findings (see stderr)";
  EXPECT_EQ(memcmp(dq, q2, qbytes), 0) << "q differs from rope.cu";
  EXPECT_EQ(memcmp(dkc, kc2, cache_bytes), 0) << "k cache differs from rope.cu + kv_write.cu";
  EXPECT_EQ(memcmp(dvc, vc2, cache_bytes), 0) << "v cache differs from kv_write.cu";
  if (c.bf16 || c.cdt != 0) return;

  // f32: the CPU twin (which takes no slot past the cache: -1 there, the kernel skips it).
  std::vector<float> cq(size_t(T) * H * hd + 1), ckc(nslots * KV * hd + 1), cvc(ckc.size());
  std::vector<float> cqkv = qkv;
  std::vector<int32_t> cslots = slots;
  for (auto& s : cslots) s = s >= nslots ? -1 : s;
  RopeKvWriteArgs ca;
  ca.qkv = TensorView(cqkv.data(), DType::kF32, {T, width});
  ca.positions = TensorView(pos.data(), DType::kI32, {T});
  ca.inv_freq = TensorView(invf.data(), DType::kF32, {half});
  ca.slot_mapping = TensorView(cslots.data(), DType::kI32, {T});
  ca.q_out = TensorView(cq.data(), DType::kF32, {T, H, hd});
  ca.k_cache = TensorView(ckc.data(), DType::kF32, {nb, bs, KV, hd});
  ca.v_cache = TensorView(cvc.data(), DType::kF32, {nb, bs, KV, hd});
  ASSERT_TRUE(cpu::rope_kv_write(pool, ca).ok());
  auto close = [](float e, float g) { return ulpdist(e, g) <= 4 || std::fabs(e - g) <= 1e-6f; };
  int bad = 0;
  for (size_t i = 0; i < size_t(T) * H * hd; ++i) bad += !close(cq[i], static_cast<float*>(dq)[i]);
  for (int t = 0; t < T; ++t) {
    if (cslots[t] < 0) continue;
    for (int j = 0; j < KV * hd; ++j) {
      size_t i = size_t(cslots[t]) * KV * hd + j;
      bad += !close(ckc[i], static_cast<float*>(dkc)[i]);
      bad += fbits(cvc[i]) != fbits(static_cast<float*>(dvc)[i]);
    }
  }
  EXPECT_EQ(bad, 0) << "f32 outputs off the CPU twin";
}

TEST(CudaEmuRopeKvWrite, FusedEqualsRopePlusKvWriteAndCpu) {
  std::mt19937 rng(7);
  struct Heads {
    int h, kv;
  };
  int n = 0;
  for (int T : {1, 6})
    for (int hd : {2, 6, 64, 128})
      for (Heads hc :
           {Heads{1, 1}, Heads{4, 1}, Heads{8, 2}, Heads{3, 3}, Heads{0, 2}, Heads{2, 0}})
        for (int bf16 = 0; bf16 < 2; ++bf16)
          for (int cdt = 0; cdt < 3; ++cdt) {
            ::emu::g_order = n++ % 3;
            run_case(Case{T, hd, hc.h, hc.kv, bool(bf16), cdt}, rng);
          }
}

}  // namespace
}  // namespace pagoda::emu_test
