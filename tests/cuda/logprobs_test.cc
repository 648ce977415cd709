// The CUDA logprobs op against its CPU twin on the same rows: random rows and, by row index,
// planted hazards (ties at different ids, NaN, one and several +inf, all -inf, all NaN, fewer
// finite values than K, signed zeros at the maximum, a wide spread whose exponentials
// underflow), vocabularies from 1 to Llama 3's 128256, K from 0 to 20; outputs poisoned first.
// Ids are compared exactly, logprobs within 1e-5 relative or 1e-6 absolute (the device sums the
// exponentials in another grouping), -inf exactly. Also: a token out of range gives NaN, the op
// and copy_on_device_async under graph capture, copy_on_device_async alone. Skips without a
// device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/launchers.h"
#include "tests/cuda/cuda_test_util.h"

namespace pagoda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int kKinds = 10;

const char* kind_name(int64_t row) {
  static const char* const kNames[kKinds] = {"random",       "ties",       "NaN",     "one +inf",
                                             "several +inf", "all -inf",   "all NaN", "few finite",
                                             "signed zeros", "wide spread"};
  return kNames[row % kKinds];
}

// [rows, vocab] row-major, row r of kind r % kKinds; tokens spread over each row's hazards.
void make_rows(std::mt19937& rng, int64_t rows, int64_t vocab, std::vector<float>& logits,
               std::vector<int32_t>& tokens) {
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  logits.assign(static_cast<size_t>(rows * vocab), 0.0f);
  tokens.assign(static_cast<size_t>(rows), 0);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = logits.data() + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) row[i] = dist(rng);
    int64_t token = pick(rng);
    switch (r % kKinds) {
      case 1:  // few distinct values: many ties, the id order decides
        for (int64_t i = 0; i < vocab; ++i) row[i] = std::round(row[i] * 2.0f) / 2.0f;
        row[pick(rng)] = 4.5f;
        row[pick(rng)] = 4.5f;
        break;
      case 2:  // NaN sprinkled, at 0 too
        for (int64_t i = 0; i < vocab; i += 3) row[i] = kNaN;
        row[0] = kNaN;
        token = 0;
        break;
      case 3: row[pick(rng)] = kInf; break;
      case 4:
        for (int j = 0; j < 3; ++j) row[pick(rng)] = kInf;
        row[pick(rng)] = kNaN;
        row[pick(rng)] = -kInf;
        break;
      case 5: std::fill(row, row + vocab, -kInf); break;
      case 6: std::fill(row, row + vocab, kNaN); break;
      case 7: {  // fewer finite values than K: -inf ids fill the top, by ascending id
        for (int64_t i = 0; i < vocab; ++i) row[i] = i % 2 ? -kInf : kNaN;
        for (int j = 0; j < 3; ++j) row[pick(rng)] = dist(rng);
        break;
      }
      case 8:  // -0 and +0 as the maximum, everything else negative
        for (int64_t i = 0; i < vocab; ++i) row[i] = -std::fabs(row[i]) - 0.5f;
        row[pick(rng)] = -0.0f;
        token = pick(rng);
        row[token] = 0.0f;
        break;
      case 9:  // exponentials underflow to 0 far below the maximum
        for (int64_t i = 0; i < vocab; ++i) row[i] *= 40.0f;
        break;
      default: break;
    }
    tokens[r] = static_cast<int32_t>(token);
  }
}

// Host results of the op.
struct Result {
  std::vector<float> token_logprobs;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
};

void expect_close(float got, float want, const std::string& where) {
  if (std::isinf(want) || std::isnan(want)) {
    EXPECT_TRUE(got == want || (std::isnan(got) && std::isnan(want)))
        << where << ": got " << got << ", want " << want;
    return;
  }
  const float tol = std::max(1e-6f, 1e-5f * std::fabs(want));
  EXPECT_NEAR(got, want, tol) << where;
}

template <typename T>
StatusOr<DeviceBuffer> upload_raw(Backend& gpu, const std::vector<T>& v) {
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer buf,
                          gpu.allocate(std::max<size_t>(1, v.size()) * sizeof(T)));
  if (!v.empty())
    PAGODA_RETURN_IF_ERROR(gpu.copy_from_host(buf.data(), v.data(), v.size() * sizeof(T)));
  return buf;
}

template <typename T>
std::vector<T> download_raw(Backend& gpu, const DeviceBuffer& buf, size_t n) {
  std::vector<T> v(n);
  if (n > 0) {
    const Status s = gpu.copy_to_host(v.data(), buf.data(), n * sizeof(T));
    EXPECT_TRUE(s.ok()) << s.to_string();
  }
  return v;
}

// The op on the CPU backend.
Result cpu_logprobs(Backend& cpu, std::vector<float>& logits, std::vector<int32_t>& tokens,
                    int64_t rows, int64_t vocab, int64_t K) {
  Result want;
  want.token_logprobs.assign(rows, -7.0f);
  want.top_ids.assign(rows * K, -7);
  want.top_logprobs.assign(rows * K, -7.0f);
  LogprobsArgs a;
  a.logits = TensorView(logits.data(), DType::kF32, {rows, vocab});
  a.tokens = TensorView(tokens.data(), DType::kI32, {rows});
  a.token_logprobs = TensorView(want.token_logprobs.data(), DType::kF32, {rows});
  a.top_ids = TensorView(want.top_ids.data(), DType::kI32, {rows, K});
  a.top_logprobs = TensorView(want.top_logprobs.data(), DType::kF32, {rows, K});
  const Status s = cpu.logprobs(a);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return want;
}

// Device buffers for one call, outputs poisoned (NaN floats, -7 ids).
struct DeviceCall {
  DeviceBuffer logits, tokens, token_logprobs, top_ids, top_logprobs;
  LogprobsArgs args;
};

template <typename T>
void upload_into(Backend& gpu, const std::vector<T>& v, DeviceBuffer& out) {
  StatusOr<DeviceBuffer> buf = upload_raw(gpu, v);
  ASSERT_TRUE(buf.ok()) << buf.status().to_string();
  out = std::move(buf).value();
}

void make_call(Backend& gpu, const std::vector<float>& logits, const std::vector<int32_t>& tokens,
               int64_t rows, int64_t vocab, int64_t K, DeviceCall& c) {
  ASSERT_NO_FATAL_FAILURE(upload_into(gpu, logits, c.logits));
  ASSERT_NO_FATAL_FAILURE(upload_into(gpu, tokens, c.tokens));
  ASSERT_NO_FATAL_FAILURE(upload_into(gpu, std::vector<float>(rows, kNaN), c.token_logprobs));
  ASSERT_NO_FATAL_FAILURE(upload_into(gpu, std::vector<int32_t>(rows * K, -7), c.top_ids));
  ASSERT_NO_FATAL_FAILURE(upload_into(gpu, std::vector<float>(rows * K, kNaN), c.top_logprobs));
  c.args.logits = TensorView(c.logits.data(), DType::kF32, {rows, vocab}, Device::kCuda);
  c.args.tokens = TensorView(c.tokens.data(), DType::kI32, {rows}, Device::kCuda);
  c.args.token_logprobs = TensorView(c.token_logprobs.data(), DType::kF32, {rows}, Device::kCuda);
  c.args.top_ids = TensorView(c.top_ids.data(), DType::kI32, {rows, K}, Device::kCuda);
  c.args.top_logprobs = TensorView(c.top_logprobs.data(), DType::kF32, {rows, K}, Device::kCuda);
}

Result download_call(Backend& gpu, const DeviceCall& c, int64_t rows, int64_t K) {
  Result got;
  got.token_logprobs = download_raw<float>(gpu, c.token_logprobs, rows);
  got.top_ids = download_raw<int32_t>(gpu, c.top_ids, rows * K);
  got.top_logprobs = download_raw<float>(gpu, c.top_logprobs, rows * K);
  return got;
}

void expect_same(const Result& got, const Result& want, int64_t rows, int64_t vocab, int64_t K,
                 bool check_tokens = true) {
  for (int64_t r = 0; r < rows; ++r) {
    const std::string where = "vocab " + std::to_string(vocab) + " K " + std::to_string(K) +
                              " row " + std::to_string(r) + " (" + kind_name(r) + ")";
    if (check_tokens) expect_close(got.token_logprobs[r], want.token_logprobs[r], where + " token");
    for (int64_t k = 0; k < K; ++k) {
      const size_t i = static_cast<size_t>(r * K + k);
      EXPECT_EQ(got.top_ids[i], want.top_ids[i]) << where << " top " << k;
      expect_close(got.top_logprobs[i], want.top_logprobs[i], where + " top " + std::to_string(k));
    }
  }
}

TEST(CudaLogprobs, MatchesTheCpuTwin) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(2);
  std::mt19937 rng(11);
  for (int64_t vocab : {1, 2, 31, 33, 257, 4097, 32000, 128256}) {
    for (int64_t rows : {1, 3, 17, 64}) {
      std::vector<float> logits;
      std::vector<int32_t> tokens;
      make_rows(rng, rows, vocab, logits, tokens);
      for (int64_t k : {0, 1, 5, 20}) {
        const int64_t K = std::min(k, vocab);
        const Result want = cpu_logprobs(*cpu, logits, tokens, rows, vocab, K);
        DeviceCall c;
        ASSERT_NO_FATAL_FAILURE(make_call(*gpu, logits, tokens, rows, vocab, K, c));
        const Status s = gpu->logprobs(c.args);
        ASSERT_TRUE(s.ok()) << s.to_string();
        expect_same(download_call(*gpu, c, rows, K), want, rows, vocab, K);
        if (::testing::Test::HasFailure()) return;  // one shape's failures are enough
      }
    }
  }
}

// The rows of a batch give what they give alone (batch invariance), and a token outside the
// row gives NaN without touching the rest.
TEST(CudaLogprobs, RowsAloneAndBadTokens) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  std::mt19937 rng(5);
  const int64_t rows = 12, vocab = 32000, K = 20;
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  make_rows(rng, rows, vocab, logits, tokens);
  DeviceCall all;
  ASSERT_NO_FATAL_FAILURE(make_call(*gpu, logits, tokens, rows, vocab, K, all));
  ASSERT_TRUE(gpu->logprobs(all.args).ok());
  const Result batch = download_call(*gpu, all, rows, K);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> one(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
    std::vector<int32_t> bad = {r % 2 ? -1 : static_cast<int32_t>(vocab)};
    DeviceCall c;
    ASSERT_NO_FATAL_FAILURE(make_call(*gpu, one, bad, 1, vocab, K, c));
    ASSERT_TRUE(gpu->logprobs(c.args).ok());
    const Result alone = download_call(*gpu, c, 1, K);
    EXPECT_TRUE(std::isnan(alone.token_logprobs[0])) << "row " << r;
    for (int64_t k = 0; k < K; ++k) {
      EXPECT_EQ(alone.top_ids[k], batch.top_ids[r * K + k]) << "row " << r << " top " << k;
      EXPECT_EQ(std::memcmp(&alone.top_logprobs[k], &batch.top_logprobs[r * K + k], 4), 0)
          << "row " << r << " top " << k;
    }
  }
}

// The op and a device-to-device copy of its outputs recorded in a graph, then replayed on new
// logits: the copies hold the new results.
TEST(CudaLogprobs, CapturedWithCopyOnDevice) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(2);
  std::mt19937 rng(9);
  const int64_t rows = 4, vocab = 4097, K = 5;
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  make_rows(rng, rows, vocab, logits, tokens);
  DeviceCall c;
  ASSERT_NO_FATAL_FAILURE(make_call(*gpu, logits, tokens, rows, vocab, K, c));
  auto ids_copy = gpu->allocate(rows * K * sizeof(int32_t));
  auto lps_copy = gpu->allocate(rows * K * sizeof(float));
  ASSERT_TRUE(ids_copy.ok() && lps_copy.ok());
  ASSERT_TRUE(gpu->logprobs(c.args).ok());  // an uncaptured run first, as the engine does
  ASSERT_TRUE(gpu->begin_capture().ok());
  Status s = gpu->logprobs(c.args);
  if (s.ok()) s = gpu->copy_on_device_async(ids_copy->data(), c.top_ids.data(), ids_copy->size());
  if (s.ok())
    s = gpu->copy_on_device_async(lps_copy->data(), c.top_logprobs.data(), lps_copy->size());
  const Status ended = gpu->end_capture(1);
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_TRUE(ended.ok()) << ended.to_string();

  make_rows(rng, rows, vocab, logits, tokens);  // new rows, same pointers
  ASSERT_TRUE(gpu->copy_from_host(c.logits.data(), logits.data(), logits.size() * 4).ok());
  ASSERT_TRUE(gpu->copy_from_host(c.tokens.data(), tokens.data(), tokens.size() * 4).ok());
  ASSERT_TRUE(gpu->replay_graph(1).ok());
  ASSERT_TRUE(gpu->synchronize().ok());
  Result got = download_call(*gpu, c, rows, K);
  got.top_ids = download_raw<int32_t>(*gpu, *ids_copy, rows * K);
  got.top_logprobs = download_raw<float>(*gpu, *lps_copy, rows * K);
  expect_same(got, cpu_logprobs(*cpu, logits, tokens, rows, vocab, K), rows, vocab, K);
}

TEST(CudaCopyOnDevice, CopiesBetweenBuffers) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  std::vector<int32_t> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int32_t>(i * 7 + 3);
  auto src = upload_raw(*gpu, values);
  auto dst = upload_raw(*gpu, std::vector<int32_t>(values.size(), -1));
  ASSERT_TRUE(src.ok() && dst.ok());
  // The middle 500 values, to an offset.
  Status s = gpu->copy_on_device_async(static_cast<int32_t*>(dst->data()) + 10,
                                       static_cast<const int32_t*>(src->data()) + 100,
                                       500 * sizeof(int32_t));
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_TRUE(gpu->copy_on_device_async(dst->data(), src->data(), 0).ok());
  ASSERT_TRUE(gpu->copy_on_device_async(nullptr, nullptr, 0).ok());
  const std::vector<int32_t> got = download_raw<int32_t>(*gpu, *dst, values.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const int32_t want = i >= 10 && i < 510 ? values[i + 90] : -1;
    ASSERT_EQ(got[i], want) << i;
  }
  EXPECT_EQ(gpu->copy_on_device_async(nullptr, src->data(), 4).code(),
            StatusCode::kInvalidArgument);
}

// The launcher checks run without a device (fake device pointers are never dereferenced).
TEST(CudaLogprobsArgs, RejectsBadArguments) {
  auto fake = [](uintptr_t p) { return reinterpret_cast<void*>(p); };
  LogprobsArgs good;
  good.logits = TensorView(fake(0x100000), DType::kF32, {3, 100}, Device::kCuda);
  good.tokens = TensorView(fake(0x200000), DType::kI32, {3}, Device::kCuda);
  good.token_logprobs = TensorView(fake(0x300000), DType::kF32, {3}, Device::kCuda);
  good.top_ids = TensorView(fake(0x400000), DType::kI32, {3, 5}, Device::kCuda);
  good.top_logprobs = TensorView(fake(0x500000), DType::kF32, {3, 5}, Device::kCuda);
  auto expect_invalid = [](const LogprobsArgs& a, const std::string& needle) {
    const Status s = cuda::logprobs_cuda(a, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_EQ(s.message().rfind("logprobs: ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  LogprobsArgs a = good;
  a.logits.dtype = DType::kBF16;
  expect_invalid(a, "logits must be f32");
  a = good;
  a.top_ids.dtype = DType::kF32;
  expect_invalid(a, "top_ids must be i32");
  a = good;
  a.tokens.ndim = 2;
  a.tokens.shape[1] = 1;
  expect_invalid(a, "tokens must have 1 dims");
  a = good;
  a.token_logprobs.shape[0] = 4;
  expect_invalid(a, "token_logprobs dim 0 must be R");
  a = good;
  a.top_logprobs.shape[1] = 6;
  expect_invalid(a, "top_logprobs dim 1 must be K");
  a = good;
  a.top_ids = TensorView(fake(0x400000), DType::kI32, {3, 21}, Device::kCuda);
  a.top_logprobs = TensorView(fake(0x500000), DType::kF32, {3, 21}, Device::kCuda);
  expect_invalid(a, "K) must be at most min(vocab, 20) = 20");
  a.logits.shape[1] = 4;
  a.top_ids.shape[1] = a.top_logprobs.shape[1] = 5;
  expect_invalid(a, "K) must be at most min(vocab, 20) = 4");
  a = good;
  a.logits.shape[1] = 0;
  a.top_ids.shape[1] = a.top_logprobs.shape[1] = 0;
  expect_invalid(a, "length 0");
  a = good;
  a.top_logprobs.device = Device::kCpu;
  expect_invalid(a, "top_logprobs must be on the cuda device");
  a = good;
  a.tokens.data = nullptr;
  expect_invalid(a, "tokens has no data");
  a = good;
  a.top_ids.data = fake(0x100000 + 64);
  expect_invalid(a, "top_ids must not overlap logits");
  a = good;
  a.top_logprobs.data = fake(0x400000 + 16);
  expect_invalid(a, "top_ids must not overlap top_logprobs");

  // Nothing to do: no rows (no launch, so no device needed), and K == 0 with empty tops.
  a = good;
  a.logits.shape[0] = a.tokens.shape[0] = a.token_logprobs.shape[0] = 0;
  a.top_ids.shape[0] = a.top_logprobs.shape[0] = 0;
  a.logits.shape[1] = 0;
  a.top_ids.shape[1] = a.top_logprobs.shape[1] = 0;
  const Status s = cuda::logprobs_cuda(a, nullptr);
  EXPECT_TRUE(s.ok()) << s.to_string();
}

}  // namespace
}  // namespace pagoda
