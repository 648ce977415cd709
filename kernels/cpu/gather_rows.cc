// Row gather: out[i, :] = src[rows[i], :]   (e.g. each sequence's last row before the LM head)
//   src  [T, dim] f32
//   rows [R] i32, each in [0, T)
//   out  [R, dim] f32, must not overlap src
#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace pagoda::cpu {

Status gather_rows(ThreadPool& pool, const GatherRowsArgs& a) {
  (void)pool;  // a handful of rows: a memcpy each, not worth waking threads
  constexpr const char* kOp = "gather_rows";
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "src", a.src, 2, {DType::kF32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "rows", a.rows, 1, {DType::kI32}));
  PAGODA_RETURN_IF_ERROR(check_tensor(kOp, "out", a.out, 2, {DType::kF32}));
  const int64_t num_src = a.src.shape[0], dim = a.src.shape[1], num_rows = a.rows.shape[0];
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 0, num_rows, "R (rows dim 0)"));
  PAGODA_RETURN_IF_ERROR(check_dim(kOp, "out", a.out, 1, dim, "dim (src dim 1)"));
  PAGODA_RETURN_IF_ERROR(check_no_overlap(kOp, "out", a.out, "src", a.src));
  const int32_t* rows = a.rows.as<const int32_t>();
  for (int64_t i = 0; i < num_rows; ++i) {
    if (rows[i] < 0 || rows[i] >= num_src) {
      return arg_error(kOp, "rows", "[", i, "] = ", rows[i], " is outside [0, T = ", num_src, ")");
    }
  }
  const float* src = a.src.as<const float>();
  float* out = a.out.as<float>();
  for (int64_t i = 0; i < num_rows; ++i) {
    std::memcpy(out + i * dim, src + rows[i] * dim, sizeof(float) * dim);
  }
  return OkStatus();
}

}  // namespace pagoda::cpu
