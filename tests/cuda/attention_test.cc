// CUDA paged attention against its CPU twin (make_cpu_backend) on the same random inputs: a
// ragged batch mixing decodes, prefill chunks with prior context, a full prefill and an empty
// sequence; GQA 1/2/4/8; head_dim 8/64/128; block sizes 1/16/32; shuffled block tables;
// contexts up to 1000 positions; f32 and bf16 activations over f32/f16/bf16 caches; outputs
// poisoned and cache slots outside every context set to NaN. Plus batch invariance, out == q,
// and argument checks (those also run without a device, on fake pointers).
// Query-head groups (one CTA per kv head and slice of up to 8 of its query heads): GQA 3, 5, 6,
// 9, 12, 16 and 32 (padded slices, several slices per kv head), head dims whose rows leave
// lanes idle (40, 72) or fill half a chunk (4 and 12 in f32), caches at a misaligned address
// (element loads instead of 16-byte loads: the same bits), and the llama3-8b decode shape.
// Split-K (rows with more than 512 keys): contexts of 513 to 4100 keys, decode rows and prefill
// chunks whose rows cross the threshold, both launch shapes (split CTAs + merge, and one CTA
// walking the splits) against the CPU and against each other bit for bit, a long row alone and
// in batches of either shape bit for bit, NaN rows for bad block ids in one split; the split
// rule itself runs without a device.
//
// The tests call cuda::attention_cuda directly on the legacy default stream and synchronize the
// device; the backend's copies are synchronous, so its data is in place before each launch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/launchers.h"
#include "tests/cuda/attention_test_util.h"
#include "tests/cuda/cuda_test_util.h"

namespace pagoda {
namespace {

using testing::as_float;
using testing::Batch;
using testing::cpu_attention;
using testing::DeviceTensor;
using testing::download;
using testing::expect_close;
using testing::expect_same_bits;
using testing::make_batch;
using testing::poison;
using testing::rows_of;
using testing::Seq;
using testing::sequence_alone;
using testing::upload;

// Decodes (one at position 0, one long), prefill chunks with prior context, a full prefill,
// and a sequence with nothing to compute this step.
const std::vector<Seq> kMixedBatch = {{1, 1},   {37, 1},  {300, 17}, {1000, 1}, {50, 0},
                                      {24, 24}, {777, 5}, {65, 33},  {129, 1}};

// How gpu_attention launches: attention_cuda's own choice, or a forced shape.
enum class Shape { kAuto, kSplitCtas, kWalk };

// The device's answer; out_is_q runs it in place (out == q); cache_offset starts the caches that
// many elements into their allocations (1: not 16-byte aligned, so element loads).
std::vector<float> gpu_attention(Backend& backend, const Batch& b, DType act, DType cache,
                                 float scale, bool out_is_q = false, Shape shape = Shape::kAuto,
                                 size_t cache_offset = 0) {
  const int64_t B = static_cast<int64_t>(b.seq_lens.size());
  DeviceTensor q = upload(backend, b.q, act, {b.T, b.H, b.D});
  DeviceTensor k =
      upload(backend, b.k_cache, cache, {b.num_blocks, b.block_size, b.KV, b.D}, cache_offset);
  DeviceTensor v =
      upload(backend, b.v_cache, cache, {b.num_blocks, b.block_size, b.KV, b.D}, cache_offset);
  DeviceTensor tables = upload(backend, as_float(b.tables), DType::kI32, {B, b.max_blocks});
  DeviceTensor seq_lens = upload(backend, as_float(b.seq_lens), DType::kI32, {B});
  DeviceTensor qs = upload(backend, as_float(b.query_start), DType::kI32, {B + 1});
  DeviceTensor out = upload(backend, b.q, act, {b.T, b.H, b.D});
  if (!out_is_q) poison(backend, out.view);
  const TensorView& out_view = out_is_q ? q.view : out.view;
  const AttentionArgs args{q.view,        k.view,  v.view,   tables.view,
                           seq_lens.view, qs.view, out_view, scale};
  const Status s = shape == Shape::kAuto
                       ? cuda::attention_cuda(args, nullptr)
                       : cuda::attention_cuda_for_test(args, nullptr, shape == Shape::kSplitCtas);
  EXPECT_TRUE(s.ok()) << s.to_string();
  const Status sync = PAGODA_CUDA_STATUS(cudaDeviceSynchronize());
  EXPECT_TRUE(sync.ok()) << sync.to_string();
  return download(backend, out_view);
}

// gqa ratio, head_dim, block_size, activation dtype, cache dtype
using Param = std::tuple<int64_t, int64_t, int64_t, DType, DType>;

class CudaAttentionTest : public ::testing::TestWithParam<Param> {};

TEST_P(CudaAttentionTest, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  const auto [ratio, D, bs, act, cache] = GetParam();
  constexpr int64_t kKv = 2;
  std::mt19937 rng(static_cast<uint32_t>(ratio * 1000 + D * 10 + bs));
  const Batch b = make_batch(kMixedBatch, kKv * ratio, kKv, D, bs, act, cache, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const std::vector<float> want = cpu_attention(b, cache, scale);
  expect_close(gpu_attention(*backend, b, act, cache, scale), want, act, "out");
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [ratio, D, bs, act, cache] = info.param;
  return "gqa" + std::to_string(ratio) + "_hd" + std::to_string(D) + "_bs" + std::to_string(bs) +
         "_" + dtype_name(act) + "_cache" + dtype_name(cache);
}

INSTANTIATE_TEST_SUITE_P(
    Sweep, CudaAttentionTest,
    ::testing::Combine(::testing::Values(1, 2, 4, 8), ::testing::Values(8, 64, 128),
                       ::testing::Values(1, 16, 32), ::testing::Values(DType::kF32, DType::kBF16),
                       ::testing::Values(DType::kF32, DType::kF16, DType::kBF16)),
    param_name);

// head_dim 256 (the largest supported) and an odd one, f32 and bf16.
TEST(CudaAttention, LargeAndOddHeadDims) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(3);
  for (const int64_t D : {256, 80, 3}) {
    for (const DType t : {DType::kF32, DType::kBF16}) {
      const Batch b = make_batch(kMixedBatch, 4, 1, D, 16, t, t, rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(D));
      expect_close(gpu_attention(*backend, b, t, t, scale), cpu_attention(b, t, scale), t,
                   "head_dim " + std::to_string(D) + " " + dtype_name(t));
    }
  }
}

// A sequence's rows do not depend on the rest of the batch (bit-identical), and out == q works.
TEST(CudaAttention, BatchInvariantAndInPlace) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(9);
  const DType t = DType::kBF16;
  const Batch full = make_batch(kMixedBatch, 8, 2, 64, 16, t, t, rng);
  const std::vector<float> batched = gpu_attention(*backend, full, t, t, 0.125f);
  expect_close(gpu_attention(*backend, full, t, t, 0.125f, /*out_is_q=*/true), batched, t,
               "out == q");
  // Sequence 2 alone.
  expect_same_bits(gpu_attention(*backend, sequence_alone(full, 2), t, t, 0.125f),
                   rows_of(full, batched, 2), "sequence 2 alone");
}

// ---- query-head groups, head dims and alignment ------------------------------------------------

// n_heads, n_kv_heads
using GroupParam = std::tuple<int64_t, int64_t>;

class CudaAttentionGroupTest : public ::testing::TestWithParam<GroupParam> {};

// GQA ratios that pad a slice (3 -> 4 heads, 5 and 6 -> 8), that need several slices per kv head
// (9: 5 + 4, 12: 6 + 6, 16: 8 + 8, 32: 4 x 8), against the CPU for head_dim 64 and 128, f32 and
// bf16, and in place (out == q); then a long-context batch in both launch shapes, bit for bit.
TEST_P(CudaAttentionGroupTest, MatchesCpu) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  const auto [H, KV] = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(100 * H + KV));
  for (const int64_t D : {64, 128}) {
    for (const DType t : {DType::kF32, DType::kBF16}) {
      const Batch b = make_batch(kMixedBatch, H, KV, D, 16, t, t, rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(D));
      const std::string what = "H " + std::to_string(H) + " KV " + std::to_string(KV) + " hd " +
                               std::to_string(D) + " " + dtype_name(t);
      const std::vector<float> got = gpu_attention(*backend, b, t, t, scale);
      expect_close(got, cpu_attention(b, t, scale), t, what);
      expect_same_bits(gpu_attention(*backend, b, t, t, scale, /*out_is_q=*/true), got,
                       what + " out == q");
    }
  }
  const DType t = DType::kBF16;
  const Batch b = make_batch({{1500, 1}, {530, 40}, {37, 1}}, H, KV, 128, 16, t, t, rng);
  const std::vector<float> split =
      gpu_attention(*backend, b, t, t, 0.088f, false, Shape::kSplitCtas);
  expect_close(split, cpu_attention(b, t, 0.088f), t, "long rows");
  expect_same_bits(gpu_attention(*backend, b, t, t, 0.088f, false, Shape::kWalk), split,
                   "long rows, walk vs split CTAs");
}

INSTANTIATE_TEST_SUITE_P(Sweep, CudaAttentionGroupTest,
                         ::testing::Values(GroupParam{6, 2}, GroupParam{5, 1}, GroupParam{12, 2},
                                           GroupParam{9, 1}, GroupParam{24, 2}, GroupParam{32, 2},
                                           GroupParam{32, 1}),
                         [](const auto& info) {
                           std::string name = "h";
                           name += std::to_string(std::get<0>(info.param));
                           name += "_kv";
                           name += std::to_string(std::get<1>(info.param));
                           return name;
                         });

// Head dims whose rows leave lanes of a key row idle (40: 5 of 8 lanes, 72: 9 of 16) or end in
// the middle of an f32 chunk (4, 12), on every cache dtype; then each with the caches one
// element off 16-byte alignment (element loads), which must give the same bits.
TEST(CudaAttention, OddHeadDimsAndMisalignedCaches) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(41);
  for (const int64_t D : {40, 72, 4, 12}) {
    for (const DType cache : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (const DType act : {DType::kF32, DType::kBF16}) {
        const Batch b = make_batch(kMixedBatch, 4, 2, D, 16, act, cache, rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        const std::string what =
            "head_dim " + std::to_string(D) + " " + dtype_name(act) + " cache " + dtype_name(cache);
        const std::vector<float> aligned = gpu_attention(*backend, b, act, cache, scale);
        expect_close(aligned, cpu_attention(b, cache, scale), act, what);
        expect_same_bits(
            gpu_attention(*backend, b, act, cache, scale, false, Shape::kAuto, /*cache_offset=*/1),
            aligned, what + " misaligned caches");
      }
    }
  }
}

// The llama3-8b decode shape (32 query heads, 8 kv heads, head_dim 128, bf16, blocks of 16):
// 16 decode rows at 1024 keys (2 splits) and one at 4096 (8 splits), against the CPU, in both
// launch shapes bit for bit, and with misaligned caches.
TEST(CudaAttention, Llama3DecodeShape) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(8);
  const DType t = DType::kBF16;
  std::vector<Seq> seqs(16, Seq{1024, 1});
  seqs.push_back({4096, 1});
  const Batch b = make_batch(seqs, 32, 8, 128, 16, t, t, rng);
  const float scale = 1.0f / std::sqrt(128.0f);
  const std::vector<float> split =
      gpu_attention(*backend, b, t, t, scale, false, Shape::kSplitCtas);
  expect_close(split, cpu_attention(b, t, scale), t, "llama3-8b decode");
  expect_same_bits(gpu_attention(*backend, b, t, t, scale, false, Shape::kWalk), split,
                   "llama3-8b decode, walk vs split CTAs");
  expect_same_bits(gpu_attention(*backend, b, t, t, scale), split, "automatic shape");
  expect_same_bits(gpu_attention(*backend, b, t, t, scale, false, Shape::kWalk, 1), split,
                   "misaligned caches (element loads), walk vs split CTAs");
}

// ---- split-K: rows with more than 512 keys ----------------------------------------------------

// The split rule (a function of the row's length alone): one split up to 512 keys, then 2 to
// min(ceil(n / 512), 32) splits.
TEST(CudaAttentionSplits, SplitRule) {
  for (int n = 1; n <= 40000; ++n) {
    const int s = cuda::attention_num_splits(n);
    if (n <= 512) {
      ASSERT_EQ(s, 1) << n;
    } else {
      ASSERT_GE(s, 2) << n;
      ASSERT_LE(s, std::min(32, (n + 511) / 512)) << n;
    }
  }
  EXPECT_EQ(cuda::attention_num_splits(600), 2);
  EXPECT_EQ(cuda::attention_num_splits(1500), 3);
  EXPECT_EQ(cuda::attention_num_splits(4100), 9);
  EXPECT_EQ(cuda::attention_num_splits(16384), 32);
  EXPECT_EQ(cuda::attention_num_splits(1 << 30), 32);
  EXPECT_EQ(cuda::attention_num_splits(std::numeric_limits<int>::max()), 32);
}

// Long decodes (2, 3 and 9 splits), decodes just below / at / above the threshold, a prefill
// chunk whose rows cross it (contexts 491..530), a chunk that is long throughout, a short decode.
const std::vector<Seq> kLongBatch = {{600, 1}, {1500, 1}, {4100, 1}, {530, 40},
                                     {512, 1}, {513, 1},  {37, 1},   {2100, 64}};

// gqa ratio, block_size, activation dtype, cache dtype
using LongParam = std::tuple<int64_t, int64_t, DType, DType>;

class CudaAttentionLongTest : public ::testing::TestWithParam<LongParam> {};

// Both launch shapes against the CPU, against each other (bit for bit), and the automatic
// choice (split CTAs for this batch size) in place (out == q).
TEST_P(CudaAttentionLongTest, MatchesCpuInBothShapes) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  const auto [ratio, bs, act, cache] = GetParam();
  constexpr int64_t kKv = 2, kD = 128;
  std::mt19937 rng(static_cast<uint32_t>(7000 + ratio * 100 + bs));
  const Batch b = make_batch(kLongBatch, kKv * ratio, kKv, kD, bs, act, cache, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  const std::vector<float> want = cpu_attention(b, cache, scale);
  const std::vector<float> split =
      gpu_attention(*backend, b, act, cache, scale, false, Shape::kSplitCtas);
  const std::vector<float> walk =
      gpu_attention(*backend, b, act, cache, scale, false, Shape::kWalk);
  expect_close(split, want, act, "split CTAs");
  expect_close(walk, want, act, "one CTA walking the splits");
  expect_same_bits(walk, split, "walk vs split CTAs");
  expect_same_bits(gpu_attention(*backend, b, act, cache, scale), split, "automatic shape");
  expect_same_bits(gpu_attention(*backend, b, act, cache, scale, /*out_is_q=*/true), split,
                   "out == q");
}

std::string long_param_name(const ::testing::TestParamInfo<LongParam>& info) {
  const auto [ratio, bs, act, cache] = info.param;
  return "gqa" + std::to_string(ratio) + "_bs" + std::to_string(bs) + "_" + dtype_name(act) +
         "_cache" + dtype_name(cache);
}

INSTANTIATE_TEST_SUITE_P(Sweep, CudaAttentionLongTest,
                         ::testing::Combine(::testing::Values(1, 4, 8), ::testing::Values(16, 32),
                                            ::testing::Values(DType::kF32, DType::kBF16),
                                            ::testing::Values(DType::kF32, DType::kBF16)),
                         long_param_name);

// head_dim 256 (two dims per thread), an odd one and a tiny one, with long rows.
TEST(CudaAttentionLong, LargeAndOddHeadDims) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(31);
  const std::vector<Seq> seqs = {{1500, 1}, {530, 40}, {37, 1}};
  for (const int64_t D : {256, 80, 3}) {
    for (const DType t : {DType::kF32, DType::kBF16}) {
      const Batch b = make_batch(seqs, 4, 1, D, 16, t, t, rng);
      const float scale = 1.0f / std::sqrt(static_cast<float>(D));
      const std::string what = "head_dim " + std::to_string(D) + " " + dtype_name(t);
      const std::vector<float> split =
          gpu_attention(*backend, b, t, t, scale, false, Shape::kSplitCtas);
      expect_close(split, cpu_attention(b, t, scale), t, what);
      expect_same_bits(gpu_attention(*backend, b, t, t, scale, false, Shape::kWalk), split,
                       what + " walk vs split CTAs");
    }
  }
}

// A long decode row gives the same bits alone (split CTAs), in a small batch (split CTAs) and
// in a batch with a 1024-row prefill (whose partials would not fit the 32 MiB scratch, so the
// launch walks the splits in one CTA per (row, kv head)).
TEST(CudaAttentionLong, BatchInvariant) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(77);
  const DType t = DType::kBF16;
  constexpr int64_t kH = 8, kKv = 2, kD = 128, kBs = 16;
  const std::vector<Seq> large = {{300, 1}, {4100, 1}, {1024, 1024}, {700, 3}};
  const Batch full = make_batch(large, kH, kKv, kD, kBs, t, t, rng);
  // The partials of this batch: T * H * S_max * (D + 2) floats,
  // S_max = min(ceil(max_blocks * block_size / 512), 32) (kernels/cuda/README.md).
  const int64_t s_max = std::min<int64_t>((full.max_blocks * kBs + 511) / 512, 32);
  ASSERT_GT(full.T * kH * s_max * (kD + 2) * 4, int64_t{32} << 20) << "must take the walk";
  const std::vector<float> in_large = gpu_attention(*backend, full, t, t, 0.09f);

  const Batch alone = sequence_alone(full, 1);
  const std::vector<float> by_itself = gpu_attention(*backend, alone, t, t, 0.09f);
  expect_same_bits(by_itself, rows_of(full, in_large, 1), "alone vs in the large batch");
  expect_same_bits(gpu_attention(*backend, alone, t, t, 0.09f, false, Shape::kWalk), by_itself,
                   "alone, walk vs split CTAs");

  // A small batch: sequences 0, 1 and 3 (split CTAs).
  Batch small = full;
  small.seq_lens = {full.seq_lens[0], full.seq_lens[1], full.seq_lens[3]};
  small.query_start = {0, 1, 2, 5};
  small.T = 5;
  const int64_t width = kH * kD;
  small.q.clear();
  small.tables.clear();
  for (const size_t i : {size_t{0}, size_t{1}, size_t{3}}) {
    const std::vector<float> q = rows_of(full, full.q, i);
    small.q.insert(small.q.end(), q.begin(), q.end());
    small.tables.insert(small.tables.end(), full.tables.begin() + i * full.max_blocks,
                        full.tables.begin() + (i + 1) * full.max_blocks);
  }
  ASSERT_EQ(static_cast<int64_t>(small.q.size()), small.T * width);
  const std::vector<float> in_small = gpu_attention(*backend, small, t, t, 0.09f);
  expect_same_bits(std::vector<float>(in_small.begin() + width, in_small.begin() + 2 * width),
                   by_itself, "alone vs in the small batch");
  expect_same_bits(std::vector<float>(in_small.begin() + 2 * width, in_small.end()),
                   rows_of(full, in_large, 3), "the 700-key chunk, small vs large batch");
}

// A block id outside the cache in one split of a long row (and in a short row) makes those rows
// NaN (every head, in every slice of a group) in both shapes, without reading the bad block, and
// seq_len < q_len makes every row of that chunk NaN (also the later rows, whose positions would
// come out >= 0); the other rows are unaffected.
TEST(CudaAttentionLong, BadMetadataGivesNaNRows) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(5);
  const DType t = DType::kF32;
  const std::vector<Seq> seqs = {{4100, 1}, {300, 2}, {1500, 1}, {530, 40}};
  for (const auto& [H, KV] : std::vector<std::pair<int64_t, int64_t>>{{4, 2}, {24, 2}}) {
    const Batch good = make_batch(seqs, H, KV, 64, 16, t, t, rng);
    const std::vector<float> want = cpu_attention(good, t, 0.125f);
    Batch bad = good;
    bad.tables[0 * bad.max_blocks + 200] = static_cast<int32_t>(bad.num_blocks + 3);  // split 6
    bad.tables[1 * bad.max_blocks + 0] = -7;
    bad.seq_lens[3] = 30;  // < q_len 40
    for (const Shape shape : {Shape::kSplitCtas, Shape::kWalk}) {
      const std::string what =
          std::string(shape == Shape::kWalk ? "walk" : "split CTAs") + " H " + std::to_string(H);
      const std::vector<float> got = gpu_attention(*backend, bad, t, t, 0.125f, false, shape);
      for (const size_t i : {size_t{0}, size_t{1}, size_t{3}}) {
        for (const float v : rows_of(bad, got, i)) {
          ASSERT_TRUE(std::isnan(v)) << what << ": sequence " << i << " got " << v;
        }
      }
      expect_close(rows_of(bad, got, 2), rows_of(good, want, 2), t, what + ": sequence 2");
    }
  }
}

// Argument checks happen before any device work, so these run in CI too. The pointers are
// fake and never dereferenced.
class CudaAttentionArgsTest : public ::testing::Test {
 protected:
  static void* fake(uintptr_t p) { return reinterpret_cast<void*>(p); }
  static constexpr Device kCuda = Device::kCuda;
  // T = 6, H = 8, KV = 2, head_dim 64, 10 blocks of 16, B = 3, 4 blocks per sequence.
  AttentionArgs good() const {
    AttentionArgs a;
    a.q = TensorView(fake(0x100000), DType::kBF16, {6, 8, 64}, kCuda);
    a.k_cache = TensorView(fake(0x200000), DType::kBF16, {10, 16, 2, 64}, kCuda);
    a.v_cache = TensorView(fake(0x300000), DType::kBF16, {10, 16, 2, 64}, kCuda);
    a.block_tables = TensorView(fake(0x400000), DType::kI32, {3, 4}, kCuda);
    a.seq_lens = TensorView(fake(0x500000), DType::kI32, {3}, kCuda);
    a.query_start = TensorView(fake(0x600000), DType::kI32, {4}, kCuda);
    a.out = TensorView(fake(0x700000), DType::kBF16, {6, 8, 64}, kCuda);
    a.scale = 0.125f;
    return a;
  }

  template <typename Edit>
  void expect_invalid(Edit edit, const std::string& needle) {
    AttentionArgs a = good();
    edit(a);
    const Status s = cuda::attention_cuda(a, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << needle << ": " << s.to_string();
    EXPECT_NE(s.message().find("attention"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  }
};

TEST_F(CudaAttentionArgsTest, BadArgumentsAreInvalidArgument) {
  using A = AttentionArgs;
  expect_invalid([](A& a) { a.q.dtype = a.out.dtype = DType::kF16; }, "q");
  expect_invalid([](A& a) { a.out.dtype = DType::kF32; }, "out");
  expect_invalid([](A& a) { a.q.ndim = 2; }, "q");
  expect_invalid([](A& a) { a.k_cache.dtype = a.v_cache.dtype = DType::kI32; }, "k_cache");
  expect_invalid([](A& a) { a.v_cache.dtype = DType::kF32; }, "v_cache");
  expect_invalid([](A& a) { a.k_cache.ndim = 3; }, "k_cache");
  expect_invalid([](A& a) { a.v_cache.shape[1] = 32; }, "v_cache");
  expect_invalid([](A& a) { a.k_cache.shape[2] = a.v_cache.shape[2] = 3; }, "n_kv_heads");
  expect_invalid([](A& a) { a.k_cache.shape[3] = a.v_cache.shape[3] = 32; }, "head_dim");
  expect_invalid([](A& a) { a.k_cache.shape[1] = a.v_cache.shape[1] = 0; }, "block_size");
  expect_invalid([](A& a) { a.q.shape[2] = a.out.shape[2] = 512; }, "head_dim");
  expect_invalid([](A& a) { a.out.shape[0] = 5; }, "out");
  expect_invalid([](A& a) { a.block_tables.shape[0] = 2; }, "block_tables");
  expect_invalid([](A& a) { a.block_tables.dtype = DType::kF32; }, "block_tables");
  expect_invalid([](A& a) { a.seq_lens.dtype = DType::kBF16; }, "seq_lens");
  expect_invalid([](A& a) { a.query_start.shape[0] = 3; }, "query_start");
  expect_invalid([](A& a) { a.query_start.ndim = 2; }, "query_start");
  expect_invalid(
      [](A& a) {
        a.seq_lens.shape[0] = a.block_tables.shape[0] = 0;
        a.query_start.shape[0] = 1;
      },
      "B = 0");
  expect_invalid([](A& a) { a.scale = std::numeric_limits<float>::infinity(); }, "scale");
  expect_invalid([](A& a) { a.scale = std::numeric_limits<float>::quiet_NaN(); }, "scale");
  expect_invalid([](A& a) { a.seq_lens.device = Device::kCpu; }, "seq_lens");
  expect_invalid([](A& a) { a.out.device = Device::kCpu; }, "cuda device");
  expect_invalid([](A& a) { a.k_cache.data = nullptr; }, "null");
  expect_invalid([](A& a) { a.out.data = static_cast<char*>(a.q.data) + 2; }, "out");
  expect_invalid([](A& a) { a.out.data = static_cast<char*>(a.k_cache.data) + 64; }, "k_cache");
  expect_invalid([](A& a) { a.out.data = a.v_cache.data; }, "v_cache");
}

// Forced split CTAs whose partials would not fit the scratch fail before any device work (the
// fit is decided from the shapes alone).
TEST_F(CudaAttentionArgsTest, ForcedSplitCtasThatDoNotFitFailCleanly) {
  AttentionArgs a = good();
  constexpr int64_t kT = int64_t{1} << 20;  // 2^20 rows x 8 heads x 4 splits x 66 floats
  a.q = TensorView(fake(uintptr_t{1} << 36), DType::kBF16, {kT, 8, 64}, kCuda);
  a.out = TensorView(fake(uintptr_t{2} << 36), DType::kBF16, {kT, 8, 64}, kCuda);
  a.block_tables.shape[1] = 100;  // up to 1600 keys: 4 splits
  const Status s = cuda::attention_cuda_for_test(a, nullptr, /*split_ctas=*/true);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_NE(s.message().find("scratch"), std::string::npos) << s.message();
}

TEST_F(CudaAttentionArgsTest, EmptyBatchIsANoOpWithoutTouchingTheDevice) {
  AttentionArgs a = good();
  a.q.shape[0] = a.out.shape[0] = 0;
  EXPECT_TRUE(cuda::attention_cuda(a, nullptr).ok());
  a = good();
  a.q = a.out = TensorView(nullptr, DType::kF32, {0, 8, 64}, kCuda);
  EXPECT_TRUE(cuda::attention_cuda(a, nullptr).ok());
}

}  // namespace
}  // namespace pagoda
