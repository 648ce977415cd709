// CUDA embedding, rope, swiglu, add, kv_write and gather_rows against their CPU twins
// (make_cpu_backend): random inputs rounded to the tested dtype (so both sides see the same
// values), odd shapes, GQA, block sizes 1/16/32, negative slots, f32 and bf16 activations,
// outputs poisoned with NaN before each run. The argument checks also run without a device (fake
// pointers, never dereferenced).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
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

// Tolerance relative to max(|want|, 1): f32 differs from the CPU only in a few ulps (sincosf,
// expf); bf16 adds one output rounding (2^-9 relative).
void expect_close(const std::vector<float>& got, const std::vector<float>& want, DType act,
                  const std::string& what) {
  const double rtol = act == DType::kF32 ? 1e-5 : 1e-2;
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const double tol = rtol * std::max(1.0, std::fabs(double{want[i]}));
    if (!(std::fabs(double{got[i]} - want[i]) <= tol)) {  // NaN (poison left behind) fails too
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
}

// Bit-for-bit equality of values, where NaN matches NaN (untouched poisoned cache rows).
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

TensorView host(std::vector<float>& v, std::initializer_list<int64_t> dims) {
  return TensorView(v.data(), DType::kF32, dims);
}
TensorView host(std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
  return TensorView(v.data(), DType::kI32, dims);
}

std::string tag(DType act) {
  return std::string(dtype_name(act));
}

// ---- embedding -------------------------------------------------------------------------------

TEST(CudaEmbedding, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(1);
  constexpr int64_t kVocab = 37, kT = 9;
  for (const int64_t dim : {1, 7, 64, 300}) {
    for (const DType wdt : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (const DType act : {DType::kF32, DType::kBF16}) {
        const std::string what =
            "dim " + std::to_string(dim) + " table " + tag(wdt) + " " + tag(act);
        std::vector<float> table = random_values(kVocab * dim, wdt, rng);
        std::vector<int32_t> ids(kT);
        for (auto& id : ids) id = static_cast<int32_t>(rng() % kVocab);
        ids[0] = 0;
        ids[kT - 1] = kVocab - 1;
        std::vector<float> want(kT * dim);
        ASSERT_TRUE(
            cpu->embedding({host(table, {kVocab, dim}), host(ids, {kT}), host(want, {kT, dim})})
                .ok());
        DeviceTensor d_table = upload(*gpu, table, wdt, {kVocab, dim});
        DeviceTensor d_ids = upload_ids(*gpu, ids);
        DeviceTensor d_out = upload(*gpu, want, act, {kT, dim});
        poison(*gpu, d_out.view);
        const Status s = gpu->embedding({d_table.view, d_ids.view, d_out.view});
        ASSERT_TRUE(s.ok()) << what << ": " << s.to_string();
        expect_close(download(*gpu, d_out.view), want, act, what);
      }
    }
  }
}

// ---- rope ------------------------------------------------------------------------------------

TEST(CudaRope, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(2);
  constexpr int64_t kT = 7;
  struct Heads {
    int64_t q, kv;
  };
  for (const int64_t head_dim : {8, 34, 64, 128}) {
    for (const Heads h : {Heads{4, 4}, Heads{8, 2}, Heads{6, 1}}) {
      for (const DType act : {DType::kF32, DType::kBF16}) {
        const std::string what = "head_dim " + std::to_string(head_dim) + " heads " +
                                 std::to_string(h.q) + "/" + std::to_string(h.kv) + " " + tag(act);
        std::vector<float> q = random_values(kT * h.q * head_dim, act, rng);
        std::vector<float> k = random_values(kT * h.kv * head_dim, act, rng);
        std::vector<int32_t> pos(kT);
        for (auto& p : pos) p = static_cast<int32_t>(rng() % 9000);
        pos[0] = 0;
        std::vector<float> inv_freq(head_dim / 2);
        for (int64_t i = 0; i < head_dim / 2; ++i) {
          inv_freq[i] = static_cast<float>(std::pow(500000.0, -2.0 * i / head_dim));
        }
        DeviceTensor d_q = upload(*gpu, q, act, {kT, h.q, head_dim});
        DeviceTensor d_k = upload(*gpu, k, act, {kT, h.kv, head_dim});
        DeviceTensor d_pos = upload_ids(*gpu, pos);
        DeviceTensor d_f = upload(*gpu, inv_freq, DType::kF32, {head_dim / 2});
        ASSERT_TRUE(cpu->rope({host(q, {kT, h.q, head_dim}), host(k, {kT, h.kv, head_dim}),
                               host(pos, {kT}), host(inv_freq, {head_dim / 2})})
                        .ok());
        const Status s = gpu->rope({d_q.view, d_k.view, d_pos.view, d_f.view});
        ASSERT_TRUE(s.ok()) << what << ": " << s.to_string();
        expect_close(download(*gpu, d_q.view), q, act, what + " q");
        expect_close(download(*gpu, d_k.view), k, act, what + " k");
      }
    }
  }
}

// ---- swiglu and add --------------------------------------------------------------------------

TEST(CudaSwigluAdd, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(3);
  struct Shape {
    int64_t t, h;
  };
  for (const Shape sh : {Shape{1, 1}, Shape{3, 7}, Shape{5, 64}, Shape{4, 1003}}) {
    for (const DType act : {DType::kF32, DType::kBF16}) {
      for (const size_t offset : {size_t{0}, size_t{1}}) {  // 1: misaligned, scalar path
        const std::string what = std::to_string(sh.t) + "x" + std::to_string(sh.h) + " " +
                                 tag(act) + " offset " + std::to_string(offset);
        const int64_t n = sh.t * sh.h;
        std::vector<float> g = random_values(n, act, rng, -8.0f, 8.0f);
        std::vector<float> u = random_values(n, act, rng);
        std::vector<float> want(n), sum(g);
        ASSERT_TRUE(
            cpu->swiglu({host(g, {sh.t, sh.h}), host(u, {sh.t, sh.h}), host(want, {sh.t, sh.h})})
                .ok());
        ASSERT_TRUE(cpu->add({host(sum, {sh.t, sh.h}), host(u, {sh.t, sh.h})}).ok());
        DeviceTensor d_g = upload(*gpu, g, act, {sh.t, sh.h}, offset);
        DeviceTensor d_u = upload(*gpu, u, act, {sh.t, sh.h}, offset);
        DeviceTensor d_out = upload(*gpu, g, act, {sh.t, sh.h}, offset);
        poison(*gpu, d_out.view);
        ASSERT_TRUE(gpu->swiglu({d_g.view, d_u.view, d_out.view}).ok()) << what;
        expect_close(download(*gpu, d_out.view), want, act, what + " swiglu");
        // In place on gate, then on up: same values.
        ASSERT_TRUE(gpu->swiglu({d_g.view, d_u.view, d_g.view}).ok()) << what;
        expect_close(download(*gpu, d_g.view), want, act, what + " swiglu out=gate");
        DeviceTensor d_g2 = upload(*gpu, g, act, {sh.t, sh.h}, offset);
        ASSERT_TRUE(gpu->swiglu({d_g2.view, d_u.view, d_u.view}).ok()) << what;
        expect_close(download(*gpu, d_u.view), want, act, what + " swiglu out=up");
        // add: a += b.
        DeviceTensor d_a = upload(*gpu, g, act, {sh.t, sh.h}, offset);
        DeviceTensor d_b = upload(*gpu, u, act, {sh.t, sh.h}, offset);
        ASSERT_TRUE(gpu->add({d_a.view, d_b.view}).ok()) << what;
        expect_close(download(*gpu, d_a.view), sum, act, what + " add");
        ASSERT_TRUE(gpu->add({d_b.view, d_b.view}).ok()) << what;  // b == a: doubling
        std::vector<float> twice(u);
        for (float& x : twice) x *= 2.0f;
        expect_close(download(*gpu, d_b.view), twice, act, what + " add a=b");
      }
    }
  }
}

// ---- kv_write --------------------------------------------------------------------------------

TEST(CudaKvWrite, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(4);
  constexpr int64_t kBlocks = 5;
  for (const int64_t block_size : {1, 16, 32}) {
    for (const int64_t n_kv : {1, 2, 4}) {
      for (const int64_t head_dim : {8, 40, 128}) {
        for (const DType cdt : {DType::kF32, DType::kF16, DType::kBF16}) {
          for (const DType act : {DType::kF32, DType::kBF16}) {
            const std::string what = "block " + std::to_string(block_size) + " kv " +
                                     std::to_string(n_kv) + " d " + std::to_string(head_dim) +
                                     " cache " + tag(cdt) + " " + tag(act);
            const int64_t num_slots = kBlocks * block_size;
            const int64_t t = std::min<int64_t>(num_slots, 11);
            std::vector<int32_t> perm(num_slots);
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), rng);
            std::vector<int32_t> slots(perm.begin(), perm.begin() + t);
            slots[t / 2] = -1;  // padding, skipped
            std::vector<float> k = random_values(t * n_kv * head_dim, act, rng);
            std::vector<float> v = random_values(t * n_kv * head_dim, act, rng);
            const size_t cache_elems = num_slots * n_kv * head_dim;
            std::vector<uint8_t> kc(cache_elems * dtype_size(cdt), 0xff);  // NaN everywhere
            std::vector<uint8_t> vc(kc);
            const TensorView hk = host(k, {t, n_kv, head_dim}), hv = host(v, {t, n_kv, head_dim});
            ASSERT_TRUE(
                cpu->kv_write({hk, hv, host(slots, {t}),
                               TensorView(kc.data(), cdt, {kBlocks, block_size, n_kv, head_dim}),
                               TensorView(vc.data(), cdt, {kBlocks, block_size, n_kv, head_dim})})
                    .ok());
            DeviceTensor d_k = upload(*gpu, k, act, {t, n_kv, head_dim});
            DeviceTensor d_v = upload(*gpu, v, act, {t, n_kv, head_dim});
            DeviceTensor d_slots = upload_ids(*gpu, slots);
            const std::vector<float> zeros(cache_elems, 0.0f);
            DeviceTensor d_kc = upload(*gpu, zeros, cdt, {kBlocks, block_size, n_kv, head_dim});
            DeviceTensor d_vc = upload(*gpu, zeros, cdt, {kBlocks, block_size, n_kv, head_dim});
            poison(*gpu, d_kc.view);
            poison(*gpu, d_vc.view);
            const Status s =
                gpu->kv_write({d_k.view, d_v.view, d_slots.view, d_kc.view, d_vc.view});
            ASSERT_TRUE(s.ok()) << what << ": " << s.to_string();
            // The values are representable in the activation dtype, so both sides round the same
            // f32 value to the cache dtype: bit-for-bit equal.
            expect_same(download(*gpu, d_kc.view), testing::decode(kc, cdt), what + " k_cache");
            expect_same(download(*gpu, d_vc.view), testing::decode(vc, cdt), what + " v_cache");
          }
        }
      }
    }
  }
}

// ---- gather_rows -----------------------------------------------------------------------------

TEST(CudaGatherRows, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(1);
  std::mt19937 rng(5);
  constexpr int64_t kT = 9, kR = 4;
  for (const int64_t dim : {1, 7, 512}) {
    for (const DType act : {DType::kF32, DType::kBF16}) {
      const std::string what = "dim " + std::to_string(dim) + " " + tag(act);
      std::vector<float> src = random_values(kT * dim, act, rng);
      std::vector<int32_t> rows = {static_cast<int32_t>(kT - 1), 0, 3, 3};
      std::vector<float> want(kR * dim);
      ASSERT_TRUE(
          cpu->gather_rows({host(src, {kT, dim}), host(rows, {kR}), host(want, {kR, dim})}).ok());
      DeviceTensor d_src = upload(*gpu, src, act, {kT, dim});
      DeviceTensor d_rows = upload_ids(*gpu, rows);
      DeviceTensor d_out = upload(*gpu, want, act, {kR, dim});
      poison(*gpu, d_out.view);
      ASSERT_TRUE(gpu->gather_rows({d_src.view, d_rows.view, d_out.view}).ok()) << what;
      expect_same(download(*gpu, d_out.view), want, what);
    }
  }
}

// ---- argument checks: no device needed -------------------------------------------------------

void* fake(uintptr_t p) {
  return reinterpret_cast<void*>(p);
}

void expect_invalid(const Status& s, const std::string& op, const std::string& needle) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find(op), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

TEST(CudaElementwiseArgs, Embedding) {
  const TensorView table(fake(0x10000), DType::kBF16, {100, 64}, Device::kCuda);
  const TensorView ids(fake(0x20000), DType::kI32, {4}, Device::kCuda);
  const TensorView out(fake(0x30000), DType::kBF16, {4, 64}, Device::kCuda);
  TensorView i32_table = table;
  i32_table.dtype = DType::kI32;
  expect_invalid(cuda::embedding_cuda({i32_table, ids, out}, nullptr), "embedding", "table dtype");
  TensorView f32_ids = ids;
  f32_ids.dtype = DType::kF32;
  expect_invalid(cuda::embedding_cuda({table, f32_ids, out}, nullptr), "embedding", "token_ids");
  TensorView short_out = out;
  short_out.shape[1] = 63;
  expect_invalid(cuda::embedding_cuda({table, ids, short_out}, nullptr), "embedding",
                 "out must be [4, 64]");
  TensorView f16_out = out;
  f16_out.dtype = DType::kF16;
  expect_invalid(cuda::embedding_cuda({table, ids, f16_out}, nullptr), "embedding", "out dtype");
  TensorView cpu_ids = ids;
  cpu_ids.device = Device::kCpu;
  expect_invalid(cuda::embedding_cuda({table, cpu_ids, out}, nullptr), "embedding",
                 "token_ids must be on the cuda device");
  TensorView inside = out;
  inside.data = fake(0x10000 + 64);
  expect_invalid(cuda::embedding_cuda({table, ids, inside}, nullptr), "embedding", "overlap table");
}

TEST(CudaElementwiseArgs, Rope) {
  const TensorView q(fake(0x10000), DType::kBF16, {3, 8, 64}, Device::kCuda);
  const TensorView k(fake(0x20000), DType::kBF16, {3, 2, 64}, Device::kCuda);
  const TensorView pos(fake(0x30000), DType::kI32, {3}, Device::kCuda);
  const TensorView f(fake(0x40000), DType::kF32, {32}, Device::kCuda);
  const TensorView odd_q(fake(0x10000), DType::kBF16, {3, 8, 63}, Device::kCuda);
  expect_invalid(cuda::rope_cuda({odd_q, k, pos, f}, nullptr), "rope", "even");
  TensorView f32_k = k;
  f32_k.dtype = DType::kF32;
  expect_invalid(cuda::rope_cuda({q, f32_k, pos, f}, nullptr), "rope", "k must be");
  TensorView long_pos = pos;
  long_pos.shape[0] = 4;
  expect_invalid(cuda::rope_cuda({q, k, long_pos, f}, nullptr), "rope", "positions");
  TensorView short_f = f;
  short_f.shape[0] = 31;
  expect_invalid(cuda::rope_cuda({q, k, pos, short_f}, nullptr), "rope", "inv_freq");
  TensorView cpu_q = q;
  cpu_q.device = Device::kCpu;
  expect_invalid(cuda::rope_cuda({cpu_q, k, pos, f}, nullptr), "rope",
                 "q must be on the cuda device");
  TensorView k_in_q = k;
  k_in_q.data = fake(0x10000 + 128);
  expect_invalid(cuda::rope_cuda({q, k_in_q, pos, f}, nullptr), "rope", "overlap");
}

TEST(CudaElementwiseArgs, SwigluAndAdd) {
  const TensorView g(fake(0x10000), DType::kBF16, {4, 96}, Device::kCuda);
  const TensorView u(fake(0x20000), DType::kBF16, {4, 96}, Device::kCuda);
  const TensorView o(fake(0x30000), DType::kBF16, {4, 96}, Device::kCuda);
  TensorView f16_g = g;
  f16_g.dtype = DType::kF16;
  expect_invalid(cuda::swiglu_cuda({f16_g, u, o}, nullptr), "swiglu", "gate dtype");
  TensorView wide_u = u;
  wide_u.shape[1] = 97;
  expect_invalid(cuda::swiglu_cuda({g, wide_u, o}, nullptr), "swiglu", "up must match");
  TensorView shifted = g;
  shifted.data = fake(0x10000 + 2);
  expect_invalid(cuda::swiglu_cuda({g, u, shifted}, nullptr), "swiglu", "out must be gate itself");
  TensorView cpu_o = o;
  cpu_o.device = Device::kCpu;
  expect_invalid(cuda::swiglu_cuda({g, u, cpu_o}, nullptr), "swiglu", "cuda device");
  TensorView f32_b = u;
  f32_b.dtype = DType::kF32;
  expect_invalid(cuda::add_cuda({g, f32_b}, nullptr), "add", "b must match");
  expect_invalid(cuda::add_cuda({g, shifted}, nullptr), "add", "b must be a itself");
  const TensorView flat(fake(0x10000), DType::kBF16, {384}, Device::kCuda);
  expect_invalid(cuda::add_cuda({flat, flat}, nullptr), "add", "[T, dim]");
}

TEST(CudaElementwiseArgs, KvWrite) {
  const TensorView k(fake(0x10000), DType::kBF16, {3, 2, 64}, Device::kCuda);
  const TensorView v(fake(0x20000), DType::kBF16, {3, 2, 64}, Device::kCuda);
  const TensorView slots(fake(0x30000), DType::kI32, {3}, Device::kCuda);
  const TensorView kc(fake(0x100000), DType::kBF16, {4, 16, 2, 64}, Device::kCuda);
  const TensorView vc(fake(0x200000), DType::kBF16, {4, 16, 2, 64}, Device::kCuda);
  TensorView f32_v = v;
  f32_v.dtype = DType::kF32;
  expect_invalid(cuda::kv_write_cuda({k, f32_v, slots, kc, vc}, nullptr), "kv_write",
                 "v must match k");
  TensorView short_slots = slots;
  short_slots.shape[0] = 2;
  expect_invalid(cuda::kv_write_cuda({k, v, short_slots, kc, vc}, nullptr), "kv_write",
                 "slot_mapping");
  TensorView gqa_kc = kc;
  gqa_kc.shape[2] = 4;
  expect_invalid(cuda::kv_write_cuda({k, v, slots, gqa_kc, vc}, nullptr), "kv_write",
                 "k_cache must be");
  TensorView f16_vc = vc;
  f16_vc.dtype = DType::kF16;
  expect_invalid(cuda::kv_write_cuda({k, v, slots, kc, f16_vc}, nullptr), "kv_write",
                 "v_cache must match");
  TensorView cpu_kc = kc;
  cpu_kc.device = Device::kCpu;
  expect_invalid(cuda::kv_write_cuda({k, v, slots, cpu_kc, vc}, nullptr), "kv_write",
                 "k_cache must be on the cuda device");
  expect_invalid(cuda::kv_write_cuda({k, v, slots, kc, kc}, nullptr), "kv_write", "overlap");
}

TEST(CudaElementwiseArgs, GatherRows) {
  const TensorView src(fake(0x10000), DType::kBF16, {9, 64}, Device::kCuda);
  const TensorView rows(fake(0x20000), DType::kI32, {2}, Device::kCuda);
  const TensorView out(fake(0x30000), DType::kBF16, {2, 64}, Device::kCuda);
  TensorView f32_out = out;
  f32_out.dtype = DType::kF32;
  expect_invalid(cuda::gather_rows_cuda({src, rows, f32_out}, nullptr), "gather_rows",
                 "out must be [2, 64]");
  TensorView f32_rows = rows;
  f32_rows.dtype = DType::kF32;
  expect_invalid(cuda::gather_rows_cuda({src, f32_rows, out}, nullptr), "gather_rows",
                 "rows must be");
  TensorView cpu_src = src;
  cpu_src.device = Device::kCpu;
  expect_invalid(cuda::gather_rows_cuda({cpu_src, rows, out}, nullptr), "gather_rows",
                 "src must be on the cuda device");
  TensorView in_src = out;
  in_src.data = fake(0x10000 + 256);
  expect_invalid(cuda::gather_rows_cuda({src, rows, in_src}, nullptr), "gather_rows",
                 "overlap src");
}

// Empty batches are no-ops that never touch the device.
TEST(CudaElementwiseArgs, EmptyBatchesAreOk) {
  const TensorView none2(nullptr, DType::kBF16, {0, 64}, Device::kCuda);
  const TensorView ids(nullptr, DType::kI32, {0}, Device::kCuda);
  const TensorView table(fake(0x10000), DType::kBF16, {10, 64}, Device::kCuda);
  EXPECT_TRUE(cuda::embedding_cuda({table, ids, none2}, nullptr).ok());
  EXPECT_TRUE(cuda::swiglu_cuda({none2, none2, none2}, nullptr).ok());
  EXPECT_TRUE(cuda::add_cuda({none2, none2}, nullptr).ok());
  EXPECT_TRUE(cuda::gather_rows_cuda({none2, ids, none2}, nullptr).ok());
}

}  // namespace
}  // namespace pagoda
