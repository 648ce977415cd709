// The CUDA sample op against its CPU twin on the same rows (tests/kernels/sample_rows.h: every
// step of the rule, ties, NaN / +-inf, penalties, extreme temperatures), vocabularies from 1 to
// Llama 3's 128256: the same token for every row. The two sum masses in double grouped
// differently, which could change a draw only when the target falls within rounding of a
// boundary: the test allows no mismatch, so such a case would show here first.
// Skips without a device; the argument checks run everywhere.
#include <gtest/gtest.h>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/launchers.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/kernels/sample_rows.h"

namespace pagoda {
namespace {

template <typename T>
StatusOr<DeviceBuffer> upload_raw(Backend& gpu, const std::vector<T>& v) {
  PAGODA_ASSIGN_OR_RETURN(DeviceBuffer buf,
                          gpu.allocate(std::max<size_t>(1, v.size()) * sizeof(T)));
  if (!v.empty())
    PAGODA_RETURN_IF_ERROR(gpu.copy_from_host(buf.data(), v.data(), v.size() * sizeof(T)));
  return buf;
}

TEST(CudaSample, MatchesTheCpuTwin) {
  PAGODA_CUDA_BACKEND_OR_SKIP(gpu);
  auto cpu = make_cpu_backend(2);
  for (int64_t vocab : {1, 2, 7, 33, 513, 4096, 32000, 128256}) {
    const int64_t rows = vocab >= 32000 ? 2 * testing_sample::kKinds : 4 * testing_sample::kKinds;
    testing_sample::Batch b =
        testing_sample::make_batch(rows, vocab, static_cast<uint32_t>(vocab) * 7 + 1);
    const auto P = static_cast<int64_t>(b.penalty_ids.size());

    std::vector<int32_t> want(static_cast<size_t>(rows), -1);
    SampleArgs host;
    host.logits = TensorView(b.logits.data(), DType::kF32, {rows, vocab});
    host.params = TensorView(b.params.data(), DType::kI32, {rows, kSampleRowWords});
    host.penalty_start = TensorView(b.penalty_start.data(), DType::kI32, {rows + 1});
    host.penalty_ids = TensorView(b.penalty_ids.data(), DType::kI32, {P});
    host.penalty_counts = TensorView(b.penalty_counts.data(), DType::kI32, {P});
    host.out = TensorView(want.data(), DType::kI32, {rows});
    ASSERT_TRUE(cpu->sample(host).ok());

    auto logits = upload_raw(*gpu, b.logits);
    auto params = upload_raw(*gpu, b.params);
    auto start = upload_raw(*gpu, b.penalty_start);
    auto ids = upload_raw(*gpu, b.penalty_ids);
    auto counts = upload_raw(*gpu, b.penalty_counts);
    std::vector<int32_t> got(static_cast<size_t>(rows), -7);  // poison
    auto out = upload_raw(*gpu, got);
    for (auto* s : {&logits, &params, &start, &ids, &counts, &out}) ASSERT_TRUE(s->ok());
    SampleArgs dev;
    dev.logits = TensorView(logits->data(), DType::kF32, {rows, vocab}, Device::kCuda);
    dev.params = TensorView(params->data(), DType::kI32, {rows, kSampleRowWords}, Device::kCuda);
    dev.penalty_start = TensorView(start->data(), DType::kI32, {rows + 1}, Device::kCuda);
    dev.penalty_ids = TensorView(ids->data(), DType::kI32, {P}, Device::kCuda);
    dev.penalty_counts = TensorView(counts->data(), DType::kI32, {P}, Device::kCuda);
    dev.out = TensorView(out->data(), DType::kI32, {rows}, Device::kCuda);
    const Status s = gpu->sample(dev);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_TRUE(gpu->copy_to_host(got.data(), out->data(), rows * sizeof(int32_t)).ok());
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_EQ(got[r], want[r]) << "vocab " << vocab << " row " << r << " (" << b.kinds[r] << ")";
  }
}

// The launcher checks run without a device (fake device pointers are never dereferenced).
TEST(CudaSampleArgs, RejectsBadArguments) {
  auto fake = [](uintptr_t p) { return reinterpret_cast<void*>(p); };
  SampleArgs good;
  good.logits = TensorView(fake(0x100000), DType::kF32, {3, 100}, Device::kCuda);
  good.params = TensorView(fake(0x200000), DType::kI32, {3, kSampleRowWords}, Device::kCuda);
  good.penalty_start = TensorView(fake(0x300000), DType::kI32, {4}, Device::kCuda);
  good.penalty_ids = TensorView(fake(0x400000), DType::kI32, {5}, Device::kCuda);
  good.penalty_counts = TensorView(fake(0x500000), DType::kI32, {5}, Device::kCuda);
  good.out = TensorView(fake(0x600000), DType::kI32, {3}, Device::kCuda);
  auto expect_invalid = [](const SampleArgs& a, const std::string& needle) {
    const Status s = cuda::sample_cuda(a, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_EQ(s.message().rfind("sample: ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  SampleArgs a = good;
  a.logits.dtype = DType::kBF16;
  expect_invalid(a, "f32");
  a = good;
  a.params.shape[1] = kSampleRowWords + 1;
  expect_invalid(a, "params must be [3, 12] i32");
  a = good;
  a.penalty_start.shape[0] = 3;
  expect_invalid(a, "penalty_start must be [4] i32");
  a = good;
  a.penalty_counts.shape[0] = 4;
  expect_invalid(a, "penalty_counts must be [5] i32");
  a = good;
  a.out.device = Device::kCpu;
  expect_invalid(a, "out");
  a = good;
  a.out.data = fake(0x100000 + 64);
  expect_invalid(a, "overlap");
  a = good;
  a.logits.shape[1] = 0;
  expect_invalid(a, "length 0");
}

}  // namespace
}  // namespace pagoda
