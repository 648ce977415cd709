#include "models/step_inputs.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "core/check.h"
#include "models/llama.h"

namespace pagoda {

Status StepInputs::reserve(Backend* backend, const Capacity& want, bool* moved) {
  *moved = false;
  Capacity next{std::max(cap_.tokens, want.tokens), std::max(cap_.seqs, want.seqs),
                std::max(cap_.block_entries, want.block_entries),
                std::max(cap_.sample_rows, want.sample_rows),
                std::max(cap_.penalties, want.penalties)};
  if (next.tokens == cap_.tokens && next.seqs == cap_.seqs &&
      next.block_entries == cap_.block_entries && next.sample_rows == cap_.sample_rows &&
      next.penalties == cap_.penalties && device_.data() != nullptr)
    return OkStatus();
  const int64_t t = next.tokens, s = next.seqs, r = next.sample_rows;
  o_tokens_ = 0;
  o_positions_ = t;
  o_slots_ = 2 * t;
  o_seq_lens_ = 3 * t;
  o_query_start_ = o_seq_lens_ + s;
  o_sample_rows_ = o_query_start_ + s + 1;
  o_sample_params_ = o_sample_rows_ + r;
  o_penalty_start_ = o_sample_params_ + r * kSampleRowWords;
  o_block_tables_ = o_penalty_start_ + r + 1;
  o_penalties_ = o_block_tables_ + next.block_entries;
  total_ = o_penalties_ + 2 * int64_t{next.penalties};
  // Free first: device memory is tightest at the largest step.
  device_ = DeviceBuffer();  // on a GPU cudaFree waits for the device: no copy is in flight
  staging_ = DeviceBuffer();
  in_flight_ = false;
  cap_ = Capacity{};
  *moved = true;
  const size_t bytes = static_cast<size_t>(total_) * sizeof(int32_t);
  PAGODA_ASSIGN_OR_RETURN(device_, backend->allocate(bytes));
  StatusOr<DeviceBuffer> staging = backend->allocate_staging(bytes);
  if (!staging.ok()) {
    device_ = DeviceBuffer();
    return staging.status();
  }
  staging_ = std::move(staging).value();
  device_kind_ = backend->device();
  cap_ = next;
  return OkStatus();
}

TensorView StepInputs::view(int64_t offset, int64_t n) const {
  return TensorView(static_cast<int32_t*>(device_.data()) + offset, DType::kI32, {n}, device_kind_);
}

TensorView StepInputs::sample_params(int64_t rows) const {
  return TensorView(static_cast<int32_t*>(device_.data()) + o_sample_params_, DType::kI32,
                    {rows, kSampleRowWords}, device_kind_);
}

TensorView StepInputs::block_tables(int64_t rows, int64_t width) const {
  return TensorView(static_cast<int32_t*>(device_.data()) + o_block_tables_, DType::kI32,
                    {rows, width}, device_kind_);
}

Status StepInputs::upload(Backend* backend, const ForwardBatch& b) {
  const int64_t T = b.num_tokens(), B = b.num_seqs();
  const int64_t R = static_cast<int64_t>(b.sample_rows.size());
  const int64_t S = static_cast<int64_t>(b.sample_params.size());
  const int64_t E = static_cast<int64_t>(b.block_tables.size());
  const int64_t P = static_cast<int64_t>(b.penalty_ids.size());
  if (!(T <= cap_.tokens && B <= cap_.seqs && R <= cap_.sample_rows && E <= cap_.block_entries &&
        P <= cap_.penalties && S <= R)) {
    std::ostringstream os;
    os << "step of T " << T << ", B " << B << ", R " << R << ", E " << E << ", P " << P << ", S "
       << S << " beyond the capacity " << cap_.tokens << ", " << cap_.seqs << ", "
       << cap_.sample_rows << ", " << cap_.block_entries << ", " << cap_.penalties;
    internal::check_failed(__FILE__, __LINE__, "upload within reserve()", os.str());
  }
  if (in_flight_) {
    PAGODA_RETURN_IF_ERROR(backend->synchronize());
    in_flight_ = false;
  }
  const auto put = [this](int64_t offset, const void* src, size_t bytes) {
    if (bytes > 0) std::memcpy(staged(offset), src, bytes);
  };
  constexpr size_t kI = sizeof(int32_t);
  put(o_tokens_, b.token_ids.data(), T * kI);
  put(o_positions_, b.positions.data(), T * kI);
  put(o_slots_, b.slot_mapping.data(), T * kI);
  put(o_seq_lens_, b.seq_lens.data(), B * kI);
  put(o_query_start_, b.query_start.data(), (B + 1) * kI);
  put(o_sample_rows_, b.sample_rows.data(), R * kI);
  if (S > 0) {
    put(o_sample_params_, b.sample_params.data(), S * sizeof(SampleRowParams));
    if (b.penalty_start.empty()) {
      std::fill_n(staged(o_penalty_start_), S + 1, 0);
    } else {
      put(o_penalty_start_, b.penalty_start.data(), (S + 1) * kI);
    }
  }
  put(o_block_tables_, b.block_tables.data(), E * kI);
  // One copy from the first region through the used block tables (the unused tails of the small
  // regions go along: a few KiB), and one of the used penalty tables.
  auto* dst = static_cast<int32_t*>(device_.data());
  in_flight_ = true;
  PAGODA_RETURN_IF_ERROR(backend->copy_from_host_async(dst, staged(0), (o_block_tables_ + E) * kI));
  if (P > 0) {
    put(o_penalties_, b.penalty_ids.data(), P * kI);
    put(o_penalties_ + P, b.penalty_counts.data(), P * kI);
    PAGODA_RETURN_IF_ERROR(
        backend->copy_from_host_async(dst + o_penalties_, staged(o_penalties_), 2 * P * kI));
  }
  return OkStatus();
}

}  // namespace pagoda
