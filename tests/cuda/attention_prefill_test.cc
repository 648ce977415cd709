// The tensor-core prefill path of CUDA attention (kernels/cuda/attention_prefill.cu), forced on
// through cuda::attention_cuda_tc_for_test, against the CPU twin and against the CUDA-core
// kernel alone (cuda::attention_cuda_for_test):
// - ragged batches mixing decode rows, short chunks (old path) and chunks of 16..300 rows with
//   0..1500 earlier tokens; GQA 1/4/8 (and 3, 5, 12, 64: windows that do not hold whole GQA
//   groups of 64 tile rows); head_dim 64 and 128; block sizes 16 and 32 (and 1, 7) with
//   shuffled block tables; cache slots outside every context NaN, outputs poisoned;
// - rows of sequences below the threshold are bit-identical to the CUDA-core kernel's (they
//   take it), rows at or above it are not (the path ran), all are within bf16 tolerance of the
//   CPU; thresholds 1 (decode rows too: many one-row runs per window), 16 and 64;
// - out == q (the same bits), a sequence alone vs in the batch (the same bits: the path is
//   batch-invariant within itself), NaN rows for bad metadata, ineligible arguments (f32, f16
//   cache, head_dim 80, misaligned caches) falling back to the CUDA-core kernel bit for bit;
// - the llama3-8b prefill shape (2048-token prompt; a 512-token chunk after 2048), with timings
//   of both paths printed (not asserted);
// - without a device: the eligibility rule, the hook's argument checks, off by default.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

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

constexpr DType kBf16 = DType::kBF16;
constexpr int kMin = cuda::kAttentionTcMinQLen;

// Decode rows, chunks below the threshold (15, 3 rows: the CUDA-core kernel), chunks at and
// above it with and without earlier context (16 and 300 rows from position 0; 40 and 300 rows
// after 1500 tokens; 64 after 65; 17 after 1000) and a sequence with nothing this step.
const std::vector<Seq> kPrefillBatch = {{1, 1},    {300, 300}, {1540, 40}, {37, 1},
                                        {16, 16},  {915, 15},  {50, 0},    {1800, 300},
                                        {129, 64}, {700, 3},   {1017, 17}};

// A batch on the device and the arguments over it.
struct DeviceBatch {
  DeviceTensor q, k, v, tables, seq_lens, qs, out;
  AttentionArgs args;
};

// out_is_q: out is q itself; cache_offset: the caches start that many elements into their
// allocations (1: not 16-byte aligned, so not eligible).
DeviceBatch upload_batch(Backend& backend, const Batch& b, float scale, DType act = kBf16,
                         DType cache = kBf16, bool out_is_q = false, size_t cache_offset = 0) {
  const int64_t B = static_cast<int64_t>(b.seq_lens.size());
  DeviceBatch d;
  d.q = upload(backend, b.q, act, {b.T, b.H, b.D});
  d.k = upload(backend, b.k_cache, cache, {b.num_blocks, b.block_size, b.KV, b.D}, cache_offset);
  d.v = upload(backend, b.v_cache, cache, {b.num_blocks, b.block_size, b.KV, b.D}, cache_offset);
  d.tables = upload(backend, as_float(b.tables), DType::kI32, {B, b.max_blocks});
  d.seq_lens = upload(backend, as_float(b.seq_lens), DType::kI32, {B});
  d.qs = upload(backend, as_float(b.query_start), DType::kI32, {B + 1});
  d.out = upload(backend, b.q, act, {b.T, b.H, b.D});
  if (!out_is_q) poison(backend, d.out.view);
  d.args = AttentionArgs{d.q.view,
                         d.k.view,
                         d.v.view,
                         d.tables.view,
                         d.seq_lens.view,
                         d.qs.view,
                         out_is_q ? d.q.view : d.out.view,
                         scale};
  return d;
}

// tc_min_q_len > 0: the tensor-core path forced on at that threshold; 0: the CUDA-core kernel
// alone (one CTA walking each long row: the same bits as its other launch shape).
Status launch(const AttentionArgs& a, int tc_min_q_len) {
  return tc_min_q_len > 0 ? cuda::attention_cuda_tc_for_test(a, nullptr, tc_min_q_len)
                          : cuda::attention_cuda_for_test(a, nullptr, /*split_ctas=*/false);
}

std::vector<float> gpu_run(Backend& backend, const Batch& b, float scale, int tc_min_q_len,
                           bool out_is_q = false, DType act = kBf16, DType cache = kBf16,
                           size_t cache_offset = 0) {
  DeviceBatch d = upload_batch(backend, b, scale, act, cache, out_is_q, cache_offset);
  const Status s = launch(d.args, tc_min_q_len);
  EXPECT_TRUE(s.ok()) << s.to_string();
  const Status sync = PAGODA_CUDA_STATUS(cudaDeviceSynchronize());
  EXPECT_TRUE(sync.ok()) << sync.to_string();
  return download(backend, d.args.out);
}

int32_t q_len_of(const Batch& b, size_t i) {
  return b.query_start[i + 1] - b.query_start[i];
}

// The elements of got whose bits differ from want's.
int64_t count_different_bits(const std::vector<float>& got, const std::vector<float>& want) {
  int64_t n = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    uint32_t g = 0, w = 0;
    std::memcpy(&g, &got[i], sizeof(g));
    std::memcpy(&w, &want[i], sizeof(w));
    n += g != w;
  }
  return n;
}

// tc (the path forced on at min_q_len) against the CPU (bf16 tolerance) and against plain (the
// CUDA-core kernel alone): the rows of sequences with q_len < min_q_len are plain's bits; the
// rows of the others are not all plain's bits (the path ran: it rounds P to bf16 and sums in
// another order).
void check_tc_result(const Batch& b, const std::vector<float>& tc, const std::vector<float>& plain,
                     const std::vector<float>& cpu, int min_q_len, const std::string& what) {
  expect_close(tc, cpu, kBf16, what + " vs cpu");
  int64_t tc_rows = 0, different = 0;
  for (size_t i = 0; i < b.seq_lens.size(); ++i) {
    const int32_t q_len = q_len_of(b, i);
    if (q_len == 0) continue;
    if (q_len < min_q_len) {
      expect_same_bits(rows_of(b, tc, i), rows_of(b, plain, i),
                       what + ": sequence " + std::to_string(i) + " (old path)");
    } else {
      tc_rows += q_len;
      different += count_different_bits(rows_of(b, tc, i), rows_of(b, plain, i));
    }
  }
  if (tc_rows > 0) {
    EXPECT_GT(different, 0) << what << ": " << tc_rows
                            << " rows should have taken the tensor-core path, but every bit "
                               "matches the CUDA-core kernel";
  }
}

// gqa ratio, head_dim, block_size
using Param = std::tuple<int64_t, int64_t, int64_t>;

class CudaAttentionPrefillTest : public ::testing::TestWithParam<Param> {};

TEST_P(CudaAttentionPrefillTest, MatchesCpuAndOldPathBelowThreshold) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  const auto [ratio, D, bs] = GetParam();
  constexpr int64_t kKv = 2;
  std::mt19937 rng(static_cast<uint32_t>(500 + ratio * 1000 + D * 10 + bs));
  const Batch b = make_batch(kPrefillBatch, kKv * ratio, kKv, D, bs, kBf16, kBf16, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const std::string what =
      "gqa " + std::to_string(ratio) + " hd " + std::to_string(D) + " bs " + std::to_string(bs);
  const std::vector<float> cpu = cpu_attention(b, kBf16, scale);
  const std::vector<float> plain = gpu_run(*backend, b, scale, 0);
  expect_close(plain, cpu, kBf16, what + " CUDA-core kernel");
  const std::vector<float> tc = gpu_run(*backend, b, scale, kMin);
  check_tc_result(b, tc, plain, cpu, kMin, what);
  expect_same_bits(gpu_run(*backend, b, scale, kMin, /*out_is_q=*/true), tc, what + " out == q");
  check_tc_result(b, gpu_run(*backend, b, scale, 64), plain, cpu, 64, what + " threshold 64");
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto [ratio, D, bs] = info.param;
  return "gqa" + std::to_string(ratio) + "_hd" + std::to_string(D) + "_bs" + std::to_string(bs);
}

INSTANTIATE_TEST_SUITE_P(Sweep, CudaAttentionPrefillTest,
                         ::testing::Combine(::testing::Values(1, 4, 8), ::testing::Values(64, 128),
                                            ::testing::Values(16, 32)),
                         param_name);

// Threshold 1: every row takes the path, decode rows included, so a window holds up to R runs
// of one row (here many decodes side by side), against the CPU, and in place.
TEST(CudaAttentionPrefill, ThresholdOneTakesDecodeRowsToo) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(61);
  std::vector<Seq> seqs = kPrefillBatch;
  for (int i = 0; i < 40; ++i) seqs.push_back({1 + 37 * i, 1});  // 40 decodes in a row
  seqs.push_back({90, 2});
  for (const auto& [H, KV, D] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{8, 2, 128}, {2, 2, 64}, {16, 2, 64}}) {
    const Batch b = make_batch(seqs, H, KV, D, 16, kBf16, kBf16, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const std::string what = "threshold 1, H " + std::to_string(H) + " hd " + std::to_string(D);
    const std::vector<float> tc = gpu_run(*backend, b, scale, 1);
    check_tc_result(b, tc, gpu_run(*backend, b, scale, 0), cpu_attention(b, kBf16, scale), 1, what);
    expect_same_bits(gpu_run(*backend, b, scale, 1, /*out_is_q=*/true), tc, what + " out == q");
  }
}

// GQA ratios whose groups do not tile 64 rows evenly (3: 21 rows x 3 heads per window, 5, 12)
// or fill it with one row (64), GQA 1 with 2 heads, and block sizes 1 and 7 (keys of a tile
// spread over 64 or 10 blocks).
TEST(CudaAttentionPrefill, OddGroupsAndBlockSizes) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(71);
  const std::vector<Seq> seqs = {{340, 40}, {37, 1}, {200, 20}, {916, 16}, {5, 3}, {130, 130}};
  for (const auto& [H, KV] :
       std::vector<std::pair<int64_t, int64_t>>{{6, 2}, {10, 2}, {12, 1}, {64, 1}, {2, 2}}) {
    for (const int64_t bs : {1, 7, 16}) {
      for (const int64_t D : {64, 128}) {
        const Batch b = make_batch(seqs, H, KV, D, bs, kBf16, kBf16, rng);
        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        const std::string what = "H " + std::to_string(H) + " KV " + std::to_string(KV) + " bs " +
                                 std::to_string(bs) + " hd " + std::to_string(D);
        check_tc_result(b, gpu_run(*backend, b, scale, kMin), gpu_run(*backend, b, scale, 0),
                        cpu_attention(b, kBf16, scale), kMin, what);
      }
    }
  }
}

// A sequence's rows have the same bits alone as in the batch (other rows, other window
// alignment, other runs): the path is batch-invariant within itself.
TEST(CudaAttentionPrefill, SequenceAloneIsBitIdentical) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(81);
  for (const auto& [H, KV] : std::vector<std::pair<int64_t, int64_t>>{{8, 2}, {6, 2}, {4, 4}}) {
    const Batch full = make_batch(kPrefillBatch, H, KV, 128, 16, kBf16, kBf16, rng);
    const float scale = 0.088f;
    const std::vector<float> batched = gpu_run(*backend, full, scale, kMin);
    for (size_t i = 0; i < kPrefillBatch.size(); ++i) {
      if (q_len_of(full, i) < kMin) continue;
      expect_same_bits(gpu_run(*backend, sequence_alone(full, i), scale, kMin),
                       rows_of(full, batched, i),
                       "H " + std::to_string(H) + " sequence " + std::to_string(i) + " alone");
    }
  }
}

// Bad metadata of a long sequence is never dereferenced: a block id outside the cache makes the
// rows that read it NaN (all heads), seq_len < q_len makes all of the sequence's rows NaN; the
// other sequences are unaffected.
TEST(CudaAttentionPrefill, BadMetadataGivesNaNRows) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(91);
  const std::vector<Seq> seqs = {{300, 40}, {500, 100}, {37, 1}, {200, 20}, {64, 64}};
  const Batch good = make_batch(seqs, 8, 2, 64, 16, kBf16, kBf16, rng);
  const std::vector<float> want = cpu_attention(good, kBf16, 0.125f);
  Batch bad = good;
  bad.tables[1 * bad.max_blocks + 3] = static_cast<int32_t>(bad.num_blocks + 11);  // keys 48..63
  bad.seq_lens[3] = 10;                                                            // < q_len 20
  bad.tables[4 * bad.max_blocks + 3] = -2;  // the last block of a 64-row prompt: keys 48..63
  const std::vector<float> got = gpu_run(*backend, bad, 0.125f, kMin);
  for (const size_t i : {size_t{1}, size_t{3}}) {
    for (const float v : rows_of(bad, got, i)) {
      ASSERT_TRUE(std::isnan(v)) << "sequence " << i << " got " << v;
    }
  }
  // Sequence 4: rows at positions >= 48 read the bad block and are NaN; the earlier rows are
  // NaN too where they share a run with those (a window of 64 / 4 = 16 rows), else correct.
  const std::vector<float> rows4 = rows_of(bad, got, 4), want4 = rows_of(good, want, 4);
  const int64_t width = bad.H * bad.D;
  for (int64_t r = 0; r < 64; ++r) {
    const std::vector<float> row(rows4.begin() + r * width, rows4.begin() + (r + 1) * width);
    if (r >= 48) {
      for (const float v : row) ASSERT_TRUE(std::isnan(v)) << "sequence 4 row " << r;
    } else if (!std::isnan(row[0])) {
      expect_close(row,
                   std::vector<float>(want4.begin() + r * width, want4.begin() + (r + 1) * width),
                   kBf16, "sequence 4 row " + std::to_string(r));
    }
  }
  for (const size_t i : {size_t{0}, size_t{2}}) {
    expect_close(rows_of(bad, got, i), rows_of(good, want, i), kBf16,
                 "sequence " + std::to_string(i));
  }
}

// Arguments the path does not take leave the whole batch to the CUDA-core kernel: the same bits
// with the path forced on as without.
TEST(CudaAttentionPrefill, IneligibleArgumentsFallBack) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(101);
  const std::vector<Seq> seqs = {{340, 40}, {37, 1}, {200, 20}};
  struct Case {
    DType act, cache;
    int64_t D;
    size_t cache_offset;
    const char* what;
  };
  for (const Case& c :
       {Case{DType::kF32, DType::kBF16, 128, 0, "f32 activations"},
        Case{kBf16, DType::kF16, 128, 0, "f16 cache"}, Case{kBf16, DType::kF32, 64, 0, "f32 cache"},
        Case{kBf16, kBf16, 80, 0, "head_dim 80"},
        Case{kBf16, kBf16, 128, 1, "misaligned caches"}}) {
    const Batch b = make_batch(seqs, 8, 2, c.D, 16, c.act, c.cache, rng);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
    expect_same_bits(gpu_run(*backend, b, scale, kMin, false, c.act, c.cache, c.cache_offset),
                     gpu_run(*backend, b, scale, 0, false, c.act, c.cache, c.cache_offset), c.what);
  }
}

// Milliseconds per launch of `tc_min_q_len`'s path on d (after one warm-up launch).
double time_ms(const DeviceBatch& d, int tc_min_q_len, int reps) {
  EXPECT_TRUE(launch(d.args, tc_min_q_len).ok());
  cudaEvent_t start = nullptr, stop = nullptr;
  EXPECT_EQ(cudaEventCreate(&start), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&stop), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(start, nullptr), cudaSuccess);
  for (int i = 0; i < reps; ++i) EXPECT_TRUE(launch(d.args, tc_min_q_len).ok());
  EXPECT_EQ(cudaEventRecord(stop, nullptr), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess);
  float ms = 0.0f;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / reps;
}

// The llama3-8b prefill shapes (32 query heads, 8 kv heads, head_dim 128, blocks of 16): a
// 2048-token prompt and a 512-token chunk after 2048 earlier tokens. The path against the
// CUDA-core kernel (bf16 tolerance; that kernel is checked against the CPU elsewhere) and the
// CPU on a few rows of the chunk; both timed (printed, not asserted).
TEST(CudaAttentionPrefill, Llama3PrefillShapes) {
  PAGODA_CUDA_BACKEND_OR_SKIP(backend);
  std::mt19937 rng(111);
  const float scale = 1.0f / std::sqrt(128.0f);
  for (const Seq& s : {Seq{2048, 2048}, Seq{2560, 512}}) {
    const Batch b = make_batch({s}, 32, 8, 128, 16, kBf16, kBf16, rng);
    const std::string what =
        "llama3-8b seq_len " + std::to_string(s.seq_len) + " q_len " + std::to_string(s.q_len);
    DeviceBatch d = upload_batch(*backend, b, scale);
    ASSERT_TRUE(launch(d.args, 0).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> plain = download(*backend, d.args.out);
    poison(*backend, d.args.out);
    ASSERT_TRUE(launch(d.args, kMin).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> tc = download(*backend, d.args.out);
    expect_close(tc, plain, kBf16, what + " vs the CUDA-core kernel");
    EXPECT_GT(count_different_bits(tc, plain), 0) << what << ": the path did not run";
    // Causal FLOPs: 4 * head_dim per (row, head, key).
    double keys = 0;
    for (int64_t r = 0; r < s.q_len; ++r) keys += s.seq_len - s.q_len + r + 1;
    const double flops = 4.0 * 128 * 32 * keys;
    const double ms_plain = time_ms(d, 0, 5), ms_tc = time_ms(d, kMin, 20);
    std::printf(
        "[ timing ] %s: CUDA-core %.3f ms (%.1f TFLOP/s), tensor cores %.3f ms "
        "(%.1f TFLOP/s), %.1fx\n",
        what.c_str(), ms_plain, flops / ms_plain * 1e-9, ms_tc, flops / ms_tc * 1e-9,
        ms_plain / ms_tc);
  }
}

// ---- without a device -----------------------------------------------------------------------

class CudaAttentionPrefillArgsTest : public ::testing::Test {
 protected:
  static void* fake(uintptr_t p) { return reinterpret_cast<void*>(p); }
  static constexpr Device kCuda = Device::kCuda;
  // T = 6, H = 8, KV = 2, head_dim 64, 10 blocks of 16, B = 3, 4 blocks per sequence; bf16.
  AttentionArgs good() const {
    AttentionArgs a;
    a.q = TensorView(fake(0x100000), kBf16, {6, 8, 64}, kCuda);
    a.k_cache = TensorView(fake(0x200000), kBf16, {10, 16, 2, 64}, kCuda);
    a.v_cache = TensorView(fake(0x300000), kBf16, {10, 16, 2, 64}, kCuda);
    a.block_tables = TensorView(fake(0x400000), DType::kI32, {3, 4}, kCuda);
    a.seq_lens = TensorView(fake(0x500000), DType::kI32, {3}, kCuda);
    a.query_start = TensorView(fake(0x600000), DType::kI32, {4}, kCuda);
    a.out = TensorView(fake(0x700000), kBf16, {6, 8, 64}, kCuda);
    a.scale = 0.125f;
    return a;
  }
  // head_dim D and n_heads H / n_kv_heads KV on good()'s layout.
  AttentionArgs shaped(int64_t D, int64_t H, int64_t KV) const {
    AttentionArgs a = good();
    a.q.shape[1] = a.out.shape[1] = H;
    a.q.shape[2] = a.out.shape[2] = D;
    a.k_cache.shape[2] = a.v_cache.shape[2] = KV;
    a.k_cache.shape[3] = a.v_cache.shape[3] = D;
    return a;
  }
};

TEST_F(CudaAttentionPrefillArgsTest, Eligibility) {
  EXPECT_TRUE(cuda::attention_tc_eligible(good()));
  EXPECT_TRUE(cuda::attention_tc_eligible(shaped(128, 32, 8)));  // llama3-8b
  EXPECT_TRUE(cuda::attention_tc_eligible(shaped(128, 6, 2)));   // GQA 3
  EXPECT_TRUE(cuda::attention_tc_eligible(shaped(64, 64, 1)));   // GQA 64
  EXPECT_TRUE(cuda::attention_tc_eligible(shaped(64, 4, 4)));    // GQA 1
  EXPECT_FALSE(cuda::attention_tc_eligible(shaped(64, 128, 1))) << "GQA 128";
  for (const int64_t D : {8, 32, 80, 96, 256}) {
    EXPECT_FALSE(cuda::attention_tc_eligible(shaped(D, 8, 2))) << "head_dim " << D;
  }
  AttentionArgs a = good();
  a.q.dtype = a.out.dtype = DType::kF32;
  EXPECT_FALSE(cuda::attention_tc_eligible(a)) << "f32 activations";
  for (const DType cache : {DType::kF32, DType::kF16}) {
    a = good();
    a.k_cache.dtype = a.v_cache.dtype = cache;
    EXPECT_FALSE(cuda::attention_tc_eligible(a)) << dtype_name(cache) << " cache";
  }
  a = good();
  a.k_cache.data = fake(0x200002);
  EXPECT_FALSE(cuda::attention_tc_eligible(a)) << "misaligned k_cache";
  a = good();
  a.v_cache.data = fake(0x300008);
  EXPECT_FALSE(cuda::attention_tc_eligible(a)) << "misaligned v_cache";
  a = good();
  a.q.data = a.out.data = fake(0x100004);
  EXPECT_FALSE(cuda::attention_tc_eligible(a)) << "misaligned q (out == q)";
  a = good();
  a.out.data = fake(0x700002);
  EXPECT_FALSE(cuda::attention_tc_eligible(a)) << "misaligned out";
}

// The hook checks its arguments before any device work (fake pointers, never dereferenced).
TEST_F(CudaAttentionPrefillArgsTest, HookChecksArgumentsFirst) {
  for (const int bad_min : {0, -3}) {
    const Status s = cuda::attention_cuda_tc_for_test(good(), nullptr, bad_min);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find("min_q_len"), std::string::npos) << s.message();
    const Status direct = cuda::attention_prefill_cuda(good(), nullptr, bad_min);
    EXPECT_EQ(direct.code(), StatusCode::kInvalidArgument) << direct.to_string();
  }
  AttentionArgs a = good();
  a.out.dtype = DType::kF32;
  Status s = cuda::attention_cuda_tc_for_test(a, nullptr, kMin);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("attention: out"), std::string::npos) << s.message();
  a = good();
  a.k_cache.dtype = a.v_cache.dtype = DType::kF16;
  s = cuda::attention_prefill_cuda(a, nullptr, kMin);  // not eligible: refused, nothing launched
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  a = good();
  a.q.shape[0] = a.out.shape[0] = 0;
  EXPECT_TRUE(cuda::attention_cuda_tc_for_test(a, nullptr, kMin).ok());
  EXPECT_TRUE(cuda::attention_prefill_cuda(a, nullptr, kMin).ok());
}

// Off unless PAGODA_CUDA_TC_PREFILL=1.
TEST(CudaAttentionPrefillConfig, OffByDefault) {
  const char* env = std::getenv("PAGODA_CUDA_TC_PREFILL");
  const bool on = env != nullptr && std::string(env) == "1";
  EXPECT_EQ(cuda::attention_tc_min_q_len(), on ? kMin : 0);
  EXPECT_EQ(kMin, 16);
}

}  // namespace
}  // namespace pagoda
