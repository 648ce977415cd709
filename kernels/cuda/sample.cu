// sample.cu: one token per row on the device (SampleArgs in kernels/ops.h), so that a sampled
// row copies back one id instead of [vocab] floats. The CPU twin is kernels/cpu/sample.cc (the
// engine sampler's arithmetic); the shared scalar math (Philox, exp, penalties) is
// kernels/sample_math.h, compiled here for the device from the same source.
//
// Math (per row, f32 logits l[0, vocab), NaN read as -inf):
//   1. penalties on the row's table entries: l[id] = penalize(l[id], count, rep, pres, freq);
//   2. m = max l, best = lowest id with l == m; greedy (T <= 0, top_k == 1, m not finite): best;
//   3. candidates C = the first top_k ids in the order (l desc, id asc), or all ids;
//      p[i] = exp_nonpositive((l[i] - m) / T) for i in C, else 0 (the top token has p == 1);
//      top-p: the first token c* in the order (p desc, id asc) at which the running mass
//      reaches top_p * sum(p); zero every p after c*; min-p: zero every p < min(min_p, 1);
//      draw: the first token at which the running mass exceeds u * sum(p),
//      u = counter_uniform(seed, position).
// Layout: logits [R, vocab] f32 (overwritten with the probabilities: the op's scratch),
// params [R, 12] i32 (SampleRowParams), penalty_start [R + 1] i32, penalty_ids and
// penalty_counts [P] i32, out [R] i32; all on the device.
//
// Parallel plan: one CTA of kThreads per row, several passes over the row (it stays in L2).
//  - top-k: a radix select of the k-th key in the order over four 8-bit digits of an
//    order-preserving key (count histograms in shared memory), then the id cut among equal
//    keys by a block-wide ordered scan (select_by_id): exact, as the CPU's nth_element.
//  - "the first token at which the running mass reaches a target" (top-p and the draw): a
//    radix select on the bits of p (p in [0, 1]: bits 29..0) in three 10-bit digits, each a
//    histogram of mass (double atomics in shared memory), scanned from the largest digit; then
//    the j-th of the tokens with exactly that p, by ascending id. The CPU sums the same masses
//    in double grouped otherwise (and atomics add in any order), so the two can differ only
//    when the target lies within double rounding of a token's boundary.
// Batch invariance: a row's result depends only on its own logits and parameters.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>

#include "kernels/cuda/kernel_util.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/sample_math.h"

namespace pagoda::cuda {
namespace {

namespace sm = ::pagoda::sample_math;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMassBins = 1024;  // 10-bit digits of p
constexpr int kCountBins = 256;  // 8-bit digits of the order key
constexpr int32_t kNone = std::numeric_limits<int32_t>::max();

struct Shared {
  double mass[kMassBins];
  int count[kCountBins];
  double dsum[kWarps];
  float fval[kWarps];
  int ival[kWarps];
  int warp_count[kWarps];
  // Results broadcast by warp 0 / one thread.
  int bin;
  int found;
  double before;
  int need;
  int selected;
};

// An order-preserving unsigned key of a float that is not NaN: larger value, larger key; -0
// and +0 get the same key (they compare equal in the CPU's order).
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f == 0.0f) f = 0.0f;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ double block_sum(double v, Shared& sh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) sh.dsum[warp] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kWarps; ++w) total += sh.dsum[w];  // the same order in every thread
  __syncthreads();
  return total;
}

// (value, id) pairs reduced by `better`; every thread gets the result. id kNone: nothing.
template <typename Better>
__device__ __forceinline__ void block_best(float& value, int& id, Shared& sh, Better better) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, value, offset);
    const int oi = __shfl_xor_sync(0xffffffffu, id, offset);
    if (oi != kNone && (id == kNone || better(ov, oi, value, id))) {
      value = ov;
      id = oi;
    }
  }
  if (lane == 0) {
    sh.fval[warp] = value;
    sh.ival[warp] = id;
  }
  __syncthreads();
  value = sh.fval[0];
  id = sh.ival[0];
  for (int w = 1; w < kWarps; ++w) {
    if (sh.ival[w] != kNone && (id == kNone || better(sh.fval[w], sh.ival[w], value, id))) {
      value = sh.fval[w];
      id = sh.ival[w];
    }
  }
  __syncthreads();
}

// The id of the j-th (1-based) element, by ascending id, of those with pred(i); -1 if there
// are fewer. Block-wide: chunks of kThreads ids in order, ranks by ballots.
template <typename Pred>
__device__ int select_by_id(int vocab, int j, Pred pred, Shared& sh) {
  if (j < 1) return -1;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int seen = 0;  // uniform over the CTA
  for (int base = 0; base < vocab; base += kThreads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const bool flag = i < vocab && pred(i);
    const unsigned ballot = __ballot_sync(0xffffffffu, flag);
    if (lane == 0) sh.warp_count[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, in_chunk = 0;
    for (int w = 0; w < kWarps; ++w) {
      before += w < warp ? sh.warp_count[w] : 0;
      in_chunk += sh.warp_count[w];
    }
    if (seen + in_chunk >= j) {  // uniform
      const int rank = seen + before + __popc(ballot & ((1u << lane) - 1u));
      if (flag && rank == j - 1) sh.selected = i;
      __syncthreads();
      const int id = sh.selected;
      __syncthreads();
      return id;
    }
    seen += in_chunk;
    __syncthreads();  // warp_count is rewritten by the next chunk
  }
  return -1;
}

// Warp 0 scans bins [0, n) from the highest down: the first bin b at which
// reached(before + sum of bins above b + bin b). Sets sh.found, sh.bin and sh.before (the sum
// of `before` and the bins above b). If a lane's total reached it and its own walk does not (by
// rounding), its lowest non-empty bin is taken. Callers sync before and after.
template <typename T, typename Reached>
__device__ void find_bin(const T* bins, int n, T before, Reached reached, Shared& sh) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  const int per = n / 32;
  const int top = n - 1 - lane * per;  // this lane's bins: top, top - 1, ..., top - per + 1
  T mine = 0;
  for (int k = 0; k < per; ++k) mine += bins[top - k];
  T incl = mine;  // inclusive prefix over lanes 0..lane (higher bins first)
  for (int offset = 1; offset < 32; offset *= 2) {
    const T other = __shfl_up_sync(0xffffffffu, incl, offset);
    if (lane >= offset) incl += other;
  }
  const unsigned hit = __ballot_sync(0xffffffffu, reached(before + incl));
  if (hit == 0) {
    if (lane == 0) sh.found = 0;
    return;
  }
  if (lane == __ffs(hit) - 1) {
    T run = before + (incl - mine);
    int last = -1;
    T run_before_last = run;
    int b = -1;
    for (int k = 0; k < per && b < 0; ++k) {
      const T c = bins[top - k];
      if (reached(run + c)) {
        b = top - k;
      } else {
        if (c != 0) {
          last = top - k;
          run_before_last = run;
        }
        run += c;
      }
    }
    if (b < 0) {  // rounding: the lane's total reached, its walk did not
      b = last >= 0 ? last : top - per + 1;
      run = last >= 0 ? run_before_last : run;
    }
    sh.found = 1;
    sh.bin = b;
    sh.before = static_cast<double>(run);
    sh.need = static_cast<int>(run);  // for integer bins: the count above b
  }
}

struct Found {
  bool ok;
  float p;
  int id;
};

// The first token in the order (p desc, id asc) at which the running mass of row (non-negative
// probabilities, <= 1) reaches target (inclusive) or exceeds it; ok false if the whole mass
// falls short.
__device__ Found find_by_mass(const float* row, int vocab, double target, bool inclusive,
                              Shared& sh) {
  const auto reached = [target, inclusive](double mass) {
    return inclusive ? mass >= target : mass > target;
  };
  uint32_t prefix = 0;
  double before = 0.0;
  for (int level = 0; level < 3; ++level) {
    const int shift = 20 - 10 * level;
    for (int b = threadIdx.x; b < kMassBins; b += kThreads) sh.mass[b] = 0.0;
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float p = row[i];
      if (!(p > 0.0f)) continue;
      const uint32_t bits = sm::float_bits(p);
      if (level > 0 && (bits >> (shift + 10)) != (prefix >> (shift + 10))) continue;
      atomicAdd(&sh.mass[(bits >> shift) & (kMassBins - 1)], static_cast<double>(p));
    }
    __syncthreads();
    find_bin<double>(sh.mass, kMassBins, before, reached, sh);
    __syncthreads();
    const bool found = sh.found != 0;
    const int bin = sh.bin;
    before = sh.before;
    __syncthreads();
    if (!found) return {false, 0.0f, -1};
    prefix |= static_cast<uint32_t>(bin) << shift;
  }
  // Every bit of p is known: the tokens with exactly this p, in ascending id, each add p.
  const float p = sm::bits_float(prefix);
  int local = 0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) local += row[i] == p;
  const int m = static_cast<int>(block_sum(static_cast<double>(local), sh));
  if (m == 0) return {false, 0.0f, -1};  // not for valid input: the last bin had mass
  const double pd = p;
  double jd = (target - before) / pd;
  int j = jd < 1.0 ? 1 : (jd > m ? m : static_cast<int>(ceil(jd)));
  while (j > 1 && reached(before + (j - 1) * pd)) --j;
  while (j < m && !reached(before + j * pd)) ++j;
  const int id = select_by_id(
      vocab, j, [row, p](int i) { return row[i] == p; }, sh);
  return {id >= 0, p, id};
}

// grid: [R], block: [kThreads].
__global__ void __launch_bounds__(kThreads)
    sample_kernel(float* logits, const SampleRowParams* params, const int32_t* penalty_start,
                  const int32_t* penalty_ids, const int32_t* penalty_counts, int num_penalties,
                  int32_t* out, int vocab) {
  __shared__ Shared sh;
  const int r = blockIdx.x;
  float* row = logits + static_cast<int64_t>(r) * vocab;
  const SampleRowParams prm = params[r];

  // 1. NaN as -inf, then the penalties (distinct ids: no two threads write one token).
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    if (isnan(row[i])) row[i] = -INFINITY;
  }
  __syncthreads();
  const float rep = sm::usable_repetition(prm.repetition_penalty);
  const float pres = sm::usable_additive(prm.presence_penalty);
  const float freq = sm::usable_additive(prm.frequency_penalty);
  if (rep != 1.0f || pres != 0.0f || freq != 0.0f) {
    const int s0 = min(max(penalty_start[r], 0), num_penalties);
    const int s1 = min(max(penalty_start[r + 1], s0), num_penalties);
    for (int e = s0 + threadIdx.x; e < s1; e += kThreads) {
      const int id = penalty_ids[e];
      if (id >= 0 && id < vocab)
        row[id] = sm::penalize(row[id], penalty_counts[e], rep, pres, freq);
    }
    __syncthreads();
  }

  // 2. The maximum, lowest id first; greedy rows end here.
  float max_logit = -INFINITY;
  int best = kNone;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    if (row[i] > max_logit) {  // -inf never wins; increasing i keeps the lowest id
      max_logit = row[i];
      best = i;
    }
  }
  block_best(max_logit, best, sh, [](float v, int i, float cur_v, int cur_i) {
    return v > cur_v || (v == cur_v && i < cur_i);
  });
  if (best == kNone) best = 0;
  const float temperature = prm.temperature;
  if (!(temperature > 0.0f) || prm.top_k == 1 || !isfinite(max_logit)) {
    if (threadIdx.x == 0) out[r] = best;
    return;
  }

  // 3a. Top-k: the k-th key in the order, then the id cut among keys equal to it.
  const bool use_k = prm.top_k > 0 && prm.top_k < vocab;
  uint32_t kth_key = 0;
  int kth_id = vocab;
  if (use_k) {
    int need = prm.top_k;  // the need-th largest among the keys matching the prefix
    for (int pass = 0; pass < 4; ++pass) {
      const int shift = 24 - 8 * pass;
      for (int b = threadIdx.x; b < kCountBins; b += kThreads) sh.count[b] = 0;
      __syncthreads();
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        const uint32_t key = order_key(row[i]);
        if (pass > 0 && (key >> (shift + 8)) != (kth_key >> (shift + 8))) continue;
        atomicAdd(&sh.count[(key >> shift) & (kCountBins - 1)], 1);
      }
      __syncthreads();
      const int target = need;
      find_bin<int>(
          sh.count, kCountBins, 0, [target](int c) { return c >= target; }, sh);
      __syncthreads();
      kth_key |= static_cast<uint32_t>(sh.bin) << shift;
      need -= sh.need;
      __syncthreads();
    }
    const uint32_t k_key = kth_key;
    kth_id = select_by_id(
        vocab, need, [row, k_key](int i) { return order_key(row[i]) == k_key; }, sh);
  }

  // 3b. Probabilities at the temperature, 0 outside the candidates.
  double local = 0.0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float l = row[i];
    bool candidate = true;
    if (use_k) {
      const uint32_t key = order_key(l);
      candidate = key > kth_key || (key == kth_key && i <= kth_id);
    }
    const float p = candidate ? sm::exp_nonpositive((l - max_logit) / temperature) : 0.0f;
    row[i] = p;
    local += p;
  }
  double total = block_sum(local, sh);

  // 3c. Top-p: keep the order's prefix up to the token where the mass reaches top_p.
  if (prm.top_p < 1.0f) {
    double target = static_cast<double>(prm.top_p) * total;
    if (!(target > 0.0)) target = 1.0;  // the top token's mass: keep just that one
    const Found last = find_by_mass(row, vocab, target, true, sh);
    if (last.ok) {
      local = 0.0;
      for (int i = threadIdx.x; i < vocab; i += kThreads) {
        const float p = row[i];
        if (p > last.p || (p == last.p && i <= last.id)) {
          local += p;
        } else {
          row[i] = 0.0f;
        }
      }
      total = block_sum(local, sh);
    }
  }

  // 3d. Min-p against the top probability, which is 1.
  if (prm.min_p > 0.0f) {
    const float threshold = fminf(prm.min_p, 1.0f);
    local = 0.0;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float p = row[i];
      if (p >= threshold) {
        local += p;
      } else {
        row[i] = 0.0f;
      }
    }
    total = block_sum(local, sh);
  }

  // 3e. The draw.
  const uint64_t seed = (static_cast<uint64_t>(prm.seed_hi) << 32) | prm.seed_lo;
  const uint64_t position = (static_cast<uint64_t>(prm.position_hi) << 32) | prm.position_lo;
  const double u = sm::counter_uniform(seed, position);
  const Found drawn = find_by_mass(row, vocab, u * total, false, sh);
  if (drawn.ok) {
    if (threadIdx.x == 0) out[r] = drawn.id;
    return;
  }
  // u * total rounded past the summed mass: the last token in the order with a probability.
  float last_p = INFINITY;
  int last_id = kNone;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float p = row[i];
    if (p > 0.0f && (p < last_p || (p == last_p && i > last_id) || last_id == kNone)) {
      last_p = p;
      last_id = i;
    }
  }
  block_best(last_p, last_id, sh, [](float v, int i, float cur_v, int cur_i) {
    return v < cur_v || (v == cur_v && i > cur_i);
  });
  if (threadIdx.x == 0) out[r] = last_id == kNone ? best : last_id;
}

// ---- launcher ----------------------------------------------------------------------------

Status check_i32(const char* name, const TensorView& t, int ndim, int64_t d0, int64_t d1 = -1) {
  bool ok = t.ndim == ndim && t.dtype == DType::kI32 && t.shape[0] == d0;
  if (ok && ndim == 2) ok = t.shape[1] == d1;
  if (!ok) {
    std::string msg = std::string("sample: ") + name + " must be [" + std::to_string(d0);
    if (ndim == 2) msg += ", " + std::to_string(d1);
    msg += "] i32, got " + t.describe();
    return InvalidArgument(msg);
  }
  return check_on_cuda("sample", name, t);
}

Status check_args(const SampleArgs& a) {
  if (a.logits.ndim != 2 || a.logits.dtype != DType::kF32) {
    return InvalidArgument("sample: logits must be [R, vocab] f32, got " + a.logits.describe());
  }
  const int64_t rows = a.logits.shape[0], vocab = a.logits.shape[1];
  // Loop counters are int and step by kThreads: keep them clear of INT_MAX.
  constexpr int64_t kMaxLen = std::numeric_limits<int32_t>::max() - kThreads;
  if (rows < 0 || rows > std::numeric_limits<int>::max() || vocab < 0 || vocab > kMaxLen) {
    return InvalidArgument("sample: logits dims out of range, got " + a.logits.describe());
  }
  if (rows > 0 && vocab == 0) return InvalidArgument("sample: logits has rows of length 0");
  PAGODA_RETURN_IF_ERROR(check_on_cuda("sample", "logits", a.logits));
  PAGODA_RETURN_IF_ERROR(check_i32("params", a.params, 2, rows, kSampleRowWords));
  PAGODA_RETURN_IF_ERROR(check_i32("penalty_start", a.penalty_start, 1, rows + 1));
  if (a.penalty_ids.ndim != 1 || a.penalty_ids.shape[0] < 0 || a.penalty_ids.shape[0] > kMaxLen) {
    return InvalidArgument("sample: penalty_ids must be [P] i32, got " + a.penalty_ids.describe());
  }
  const int64_t P = a.penalty_ids.shape[0];
  PAGODA_RETURN_IF_ERROR(check_i32("penalty_ids", a.penalty_ids, 1, P));
  PAGODA_RETURN_IF_ERROR(check_i32("penalty_counts", a.penalty_counts, 1, P));
  PAGODA_RETURN_IF_ERROR(check_i32("out", a.out, 1, rows));
  if (rows == 0) return OkStatus();
  if (a.logits.empty() || a.out.empty() || a.params.empty() || a.penalty_start.empty() ||
      (P > 0 && (a.penalty_ids.empty() || a.penalty_counts.empty()))) {
    return InvalidArgument("sample: a tensor with elements has no data (a null pointer)");
  }
  if (overlaps(a.out, a.logits)) return InvalidArgument("sample: out must not overlap logits");
  return OkStatus();
}

}  // namespace

Status sample_cuda(const SampleArgs& a, cudaStream_t stream) {
  PAGODA_RETURN_IF_ERROR(check_args(a));
  const int rows = static_cast<int>(a.logits.shape[0]);
  if (rows == 0) return OkStatus();
  sample_kernel<<<rows, kThreads, 0, stream>>>(
      static_cast<float*>(a.logits.data), static_cast<const SampleRowParams*>(a.params.data),
      static_cast<const int32_t*>(a.penalty_start.data),
      static_cast<const int32_t*>(a.penalty_ids.data),
      static_cast<const int32_t*>(a.penalty_counts.data), static_cast<int>(a.penalty_ids.shape[0]),
      static_cast<int32_t*>(a.out.data), static_cast<int>(a.logits.shape[1]));
  PAGODA_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

}  // namespace pagoda::cuda
