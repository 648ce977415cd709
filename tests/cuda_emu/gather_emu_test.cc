// kernels/cuda/embedding.cu and gather_rows.cu under the emulator: bit for bit what the CPU
// twins give, for every table/activation dtype pair, dims below, at and past the block width,
// repeated ids; and an id outside the table gives a row of NaN (the device's contract, where the
// CPU twin rejects the call instead).
#include <random>

#include "core/status.h"
#include "core/thread_pool.h"
#include "emu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/launchers.h"

namespace pagoda::emu_test {
namespace {

size_t dsize(DType t) {
  return t == DType::kF32 ? 4 : 2;
}

// Fills n elements of dtype t with random values (NaN and ±inf among them), as raw bytes.
std::vector<uint8_t> random_bytes(DType t, size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n * dsize(t));
  std::normal_distribution<float> nd(0, 2);
  for (size_t i = 0; i < n; ++i) {
    float x = nd(rng);
    if (rng() % 17 == 0) x = rng() % 2 ? NAN : -INFINITY;
    if (t == DType::kF32) {
      memcpy(&v[i * 4], &x, 4);
    } else {
      const uint16_t h = t == DType::kBF16 ? f2bf(x) : f2h(x);
      memcpy(&v[i * 2], &h, 2);
    }
  }
  return v;
}

void embedding_case(DType wt, DType at, int vocab, int dim, int T, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "embedding w=" << int(wt) << " act=" << int(at)
                                  << " vocab=" << vocab << " dim=" << dim << " T=" << T);
  ThreadPool pool(1);
  std::vector<uint8_t> table = random_bytes(wt, size_t(vocab) * dim, rng);
  std::vector<int32_t> ids(T);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);  // repeats when T > vocab
  const size_t out_bytes = size_t(T) * dim * dsize(at);

  Buffers b;
  void* dtab = b.alloc(table.size(), "table");
  memcpy(dtab, table.data(), table.size());
  int32_t* dids = b.alloc_as<int32_t>(T, "token_ids");
  memcpy(dids, ids.data(), T * 4);
  void* dout = b.alloc(out_bytes, "out");
  ReportScope reports;
  EmbeddingArgs a;
  a.table = TensorView(dtab, wt, {vocab, dim}, Device::kCuda);
  a.token_ids = TensorView(dids, DType::kI32, {T}, Device::kCuda);
  a.out = TensorView(dout, at, {T, dim}, Device::kCuda);
  ASSERT_TRUE(cuda::embedding_cuda(a, nullptr).ok());
  EXPECT_EQ(reports.new_reports(), 0) << "emulator findings (see stderr)";

  // The CPU twin writes f32 only; a bf16 activation is its f32 rounded once (the contract).
  std::vector<float> cf(size_t(T) * dim);
  EmbeddingArgs c;
  c.table = TensorView(table.data(), wt, {vocab, dim});
  c.token_ids = TensorView(ids.data(), DType::kI32, {T});
  c.out = TensorView(cf.data(), DType::kF32, {T, dim});
  {
    const Status s = cpu::embedding(pool, c);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  std::vector<uint8_t> cout(out_bytes);
  for (size_t i = 0; i < cf.size(); ++i) {
    if (at == DType::kF32) {
      memcpy(&cout[i * 4], &cf[i], 4);
    } else {
      const uint16_t h = f2bf(cf[i]);
      memcpy(&cout[i * 2], &h, 2);
    }
  }
  EXPECT_EQ(memcmp(cout.data(), dout, out_bytes), 0) << "outputs differ";

  // An id outside the table: that row is NaN, the others unchanged.
  dids[T - 1] = rng() % 2 ? vocab : -1;
  ReportScope reports2;
  ASSERT_TRUE(cuda::embedding_cuda(a, nullptr).ok());
  EXPECT_EQ(reports2.new_reports(), 0) << "emulator findings (see stderr)";
  const size_t row_bytes = size_t(dim) * dsize(at);
  EXPECT_EQ(memcmp(cout.data(), dout, out_bytes - row_bytes), 0);
  for (int i = 0; i < dim; ++i) {
    const char* p = static_cast<const char*>(dout) + out_bytes - row_bytes + i * dsize(at);
    float x;
    if (at == DType::kF32) {
      memcpy(&x, p, 4);
    } else {
      uint16_t h;
      memcpy(&h, p, 2);
      x = bf2f(h);
    }
    EXPECT_TRUE(std::isnan(x)) << "element " << i << " of the bad id's row";
  }
}

void gather_case(DType t, int T, int dim, int R, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "gather_rows dt=" << int(t) << " T=" << T << " dim=" << dim
                                  << " R=" << R);
  ThreadPool pool(1);
  std::vector<uint8_t> src = random_bytes(t, size_t(T) * dim, rng);
  std::vector<int32_t> rows(R);
  for (auto& r : rows) r = static_cast<int32_t>(rng() % T);
  const size_t out_bytes = size_t(R) * dim * dsize(t);

  Buffers b;
  void* dsrc = b.alloc(src.size(), "src", 2 * dsize(t));  // a view off the allocator alignment
  memcpy(dsrc, src.data(), src.size());
  int32_t* drows = b.alloc_as<int32_t>(R, "rows");
  memcpy(drows, rows.data(), R * 4);
  void* dout = b.alloc(out_bytes, "out");
  ReportScope reports;
  GatherRowsArgs a;
  a.src = TensorView(dsrc, t, {T, dim}, Device::kCuda);
  a.rows = TensorView(drows, DType::kI32, {R}, Device::kCuda);
  a.out = TensorView(dout, t, {R, dim}, Device::kCuda);
  ASSERT_TRUE(cuda::gather_rows_cuda(a, nullptr).ok());
  EXPECT_EQ(reports.new_reports(), 0) << "emulator findings (see stderr)";

  // The contract is a copy: f32 against the CPU twin (which takes f32 only), bf16 against the
  // source bytes.
  std::vector<uint8_t> cout(out_bytes);
  if (t == DType::kF32) {
    GatherRowsArgs c;
    c.src = TensorView(src.data(), t, {T, dim});
    c.rows = TensorView(rows.data(), DType::kI32, {R});
    c.out = TensorView(cout.data(), t, {R, dim});
    const Status s = cpu::gather_rows(pool, c);
    ASSERT_TRUE(s.ok()) << s.message();
  } else {
    for (int r = 0; r < R; ++r)
      memcpy(&cout[size_t(r) * dim * 2], &src[size_t(rows[r]) * dim * 2], size_t(dim) * 2);
  }
  EXPECT_EQ(memcmp(cout.data(), dout, out_bytes), 0) << "outputs differ";

  drows[0] = rng() % 2 ? T : -7;  // outside [0, T): a NaN row
  ReportScope reports2;
  ASSERT_TRUE(cuda::gather_rows_cuda(a, nullptr).ok());
  EXPECT_EQ(reports2.new_reports(), 0) << "emulator findings (see stderr)";
  const size_t row_bytes = size_t(dim) * dsize(t);
  EXPECT_EQ(
      memcmp(cout.data() + row_bytes, static_cast<char*>(dout) + row_bytes, out_bytes - row_bytes),
      0);
  for (int i = 0; i < dim; ++i) {
    const char* p = static_cast<const char*>(dout) + i * dsize(t);
    float x;
    if (t == DType::kF32) {
      memcpy(&x, p, 4);
    } else {
      uint16_t h;
      memcpy(&h, p, 2);
      x = bf2f(h);
    }
    EXPECT_TRUE(std::isnan(x)) << "element " << i << " of the bad row";
  }
}

TEST(CudaEmuGather, EmbeddingMatchesCpu) {
  std::mt19937 rng(7);
  int n = 0;
  for (DType wt : {DType::kF32, DType::kF16, DType::kBF16})
    for (DType at : {DType::kF32, DType::kBF16})
      for (int dim : {1, 37, 256, 300}) {  // one thread; a partial warp; a full block; strided
        ::emu::g_order = n++ % 3;
        embedding_case(wt, at, 11, dim, 13, rng);
      }
}

TEST(CudaEmuGather, GatherRowsMatchesCpu) {
  std::mt19937 rng(8);
  int n = 0;
  for (DType t : {DType::kF32, DType::kBF16})
    for (int dim : {1, 37, 256, 300}) {
      ::emu::g_order = n++ % 3;
      gather_case(t, 9, dim, 5, rng);
    }
}

}  // namespace
}  // namespace pagoda::emu_test
