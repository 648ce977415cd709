// attention_prefill.cuh: which rows of the ragged batch the tensor-core prefill kernel
// (attention_prefill.cu) owns. Both attention kernels decide it with these functions, so that
// every row is computed and written by exactly one of them: attention.cu's kernels skip the rows
// owned here, attention_prefill.cu computes exactly those. Included by those two files only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pagoda::cuda {

// The largest b in [0, B] with query_start[b] <= t (query_start is non-decreasing; with bad
// metadata it is just some b in [0, B], checked by the callers).
__device__ __forceinline__ int find_sequence(const int32_t* query_start, int B, int t) {
  int lo = 0, hi = B;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (query_start[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// The sequence b whose rows [query_start[b], query_start[b + 1]) hold row t when that sequence
// has q_len >= min_q_len (the tensor-core path owns the row), else -1 (attention.cu's kernel
// owns it: short chunks, decode rows, and rows in no sequence, which it turns into NaN).
// min_q_len <= 0: the path is off, -1 for every row.
__device__ __forceinline__ int tc_row_owner(const int32_t* query_start, int B, int t,
                                            int min_q_len) {
  if (min_q_len <= 0) return -1;
  const int b = find_sequence(query_start, B, t);
  if (b >= B) return -1;
  const int start = query_start[b], end = query_start[b + 1];
  const bool owned =
      start <= t && t < end && static_cast<int64_t>(end) - start >= int64_t{min_q_len};
  return owned ? b : -1;
}

}  // namespace pagoda::cuda
