// kernels/cuda/logprobs.cu and argmax.cu under the emulator, against their CPU twins on rows
// full of special values: ties, NaN, ±inf, all -inf/NaN rows, signed zeros, and a huge logit.
// Ids must match exactly (the tie and NaN rules); logprobs within 4 ulp (expf/logf are the
// host's here).
#include <algorithm>
#include <random>

#include "core/thread_pool.h"
#include "emu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/launchers.h"

namespace pagoda::emu_test {
namespace {

void run_case(int V, int kind, std::mt19937& rng) {
  ThreadPool pool(1);
  std::normal_distribution<float> nd(0, 1);
  const int R = 6;  // row r uses value mix r
  std::vector<float> L(size_t(R) * V);
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < V; ++i) {
      float x = nd(rng) * 4;
      if (kind == 1) x = std::round(x);  // many ties
      if (r == 1 && rng() % 3 == 0) x = NAN;
      if (r == 2) x = (rng() % 4 == 0) ? INFINITY : (rng() % 2 ? NAN : -INFINITY);
      if (r == 3) x = (rng() % 2) ? -INFINITY : NAN;  // nothing finite
      if (r == 4 && rng() % 5 == 0) x = -INFINITY;
      if (r == 5 && i % 7 == 0) x = (i % 14 == 0) ? 5.0f : (rng() % 2 ? 0.0f : -0.0f);
      L[size_t(r) * V + i] = x;
    }
  if (kind == 3)
    for (int r = 0; r < R; ++r) L[size_t(r) * V + V - 1] = 1e30f;
  const int K = std::min(V, kind == 2 ? 0 : kind == 1 ? 20 : int(rng() % 21));
  SCOPED_TRACE(testing::Message() << "V=" << V << " kind=" << kind << " K=" << K);
  std::vector<int32_t> tok(R);
  for (int r = 0; r < R; ++r) tok[r] = rng() % V;

  Buffers b;
  float* dl = b.alloc_as<float>(L.size(), "logits");
  memcpy(dl, L.data(), L.size() * 4);
  int32_t* dt = b.alloc_as<int32_t>(R, "tokens");
  memcpy(dt, tok.data(), R * 4);
  float* dtl = b.alloc_as<float>(R, "token_logprobs");
  int32_t* dti = b.alloc_as<int32_t>(size_t(R) * K + 1, "top_ids");
  float* dtlp = b.alloc_as<float>(size_t(R) * K + 1, "top_logprobs");
  int32_t* dam = b.alloc_as<int32_t>(R, "argmax_out");

  ReportScope reports;
  LogprobsArgs a;
  a.logits = TensorView(dl, DType::kF32, {R, V}, Device::kCuda);
  a.tokens = TensorView(dt, DType::kI32, {R}, Device::kCuda);
  a.token_logprobs = TensorView(dtl, DType::kF32, {R}, Device::kCuda);
  a.top_ids = TensorView(dti, DType::kI32, {R, K}, Device::kCuda);
  a.top_logprobs = TensorView(dtlp, DType::kF32, {R, K}, Device::kCuda);
  ASSERT_TRUE(cuda::logprobs_cuda(a, nullptr).ok());
  ArgmaxArgs am;
  am.logits = a.logits;
  am.out = TensorView(dam, DType::kI32, {R}, Device::kCuda);
  ASSERT_TRUE(cuda::argmax_cuda(am, nullptr).ok());
  EXPECT_EQ(reports.new_reports(), 0) << "emulator findings (see stderr)";

  std::vector<float> ctl(R), ctlp(size_t(R) * K + 1);
  std::vector<int32_t> cti(size_t(R) * K + 1), cam(R);
  LogprobsArgs c;
  c.logits = TensorView(L.data(), DType::kF32, {R, V});
  c.tokens = TensorView(tok.data(), DType::kI32, {R});
  c.token_logprobs = TensorView(ctl.data(), DType::kF32, {R});
  c.top_ids = TensorView(cti.data(), DType::kI32, {R, K});
  c.top_logprobs = TensorView(ctlp.data(), DType::kF32, {R, K});
  ASSERT_TRUE(cpu::logprobs(pool, c).ok());
  ArgmaxArgs ca;
  ca.logits = c.logits;
  ca.out = TensorView(cam.data(), DType::kI32, {R});
  ASSERT_TRUE(cpu::argmax(pool, ca).ok());

  for (int r = 0; r < R; ++r) {
    EXPECT_EQ(cam[r], dam[r]) << "argmax row " << r;
    EXPECT_LE(ulpdist(ctl[r], dtl[r]), 4)
        << "token logprob row " << r << ": " << ctl[r] << " vs " << dtl[r];
  }
  for (size_t i = 0; i < size_t(R) * K; ++i) {
    EXPECT_EQ(cti[i], dti[i]) << "top id " << i;
    EXPECT_LE(ulpdist(ctlp[i], dtlp[i]), 4) << "top logprob " << i;
  }
}

TEST(CudaEmuLogprobs, LogprobsAndArgmaxMatchCpu) {
  std::mt19937 rng(99);
  // 1 and 2: fewer entries than threads; 4099: odd tail; 32000: many per thread.
  for (int V : {1, 2, 33, 4099, 32000})
    for (int kind = 0; kind < 4; ++kind) {
      ::emu::g_order = (V + kind) % 3;
      run_case(V, kind, rng);
    }
}

}  // namespace
}  // namespace pagoda::emu_test
