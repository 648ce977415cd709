// kernels/cuda/sample.cu under the emulator, against the CPU twin (kernels/cpu/sample.cc) on
// random rows: every rule (greedy, temperature with top-k incl. k = 1 and k >= vocab, top-p incl.
// 1 and tiny, min-p, repetition/presence/frequency penalties with a penalty table, unusable
// penalty values) and value mixes with ties, NaN, ±inf and rows with nothing finite. The ids
// must match exactly: the contract (kernels/ops.h) lets them differ only when a draw target lies
// within double rounding of a token's boundary, which random inputs do not hit.
#include <algorithm>
#include <numeric>
#include <random>

#include "core/thread_pool.h"
#include "emu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/launchers.h"

namespace pagoda::emu_test {
namespace {

constexpr int kKinds = 8;     // value mixes, see row_value
constexpr int kConfigs = 11;  // sampling rules, see row_params

float row_value(int kind, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 1);
  float x = nd(rng) * 3;
  switch (kind) {
    case 1:  // many ties
      return std::round(x);
    case 2:  // some NaN
      return rng() % 4 == 0 ? NAN : x;
    case 3:  // some -inf
      return rng() % 3 == 0 ? -INFINITY : x;
    case 4:  // nothing finite: greedy on id 0
      return rng() % 2 ? -INFINITY : NAN;
    case 5:  // a +inf maximum: greedy
      return rng() % 50 == 0 ? INFINITY : x;
    case 6:  // very few distinct values: long runs of equal probabilities
      return std::round(x / 4) + (rng() % 2 ? 0.0f : -0.0f);
    case 7:  // near-flat: many tokens carry mass
      return x * 0.01f;
    default: return x;
  }
}

SampleRowParams row_params(int config, int V, std::mt19937& rng) {
  std::uniform_real_distribution<float> ud(0, 1);
  SampleRowParams p;
  p.temperature = 0.3f + 1.5f * ud(rng);
  p.seed_lo = rng();
  p.seed_hi = rng();
  p.position_lo = rng();
  p.position_hi = rng() % 4;
  switch (config) {
    case 0:  // greedy
      p.temperature = rng() % 2 ? 0.0f : -1.0f;
      break;
    case 1:  // top-k
      p.top_k = 1 + rng() % std::max(1, std::min(V, 64));
      break;
    case 2:  // top-k 1: greedy
      p.top_k = 1;
      break;
    case 3:  // top-k >= vocab: off
      p.top_k = V + rng() % 3;
      break;
    case 4:  // top-p
      p.top_p = 0.05f + 0.9f * ud(rng);
      break;
    case 5:  // top-p 1 (off) or tiny (the top token only)
      p.top_p = rng() % 2 ? 1.0f : 1e-7f;
      break;
    case 6:  // min-p, sometimes above 1
      p.min_p = rng() % 4 == 0 ? 2.0f : 0.5f * ud(rng);
      break;
    case 7:  // penalties
      p.repetition_penalty = rng() % 2 ? 1.3f : 0.8f;
      p.presence_penalty = 0.5f * ud(rng);
      p.frequency_penalty = 0.3f * ud(rng);
      break;
    case 8:  // unusable penalty values: off
      p.repetition_penalty = rng() % 2 ? NAN : -1.0f;
      p.presence_penalty = INFINITY;
      p.frequency_penalty = NAN;
      break;
    case 9:  // everything together
      p.top_k = 1 + rng() % std::max(1, V);
      p.top_p = 0.2f + 0.8f * ud(rng);
      p.min_p = 0.1f * ud(rng);
      p.repetition_penalty = 1.1f;
      p.presence_penalty = -0.4f;
      p.frequency_penalty = 0.2f;
      break;
    default:  // temperature only, greedy on penalties
      p.temperature = 0.05f + 3.0f * ud(rng);
      p.repetition_penalty = 2.0f;
      break;
  }
  return p;
}

// Rows whose id is not the raw logits' argmax: the test must reach the draw, not only greedy.
int g_not_argmax = 0;

// One launch of R rows of vocabulary V; row r uses rule (first + r) % kConfigs and value mix
// (first / kConfigs + r) % kKinds, so consecutive launches walk through the combinations.
void run_case(int V, int R, int first, std::mt19937& rng) {
  SCOPED_TRACE(testing::Message() << "V=" << V << " R=" << R << " first=" << first);
  ThreadPool pool(1);
  std::vector<float> L(size_t(R) * V);
  std::vector<SampleRowParams> prm(R);
  std::vector<int32_t> start(R + 1, 0), ids, counts;
  for (int r = 0; r < R; ++r) {
    const int config = (first + r) % kConfigs, kind = (first / kConfigs + r) % kKinds;
    for (int i = 0; i < V; ++i) L[size_t(r) * V + i] = row_value(kind, rng);
    prm[r] = row_params(config, V, rng);
    // The penalty table: distinct ids of this row, output counts 0..3 (0: prompt only).
    std::vector<int32_t> perm(V);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const int n = static_cast<int>(rng() % (std::min(V, 40) + 1));
    for (int e = 0; e < n; ++e) {
      ids.push_back(perm[e]);
      counts.push_back(static_cast<int32_t>(rng() % 4));
    }
    start[r + 1] = static_cast<int32_t>(ids.size());
  }
  const int P = static_cast<int>(ids.size());

  Buffers b;
  float* dl = b.alloc_as<float>(L.size(), "logits", 4);  // a misaligned view, as mid-tensor
  memcpy(dl, L.data(), L.size() * 4);
  auto* dp = b.alloc_as<SampleRowParams>(R, "params");
  memcpy(dp, prm.data(), R * sizeof(SampleRowParams));
  int32_t* ds = b.alloc_as<int32_t>(R + 1, "penalty_start");
  memcpy(ds, start.data(), (R + 1) * 4);
  int32_t* di = b.alloc_as<int32_t>(P + 1, "penalty_ids");
  memcpy(di, ids.data(), P * 4);
  int32_t* dc = b.alloc_as<int32_t>(P + 1, "penalty_counts");
  memcpy(dc, counts.data(), P * 4);
  int32_t* dout = b.alloc_as<int32_t>(R, "out");

  ReportScope reports;
  SampleArgs a;
  a.logits = TensorView(dl, DType::kF32, {R, V}, Device::kCuda);
  a.params = TensorView(dp, DType::kI32, {R, kSampleRowWords}, Device::kCuda);
  a.penalty_start = TensorView(ds, DType::kI32, {R + 1}, Device::kCuda);
  a.penalty_ids = TensorView(di, DType::kI32, {P}, Device::kCuda);
  a.penalty_counts = TensorView(dc, DType::kI32, {P}, Device::kCuda);
  a.out = TensorView(dout, DType::kI32, {R}, Device::kCuda);
  ASSERT_TRUE(cuda::sample_cuda(a, nullptr).ok());
  EXPECT_EQ(reports.new_reports(), 0) << "emulator findings (see stderr)";

  // The CPU gets its own copy of the logits (the CUDA op overwrote dl).
  std::vector<int32_t> cout(R, -1);
  SampleArgs c;
  c.logits = TensorView(L.data(), DType::kF32, {R, V});
  c.params = TensorView(prm.data(), DType::kI32, {R, kSampleRowWords});
  c.penalty_start = TensorView(start.data(), DType::kI32, {R + 1});
  c.penalty_ids = TensorView(ids.data(), DType::kI32, {P});
  c.penalty_counts = TensorView(counts.data(), DType::kI32, {P});
  c.out = TensorView(cout.data(), DType::kI32, {R});
  ASSERT_TRUE(cpu::sample(pool, c).ok());

  for (int r = 0; r < R; ++r) {
    const float* row = L.data() + size_t(r) * V;
    int best = 0;
    for (int i = 1; i < V; ++i)
      if (row[i] > row[best] || (std::isnan(row[best]) && !std::isnan(row[i]))) best = i;
    g_not_argmax += cout[r] != best;
    EXPECT_EQ(cout[r], dout[r]) << "row " << r << ": rule " << (first + r) % kConfigs << ", values "
                                << (first / kConfigs + r) % kKinds;
  }
}

TEST(CudaEmuSample, IdsMatchCpu) {
  std::mt19937 rng(2024);
  // 1: one token; 33: a partial first chunk of the 512 threads; 4099: odd tail, ~8 per thread.
  int first = 0;
  for (int V : {1, 33, 4099}) {
    const int launches = V == 1 ? 2 : V == 33 ? 11 : 6;
    for (int l = 0; l < launches; ++l, first += 8) {
      ::emu::g_order = l % 3;
      run_case(V, 8, first, rng);
    }
  }
  // One row of a real vocabulary: top-k, top-p, min-p and penalties together (rule 9).
  ::emu::g_order = 2;
  run_case(32000, 1, 9, rng);
  EXPECT_GE(g_not_argmax, 40) << "too few rows reach the draw";
}

}  // namespace
}  // namespace pagoda::emu_test
