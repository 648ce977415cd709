// Embedding lookup: out[t, :] = table[token_ids[t], :], widened to f32.
//   table     [vocab, dim]  f32 / f16 / bf16
//   token_ids [T]           i32, each in [0, vocab)
//   out       [T, dim]      f32
// A pure copy/convert; rows are independent, split over T.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/simd.h"

namespace pagoda::cpu {
namespace {

// out_row[0 .. dim) = f32(table_row[0 .. dim))
template <DType D>
void widen_row(const void* table_row, int64_t dim, float* out_row) {
  if constexpr (D == DType::kF32) {
    std::memcpy(out_row, table_row, sizeof(float) * dim);
  } else {
    int64_t i = 0;
    for (; i + kLanes <= dim; i += kLanes) store8(out_row + i, load8<D>(table_row, i));
    if (i < dim) {
      const int r = static_cast<int>(dim - i);
      store_partial8(out_row + i, load_partial8<D>(table_row, i, r), r);
    }
  }
}

template <DType D>
void embedding_rows(ThreadPool& pool, const void* table,  // [vocab, dim]
                    const int32_t* ids,                   // [T]
                    int64_t num_tokens, int64_t dim,
                    float* out) {  // [T, dim]
  const size_t row_bytes = static_cast<size_t>(dim) * dtype_size(D);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, dim));
  pool.parallel_for(num_tokens, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const char* row = static_cast<const char*>(table) + static_cast<size_t>(ids[t]) * row_bytes;
      widen_row<D>(row, dim, out + t * dim);
    }
  });
}

}  // namespace

Status embedding(ThreadPool& pool, const EmbeddingArgs& a) {
  constexpr const char* kOp = "embedding";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "table", a.table, 2, kFloatDTypes));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "token_ids", a.token_ids, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 2, {DType::kF32}));
  const int64_t vocab = a.table.shape[0], dim = a.table.shape[1];
  const int64_t num_tokens = a.token_ids.shape[0];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 0, num_tokens, "T"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 1, dim, "dim"));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "table", a.table));
  const int32_t* ids = a.token_ids.as<const int32_t>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) {
      return arg_error(kOp, "token_ids", "[", t, "] = ", ids[t], " is outside the vocabulary [0, ",
                       vocab, ")");
    }
  }
  float* out = a.out.as<float>();
  dispatch_float(a.table.dtype, [&](auto d) {
    embedding_rows<d()>(pool, a.table.data, ids, num_tokens, dim, out);
  });
  return OkStatus();
}

}  // namespace pagoda::cpu
