// The fused ops of the fused-projection forward pass against the unfused ops, bit for bit:
//   rope_kv_write  == rope, then kv_write (q/k/v split out of the fused qkv rows)
//   swiglu(gate_up) == swiglu(gate, up)
//   matmul(x, [wq; wk; wv]) columns == matmul(x, wq) | matmul(x, wk) | matmul(x, wv)
// over head dims 8/64/128, GQA ratios 1/2/4/8, block sizes 1/16, padding slots, f32/f16/bf16
// caches and f32/bf16 activations (bf16: the unfused side rounds q and k to bf16 after rope, as a
// bf16 activation buffer would; this is the CUDA twin's semantics), plus argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

HostTensor inv_freq_tensor(int64_t head_dim) {
  HostTensor f(DType::kF32, {head_dim / 2});
  for (int64_t i = 0; i < head_dim / 2; ++i)
    f.f32()[i] = static_cast<float>(1.0 / std::pow(500000.0, 2.0 * i / head_dim));
  return f;
}

// Rounds every element of an f32 tensor to `t` in place (what an activation of dtype t holds).
void round_to(HostTensor* x, DType t) {
  for (int64_t i = 0; i < x->numel(); ++i) {
    HostTensor one(t, {1});
    one.set(0, x->f32()[i]);
    x->f32()[i] = static_cast<float>(one.get(0));
  }
}

struct RkwCase {
  int64_t T, H, KV, D, block_size;
  DType act, cache;
};

void run_rope_kv_write_case(Backend& backend, const RkwCase& c) {
  SCOPED_TRACE(::testing::Message() << "T=" << c.T << " H=" << c.H << " KV=" << c.KV << " D=" << c.D
                                    << " bs=" << c.block_size << " act=" << dtype_name(c.act)
                                    << " cache=" << dtype_name(c.cache));
  std::mt19937 rng(static_cast<uint32_t>(c.T + 10 * c.H + 100 * c.KV + 1000 * c.D + c.block_size));
  const int64_t W = (c.H + 2 * c.KV) * c.D, num_blocks = 3;
  const int64_t num_slots = num_blocks * c.block_size;
  HostTensor qkv = ref::random_tensor(rng, c.act, {c.T, W}, -2.0f, 2.0f);
  std::vector<int32_t> all(num_slots);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<int32_t> slots(c.T), positions(c.T);
  std::uniform_int_distribution<int32_t> pos_dist(0, 9000);
  for (int64_t t = 0; t < c.T; ++t) {
    slots[t] = t % 3 == 1 ? -1 - static_cast<int32_t>(t) : all[t % num_slots];  // some padding
    positions[t] = t == 0 ? 0 : pos_dist(rng);
  }
  HostTensor slot_t = ref::i32_tensor(slots), pos_t = ref::i32_tensor(positions);
  HostTensor inv_freq = inv_freq_tensor(c.D);

  // Unfused: split (widened to f32), rope, round to the activation dtype, kv_write.
  HostTensor q(DType::kF32, {c.T, c.H, c.D}), k(DType::kF32, {c.T, c.KV, c.D}),
      v(DType::kF32, {c.T, c.KV, c.D});
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t i = 0; i < W; ++i) {
      const float x = static_cast<float>(qkv.get(t * W + i));
      if (i < c.H * c.D) {
        q.f32()[t * c.H * c.D + i] = x;
      } else if (i < (c.H + c.KV) * c.D) {
        k.f32()[t * c.KV * c.D + i - c.H * c.D] = x;
      } else {
        v.f32()[t * c.KV * c.D + i - (c.H + c.KV) * c.D] = x;
      }
    }
  }
  ASSERT_TRUE(backend.rope({q.view(), k.view(), pos_t.view(), inv_freq.view()}).ok());
  round_to(&q, c.act);
  round_to(&k, c.act);
  HostTensor want_k = ref::poisoned(c.cache, {num_blocks, c.block_size, c.KV, c.D});
  HostTensor want_v = ref::poisoned(c.cache, {num_blocks, c.block_size, c.KV, c.D});
  ASSERT_TRUE(
      backend.kv_write({k.view(), v.view(), slot_t.view(), want_k.view(), want_v.view()}).ok());
  HostTensor want_q(c.act, {c.T, c.H, c.D});
  for (int64_t i = 0; i < q.numel(); ++i) want_q.set(i, q.f32()[i]);

  // Fused, into poisoned outputs.
  HostTensor q_out = ref::poisoned(c.act, {c.T, c.H, c.D});
  HostTensor k_cache = ref::poisoned(c.cache, {num_blocks, c.block_size, c.KV, c.D});
  HostTensor v_cache = ref::poisoned(c.cache, {num_blocks, c.block_size, c.KV, c.D});
  const Status s = backend.rope_kv_write({qkv.view(), pos_t.view(), inv_freq.view(), slot_t.view(),
                                          q_out.view(), k_cache.view(), v_cache.view()});
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_TRUE(ref::same_bits(q_out.data(), want_q.data(), want_q.nbytes())) << "q_out";
  EXPECT_TRUE(ref::same_bits(k_cache.data(), want_k.data(), want_k.nbytes())) << "k_cache";
  EXPECT_TRUE(ref::same_bits(v_cache.data(), want_v.data(), want_v.nbytes())) << "v_cache";
  // Padding slots wrote nothing: exactly the written slots differ from the poison.
  int64_t written = 0;
  for (int64_t s_i = 0; s_i < num_slots; ++s_i)
    written += std::isnan(k_cache.get(s_i * c.KV * c.D)) ? 0 : 1;
  EXPECT_EQ(written, std::count_if(slots.begin(), slots.end(), [](int32_t x) { return x >= 0; }));
}

TEST(RopeKvWriteTest, MatchesRopeThenKvWriteBitForBit) {
  auto backend = make_cpu_backend(2);
  for (DType act : {DType::kF32, DType::kBF16}) {
    for (DType cache : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (int64_t D : {8, 64, 128}) {
        // GQA ratios 1, 2, 4, 8.
        for (auto [H, KV] : {std::pair{4, 4}, std::pair{4, 2}, std::pair{8, 2}, std::pair{8, 1}}) {
          for (int64_t bs : {1, 16}) {
            run_rope_kv_write_case(*backend, {bs == 1 ? 3 : 11, H, KV, D, bs, act, cache});
          }
        }
      }
    }
  }
}

TEST(RopeKvWriteTest, EmptyBatchIsANoOp) {
  auto backend = make_cpu_backend(1);
  HostTensor qkv(DType::kF32, {0, 32}), q_out(DType::kF32, {0, 2, 8});
  HostTensor pos(DType::kI32, {0}), slots(DType::kI32, {0});
  HostTensor inv_freq = inv_freq_tensor(8);
  HostTensor kc = ref::poisoned(DType::kF32, {2, 4, 1, 8}),
             vc = ref::poisoned(DType::kF32, {2, 4, 1, 8});
  EXPECT_TRUE(backend
                  ->rope_kv_write({qkv.view(), pos.view(), inv_freq.view(), slots.view(),
                                   q_out.view(), kc.view(), vc.view()})
                  .ok());
}

TEST(RopeKvWriteTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(5);
  // T = 2, H = 2, KV = 1, D = 8: qkv width 32; cache [3 blocks, 4, 1, 8].
  HostTensor qkv = ref::random_tensor(rng, DType::kF32, {2, 32});
  HostTensor qkv_wide = ref::random_tensor(rng, DType::kF32, {2, 40});
  HostTensor qkv_bf16 = ref::random_tensor(rng, DType::kBF16, {2, 32});
  HostTensor q_out = ref::poisoned(DType::kF32, {2, 2, 8});
  HostTensor q_odd = ref::poisoned(DType::kF32, {2, 2, 7});
  HostTensor pos = ref::i32_tensor({0, 5}), pos_neg = ref::i32_tensor({3, -1});
  HostTensor pos_short = ref::i32_tensor({0});
  HostTensor slots = ref::i32_tensor({11, -1}), slots_beyond = ref::i32_tensor({0, 12});
  HostTensor inv_freq = inv_freq_tensor(8);
  HostTensor inv_freq_bad = ref::random_tensor(rng, DType::kF32, {3});
  HostTensor kc = ref::poisoned(DType::kF32, {3, 4, 1, 8}),
             vc = ref::poisoned(DType::kF32, {3, 4, 1, 8});
  HostTensor vc_f16 = ref::poisoned(DType::kF16, {3, 4, 1, 8});
  HostTensor kc_wide = ref::poisoned(DType::kF32, {3, 4, 1, 16});
  auto run = [&](const TensorView& qkv_v, const TensorView& pos_v, const TensorView& f_v,
                 const TensorView& slots_v, const TensorView& q_v, const TensorView& kc_v,
                 const TensorView& vc_v) {
    return backend->rope_kv_write({qkv_v, pos_v, f_v, slots_v, q_v, kc_v, vc_v});
  };
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("rope_kv_write: " + needle), std::string::npos) << s.message();
  };
  const TensorView Q = qkv.view(), P = pos.view(), F = inv_freq.view(), S = slots.view(),
                   O = q_out.view(), K = kc.view(), V = vc.view();
  ASSERT_TRUE(run(Q, P, F, S, O, K, V).ok());
  expect_invalid(run(qkv_wide.view(), P, F, S, O, K, V), "qkv");
  expect_invalid(run(qkv_bf16.view(), P, F, S, O, K, V), "qkv");
  expect_invalid(run(Q, P, F, S, q_odd.view(), K, V), "q_out");
  expect_invalid(run(Q, pos_neg.view(), F, S, O, K, V), "positions");
  expect_invalid(run(Q, pos_short.view(), F, S, O, K, V), "positions");
  expect_invalid(run(Q, P, inv_freq_bad.view(), S, O, K, V), "inv_freq");
  expect_invalid(run(Q, P, F, slots_beyond.view(), O, K, V), "slot_mapping");
  expect_invalid(run(Q, P, F, pos_short.view(), O, K, V), "slot_mapping");
  expect_invalid(run(Q, P, F, S, O, K, vc_f16.view()), "v_cache");
  expect_invalid(run(Q, P, F, S, O, kc_wide.view(), V), "k_cache");
  expect_invalid(run(Q, P, F, S, O, K, K), "k_cache");  // k_cache overlaps v_cache
  TensorView q_in_qkv = O;  // q_out inside qkv: [2, 2, 8] at qkv's start
  q_in_qkv.data = qkv.data();
  expect_invalid(run(Q, P, F, S, q_in_qkv, K, V), "q_out");
  TensorView cpu_slots = S;
  cpu_slots.dtype = DType::kF32;
  expect_invalid(run(Q, P, F, cpu_slots, O, K, V), "slot_mapping");
}

// ---- swiglu, fused form ----------------------------------------------------------------------

TEST(SwigluFusedTest, MatchesSeparateGateAndUpBitForBit) {
  auto backend = make_cpu_backend(2);
  for (auto [T, H] : {std::pair{1, 1}, std::pair{3, 7}, std::pair{5, 64}, std::pair{4, 1003},
                      std::pair{2, 9}, std::pair{17, 172}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << T << " H=" << H);
    std::mt19937 rng(static_cast<uint32_t>(T * 1000 + H));
    HostTensor gate_up = ref::random_tensor(rng, DType::kF32, {T, 2 * H}, -8.0f, 8.0f);
    HostTensor gate(DType::kF32, {T, H}), up(DType::kF32, {T, H});
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(gate.f32() + t * H, gate_up.f32() + t * 2 * H, H * sizeof(float));
      std::memcpy(up.f32() + t * H, gate_up.f32() + t * 2 * H + H, H * sizeof(float));
    }
    HostTensor want = ref::poisoned(DType::kF32, {T, H}), got = ref::poisoned(DType::kF32, {T, H});
    ASSERT_TRUE(backend->swiglu({gate.view(), up.view(), want.view()}).ok());
    const Status s = backend->swiglu({{}, {}, got.view(), gate_up.view()});
    ASSERT_TRUE(s.ok()) << s.to_string();
    EXPECT_TRUE(ref::same_bits(got.data(), want.data(), want.nbytes()));
  }
}

TEST(SwigluFusedTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(6);
  HostTensor gate_up = ref::random_tensor(rng, DType::kF32, {3, 16});
  HostTensor odd = ref::random_tensor(rng, DType::kF32, {3, 15});
  HostTensor out = ref::poisoned(DType::kF32, {3, 8}),
             out_wide = ref::poisoned(DType::kF32, {3, 9});
  HostTensor out_short = ref::poisoned(DType::kF32, {2, 8});
  HostTensor bf16 = ref::random_tensor(rng, DType::kBF16, {3, 16});
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("swiglu: " + needle), std::string::npos) << s.message();
  };
  ASSERT_TRUE(backend->swiglu({{}, {}, out.view(), gate_up.view()}).ok());
  expect_invalid(backend->swiglu({{}, {}, out.view(), odd.view()}), "gate_up");
  expect_invalid(backend->swiglu({{}, {}, out_wide.view(), gate_up.view()}), "out");
  expect_invalid(backend->swiglu({{}, {}, out_short.view(), gate_up.view()}), "out");
  expect_invalid(backend->swiglu({{}, {}, out.view(), bf16.view()}), "gate_up");
  expect_invalid(backend->swiglu({out.view(), {}, out.view(), gate_up.view()}), "gate_up");
  TensorView in_place = out.view();  // out over gate_up's first half: rows would race
  in_place.data = gate_up.data();
  expect_invalid(backend->swiglu({{}, {}, in_place, gate_up.view()}), "out");
}

// ---- matmul: a column does not depend on N ---------------------------------------------------

TEST(FusedMatmulTest, ColumnsOfTheFusedGemmMatchSeparateGemmsBitForBit) {
  auto backend = make_cpu_backend(2);
  for (DType wdt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (auto [K, Nq, Nkv] :
         {std::tuple{7, 5, 3}, std::tuple{64, 64, 16}, std::tuple{100, 24, 8}}) {
      for (int64_t T : {1, 2, 5, 9}) {
        for (bool bias : {false, true}) {
          SCOPED_TRACE(::testing::Message() << dtype_name(wdt) << " K=" << K << " Nq=" << Nq
                                            << " Nkv=" << Nkv << " T=" << T << " bias=" << bias);
          std::mt19937 rng(static_cast<uint32_t>(K * 31 + Nq * 7 + T));
          const int64_t N = Nq + 2 * Nkv, rows[3] = {Nq, Nkv, Nkv};
          HostTensor x = ref::random_tensor(rng, DType::kF32, {T, K});
          HostTensor w = ref::random_tensor(rng, wdt, {N, K});
          HostTensor b = ref::random_tensor(rng, wdt, {N});
          HostTensor fused = ref::poisoned(DType::kF32, {T, N});
          ASSERT_TRUE(
              backend->matmul({x.view(), w.view(), bias ? b.view() : TensorView{}, fused.view()})
                  .ok());
          int64_t row0 = 0;
          for (int part = 0; part < 3; ++part) {
            TensorView wp = w.view(), bp = b.view();
            wp.data = static_cast<char*>(w.data()) + row0 * K * dtype_size(wdt);
            wp.shape[0] = rows[part];
            bp.data = static_cast<char*>(b.data()) + row0 * dtype_size(wdt);
            bp.shape[0] = rows[part];
            HostTensor out = ref::poisoned(DType::kF32, {T, rows[part]});
            ASSERT_TRUE(backend->matmul({x.view(), wp, bias ? bp : TensorView{}, out.view()}).ok());
            for (int64_t t = 0; t < T; ++t) {
              EXPECT_TRUE(ref::same_bits(out.f32() + t * rows[part], fused.f32() + t * N + row0,
                                         rows[part] * sizeof(float)))
                  << "part " << part << " row " << t;
            }
            row0 += rows[part];
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace pagoda
