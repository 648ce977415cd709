// CUDA rope_kv_write and the fused swiglu form: bit for bit against the unfused CUDA ops on the
// same device values (rope + kv_write; swiglu(gate, up)), and against their CPU twins within the
// tolerance of elementwise_test.cc (sincosf/expf differ from the host by a few ulps). Random
// inputs rounded to the tested dtype, head dims 8/64/128, GQA 1/2/4/8, block sizes 1/16, padding
// slots, f32/bf16 activations, f32/f16/bf16 caches, outputs poisoned. The argument checks run
// without a device (fake pointers, never dereferenced).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/launchers.h"
#include "tests/cuda/cuda_test_util.h"

namespace pagoda {
namespace {

using testing::DeviceTensor;
using testing::download;
using testing::poison;
using testing::random_values;
using testing::upload;
using testing::upload_ids;

// Same bits, NaN matching NaN (untouched poisoned cache rows).
void expect_same(const std::vector<float>& got, const std::vector<float>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const bool same = std::isnan(got[i]) ? std::isnan(want[i]) : got[i] == want[i];
    if (!same) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
}

// Within rtol * max(1, |want|) (f32: a few ulps; bf16: one more rounding); NaN only for NaN.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, DType act,
                  const std::string& what) {
  const double rtol = act == DType::kF32 ? 1e-5 : 1e-2;
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (std::isnan(want[i]) && std::isnan(got[i])) continue;
    const double tol = rtol * std::max(1.0, std::fabs(double{want[i]}));
    if (!(std::fabs(double{got[i]} - want[i]) <= tol)) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
}

// ---- rope_kv_write ---------------------------------------------------------------------------

TEST(CudaRopeKvWrite, MatchesRopeThenKvWriteAndTheCpuTwin) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(11);
  constexpr int64_t kBlocks = 3;
  struct Heads {
    int64_t q, kv;
  };
  for (const int64_t bs : {1, 16}) {
    for (const int64_t D : {8, 64, 128}) {
      for (const Heads h : {Heads{4, 4}, Heads{4, 2}, Heads{8, 2}, Heads{8, 1}}) {
        for (const DType cdt : {DType::kF32, DType::kF16, DType::kBF16}) {
          for (const DType act : {DType::kF32, DType::kBF16}) {
            const std::string what = "bs " + std::to_string(bs) + " D " + std::to_string(D) +
                                     " heads " + std::to_string(h.q) + "/" + std::to_string(h.kv) +
                                     " cache " + dtype_name(cdt) + " " + dtype_name(act);
            const int64_t num_slots = kBlocks * bs, T = std::min<int64_t>(num_slots, 11);
            const int64_t W = (h.q + 2 * h.kv) * D;
            std::vector<int32_t> perm(num_slots);
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), rng);
            std::vector<int32_t> slots(perm.begin(), perm.begin() + T), pos(T);
            slots[T / 2] = -1;  // padding
            for (auto& p : pos) p = static_cast<int32_t>(rng() % 9000);
            pos[0] = 0;
            std::vector<float> inv_freq(D / 2);
            for (int64_t i = 0; i < D / 2; ++i)
              inv_freq[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / D));
            const std::vector<float> qkv = random_values(T * W, act, rng);
            std::vector<float> q(T * h.q * D), k(T * h.kv * D), v(T * h.kv * D);
            for (int64_t t = 0; t < T; ++t) {
              for (int64_t i = 0; i < W; ++i) {
                const float x = qkv[t * W + i];
                if (i < h.q * D) {
                  q[t * h.q * D + i] = x;
                } else if (i < (h.q + h.kv) * D) {
                  k[t * h.kv * D + i - h.q * D] = x;
                } else {
                  v[t * h.kv * D + i - (h.q + h.kv) * D] = x;
                }
              }
            }
            const size_t cache_elems = num_slots * h.kv * D;
            const std::vector<float> nan(cache_elems, std::nanf(""));
            DeviceTensor d_pos = upload_ids(*gpu, pos), d_slots = upload_ids(*gpu, slots);
            DeviceTensor d_f = upload(*gpu, inv_freq, DType::kF32, {D / 2});
            // Unfused on the device.
            DeviceTensor d_q = upload(*gpu, q, act, {T, h.q, D});
            DeviceTensor d_k = upload(*gpu, k, act, {T, h.kv, D});
            DeviceTensor d_v = upload(*gpu, v, act, {T, h.kv, D});
            DeviceTensor u_kc = upload(*gpu, nan, cdt, {kBlocks, bs, h.kv, D});
            DeviceTensor u_vc = upload(*gpu, nan, cdt, {kBlocks, bs, h.kv, D});
            poison(*gpu, u_kc.view);
            poison(*gpu, u_vc.view);
            ASSERT_TRUE(gpu->rope({d_q.view, d_k.view, d_pos.view, d_f.view}).ok()) << what;
            ASSERT_TRUE(
                gpu->kv_write({d_k.view, d_v.view, d_slots.view, u_kc.view, u_vc.view}).ok())
                << what;
            // Fused on the device.
            DeviceTensor d_qkv = upload(*gpu, qkv, act, {T, W});
            DeviceTensor f_q = upload(*gpu, q, act, {T, h.q, D});
            DeviceTensor f_kc = upload(*gpu, nan, cdt, {kBlocks, bs, h.kv, D});
            DeviceTensor f_vc = upload(*gpu, nan, cdt, {kBlocks, bs, h.kv, D});
            poison(*gpu, f_q.view);
            poison(*gpu, f_kc.view);
            poison(*gpu, f_vc.view);
            const Status s = gpu->rope_kv_write(
                {d_qkv.view, d_pos.view, d_f.view, d_slots.view, f_q.view, f_kc.view, f_vc.view});
            ASSERT_TRUE(s.ok()) << what << ": " << s.to_string();
            const std::vector<float> got_q = download(*gpu, f_q.view);
            const std::vector<float> got_k = download(*gpu, f_kc.view);
            const std::vector<float> got_v = download(*gpu, f_vc.view);
            expect_same(got_q, download(*gpu, d_q.view), what + " q vs rope");
            expect_same(got_k, download(*gpu, u_kc.view), what + " k_cache vs rope + kv_write");
            expect_same(got_v, download(*gpu, u_vc.view), what + " v_cache vs kv_write");
            // The CPU twin (same op, host cos/sin).
            std::vector<uint8_t> qkv_b = testing::encode(qkv, act);
            std::vector<uint8_t> q_b(T * h.q * D * dtype_size(act), 0xff);
            std::vector<uint8_t> kc_b(cache_elems * dtype_size(cdt), 0xff), vc_b(kc_b);
            ASSERT_TRUE(cpu->rope_kv_write({TensorView(qkv_b.data(), act, {T, W}),
                                            TensorView(pos.data(), DType::kI32, {T}),
                                            TensorView(inv_freq.data(), DType::kF32, {D / 2}),
                                            TensorView(slots.data(), DType::kI32, {T}),
                                            TensorView(q_b.data(), act, {T, h.q, D}),
                                            TensorView(kc_b.data(), cdt, {kBlocks, bs, h.kv, D}),
                                            TensorView(vc_b.data(), cdt, {kBlocks, bs, h.kv, D})})
                            .ok());
            expect_close(got_q, testing::decode(q_b, act), act, what + " q vs cpu");
            expect_close(got_k, testing::decode(kc_b, cdt), cdt == DType::kF32 ? act : cdt,
                         what + " k_cache vs cpu");
            expect_same(got_v, testing::decode(vc_b, cdt), what + " v_cache vs cpu");
          }
        }
      }
    }
  }
}

// ---- swiglu, fused form ----------------------------------------------------------------------

TEST(CudaSwigluFused, MatchesSeparateGateAndUpAndTheCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(12);
  struct Shape {
    int64_t t, h;
  };
  for (const Shape sh : {Shape{1, 1}, Shape{3, 7}, Shape{5, 64}, Shape{4, 1003}, Shape{2, 172}}) {
    for (const DType act : {DType::kF32, DType::kBF16}) {
      for (const size_t offset : {size_t{0}, size_t{1}}) {  // 1: misaligned, scalar path
        const std::string what = std::to_string(sh.t) + "x" + std::to_string(sh.h) + " " +
                                 dtype_name(act) + " offset " + std::to_string(offset);
        const int64_t T = sh.t, H = sh.h;
        const std::vector<float> gu = random_values(T * 2 * H, act, rng, -8.0f, 8.0f);
        std::vector<float> g(T * H), u(T * H), want(T * H);
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t j = 0; j < H; ++j) {
            g[t * H + j] = gu[t * 2 * H + j];
            u[t * H + j] = gu[t * 2 * H + H + j];
          }
        }
        ASSERT_TRUE(cpu->swiglu({TensorView(g.data(), DType::kF32, {T, H}),
                                 TensorView(u.data(), DType::kF32, {T, H}),
                                 TensorView(want.data(), DType::kF32, {T, H})})
                        .ok());
        DeviceTensor d_gu = upload(*gpu, gu, act, {T, 2 * H}, offset);
        DeviceTensor d_out = upload(*gpu, want, act, {T, H}, offset);
        poison(*gpu, d_out.view);
        ASSERT_TRUE(gpu->swiglu({{}, {}, d_out.view, d_gu.view}).ok()) << what;
        const std::vector<float> got = download(*gpu, d_out.view);
        DeviceTensor d_g = upload(*gpu, g, act, {T, H}), d_u = upload(*gpu, u, act, {T, H});
        DeviceTensor d_ref = upload(*gpu, want, act, {T, H});
        poison(*gpu, d_ref.view);
        ASSERT_TRUE(gpu->swiglu({d_g.view, d_u.view, d_ref.view}).ok()) << what;
        expect_same(got, download(*gpu, d_ref.view), what + " vs swiglu(gate, up)");
        expect_close(got, want, act, what + " vs cpu");
      }
    }
  }
}

// ---- argument checks: no device needed -------------------------------------------------------

void* fake(uintptr_t p) {
  return reinterpret_cast<void*>(p);
}

void expect_invalid(const Status& s, const std::string& op, const std::string& needle) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find(op + ": "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

TEST(CudaFusedArgs, RopeKvWrite) {
  // T = 3, H = 8, KV = 2, D = 64: qkv [3, 768]; caches [4, 16, 2, 64].
  const TensorView qkv(fake(0x10000), DType::kBF16, {3, 768}, Device::kCuda);
  const TensorView pos(fake(0x20000), DType::kI32, {3}, Device::kCuda);
  const TensorView f(fake(0x30000), DType::kF32, {32}, Device::kCuda);
  const TensorView slots(fake(0x40000), DType::kI32, {3}, Device::kCuda);
  const TensorView q(fake(0x50000), DType::kBF16, {3, 8, 64}, Device::kCuda);
  const TensorView kc(fake(0x100000), DType::kF16, {4, 16, 2, 64}, Device::kCuda);
  const TensorView vc(fake(0x200000), DType::kF16, {4, 16, 2, 64}, Device::kCuda);
  auto run = [](RopeKvWriteArgs a) { return cuda::rope_kv_write_cuda(a, nullptr); };
  const RopeKvWriteArgs good{qkv, pos, f, slots, q, kc, vc};
  RopeKvWriteArgs a = good;
  a.qkv.shape[1] = 704;  // the width of H + 2 KV = 11 heads, not 12
  expect_invalid(run(a), "rope_kv_write", "qkv must be [3, 768]");
  a = good;
  a.qkv.dtype = DType::kF32;
  expect_invalid(run(a), "rope_kv_write", "qkv must be");
  a = good;
  a.q_out = TensorView(fake(0x50000), DType::kBF16, {3, 8, 63}, Device::kCuda);
  expect_invalid(run(a), "rope_kv_write", "even");
  a = good;
  a.q_out.dtype = DType::kF16;
  expect_invalid(run(a), "rope_kv_write", "q_out dtype");
  a = good;
  a.positions.shape[0] = 4;
  expect_invalid(run(a), "rope_kv_write", "positions");
  a = good;
  a.inv_freq.shape[0] = 31;
  expect_invalid(run(a), "rope_kv_write", "inv_freq");
  a = good;
  a.slot_mapping.dtype = DType::kF32;
  expect_invalid(run(a), "rope_kv_write", "slot_mapping");
  a = good;
  a.k_cache.shape[3] = 32;
  expect_invalid(run(a), "rope_kv_write", "k_cache must be");
  a = good;
  a.k_cache.dtype = DType::kI32;
  expect_invalid(run(a), "rope_kv_write", "k_cache dtype");
  a = good;
  a.v_cache.dtype = DType::kBF16;
  expect_invalid(run(a), "rope_kv_write", "v_cache must match");
  a = good;
  a.k_cache.device = Device::kCpu;
  expect_invalid(run(a), "rope_kv_write", "k_cache must be on the cuda device");
  a = good;
  a.qkv.device = Device::kCpu;
  expect_invalid(run(a), "rope_kv_write", "qkv must be on the cuda device");
  a = good;
  a.q_out.data = fake(0x10000 + 64);
  expect_invalid(run(a), "rope_kv_write", "q_out must not overlap qkv");
  a = good;
  a.v_cache = a.k_cache;
  expect_invalid(run(a), "rope_kv_write", "overlap");
  a = good;
  a.k_cache.data = fake(0x50000);  // over q_out
  expect_invalid(run(a), "rope_kv_write", "overlap");
  a = good;
  a.qkv.data = nullptr;
  expect_invalid(run(a), "rope_kv_write", "null pointer");
  // An empty batch is a no-op that never touches the device.
  a = good;
  a.qkv = TensorView(nullptr, DType::kBF16, {0, 768}, Device::kCuda);
  a.positions.shape[0] = a.slot_mapping.shape[0] = 0;
  a.q_out = TensorView(nullptr, DType::kBF16, {0, 8, 64}, Device::kCuda);
  EXPECT_TRUE(run(a).ok());
}

TEST(CudaFusedArgs, SwigluFusedForm) {
  const TensorView gu(fake(0x10000), DType::kBF16, {4, 192}, Device::kCuda);
  const TensorView out(fake(0x30000), DType::kBF16, {4, 96}, Device::kCuda);
  auto run = [](SwigluArgs a) { return cuda::swiglu_cuda(a, nullptr); };
  TensorView odd = gu;
  odd.shape[1] = 191;
  expect_invalid(run({{}, {}, out, odd}), "swiglu", "even");
  TensorView wide = out;
  wide.shape[1] = 97;
  expect_invalid(run({{}, {}, wide, gu}), "swiglu", "out must be [4, 96]");
  TensorView f32_out = out;
  f32_out.dtype = DType::kF32;
  expect_invalid(run({{}, {}, f32_out, gu}), "swiglu", "out must be");
  TensorView f16 = gu;
  f16.dtype = DType::kF16;
  expect_invalid(run({{}, {}, out, f16}), "swiglu", "gate_up dtype");
  expect_invalid(run({out, {}, out, gu}), "swiglu", "gate and up must be empty");
  TensorView cpu_out = out;
  cpu_out.device = Device::kCpu;
  expect_invalid(run({{}, {}, cpu_out, gu}), "swiglu", "out must be on the cuda device");
  TensorView in_place = out;
  in_place.data = gu.data;
  expect_invalid(run({{}, {}, in_place, gu}), "swiglu", "out must not overlap gate_up");
  const TensorView none(nullptr, DType::kBF16, {0, 192}, Device::kCuda);
  const TensorView none_out(nullptr, DType::kBF16, {0, 96}, Device::kCuda);
  EXPECT_TRUE(run({{}, {}, none_out, none}).ok());
}

}  // namespace
}  // namespace pagoda
