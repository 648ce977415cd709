// kv_write: rows land at their slots (through the paged layout), padding slots are skipped and
// everything else is left untouched; f32/f16/bf16 caches; argument errors.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/reference.h"

namespace pagoda {
namespace {

using ref::HostTensor;

TEST(KvWriteTest, WritesSlotsAndSkipsPadding) {
  auto backend = make_cpu_backend(2);
  for (DType cache_dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (auto [KV, D, bs] : {std::tuple{1, 8, 1}, std::tuple{2, 12, 16}, std::tuple{4, 64, 32}}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(cache_dtype) << " KV=" << KV << " D=" << D
                                        << " block_size=" << bs);
      std::mt19937 rng(static_cast<uint32_t>(KV * 100 + D + bs));
      const int64_t num_blocks = 5, row = KV * D, num_slots = num_blocks * bs;
      // Distinct slots drawn at random, with padding (-1) mixed in.
      std::vector<int32_t> all(num_slots);
      for (int64_t i = 0; i < num_slots; ++i) all[i] = static_cast<int32_t>(i);
      std::shuffle(all.begin(), all.end(), rng);
      const std::vector<int32_t> slots = {all[0], -1, all[1], -7, all[2]};
      const int64_t T = static_cast<int64_t>(slots.size());
      HostTensor k = ref::random_tensor(rng, DType::kF32, {T, KV, D});
      HostTensor v = ref::random_tensor(rng, DType::kF32, {T, KV, D});
      HostTensor k_cache = ref::poisoned(cache_dtype, {num_blocks, bs, KV, D});
      HostTensor v_cache = ref::poisoned(cache_dtype, {num_blocks, bs, KV, D});
      HostTensor slot_t = ref::i32_tensor(slots);
      ASSERT_TRUE(
          backend->kv_write({k.view(), v.view(), slot_t.view(), k_cache.view(), v_cache.view()})
              .ok());
      std::vector<int64_t> writer(num_slots, -1);
      for (int64_t t = 0; t < T; ++t) {
        if (slots[t] >= 0) writer[slots[t]] = t;
      }
      for (int64_t s = 0; s < num_slots; ++s) {
        for (int64_t i = 0; i < row; ++i) {
          const double kc = k_cache.get(s * row + i), vc = v_cache.get(s * row + i);
          if (writer[s] < 0) {
            ASSERT_TRUE(std::isnan(kc) && std::isnan(vc)) << "slot " << s << " was written";
            continue;
          }
          HostTensor rounded(cache_dtype, {2});  // what the cache dtype can hold
          rounded.set(0, k.f32()[writer[s] * row + i]);
          rounded.set(1, v.f32()[writer[s] * row + i]);
          ASSERT_EQ(kc, rounded.get(0)) << "slot " << s << " elem " << i;
          ASSERT_EQ(vc, rounded.get(1)) << "slot " << s << " elem " << i;
        }
      }
    }
  }
}

TEST(KvWriteTest, RejectsBadArguments) {
  auto backend = make_cpu_backend(1);
  std::mt19937 rng(9);
  HostTensor k = ref::random_tensor(rng, DType::kF32, {2, 2, 8});
  HostTensor v = ref::random_tensor(rng, DType::kF32, {2, 2, 8});
  HostTensor k_cache = ref::poisoned(DType::kF32, {3, 4, 2, 8});
  HostTensor v_cache = ref::poisoned(DType::kF32, {3, 4, 2, 8});
  HostTensor v_cache_bf16 = ref::poisoned(DType::kBF16, {3, 4, 2, 8});
  HostTensor k_cache_wide = ref::poisoned(DType::kF32, {3, 4, 2, 16});
  HostTensor beyond = ref::i32_tensor({0, 12});
  HostTensor ok_slots = ref::i32_tensor({11, -1});
  auto expect_invalid = [](const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("kv_write: " + needle), std::string::npos) << s.message();
  };
  expect_invalid(
      backend->kv_write({k.view(), v.view(), beyond.view(), k_cache.view(), v_cache.view()}),
      "slot_mapping");
  expect_invalid(
      backend->kv_write({k.view(), v.view(), ok_slots.view(), k_cache.view(), v_cache_bf16.view()}),
      "v_cache");
  expect_invalid(
      backend->kv_write({k.view(), v.view(), ok_slots.view(), k_cache_wide.view(), v_cache.view()}),
      "k_cache");
  EXPECT_TRUE(
      backend->kv_write({k.view(), v.view(), ok_slots.view(), k_cache.view(), v_cache.view()})
          .ok());
}

}  // namespace
}  // namespace pagoda
