// launchers.h: host entry points of the CUDA kernels, one per op family (<op>.cu defines
// <op>_cuda). Each validates its Args (dtypes, shapes, device == kCuda) before touching the
// device, returns InvalidArgument naming the op and the argument on bad input, queues the work
// on `stream` and checks the launch. Internal to kernels/cuda/ (CudaBackend calls these).
#pragma once

#include "core/status.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace pagoda::cuda {

// RmsNormArgs on the device: activations f32 or bf16, weight f32/f16/bf16, f32 math.
Status rms_norm_cuda(const RmsNormArgs& a, cudaStream_t stream);

// The rest of the forward pass (activations f32 or bf16, f32 math; see kernels/ops.h).
Status embedding_cuda(const EmbeddingArgs& a, cudaStream_t stream);     // embedding.cu
Status rope_cuda(const RopeArgs& a, cudaStream_t stream);               // rope.cu
Status swiglu_cuda(const SwigluArgs& a, cudaStream_t stream);           // swiglu.cu
Status add_cuda(const AddArgs& a, cudaStream_t stream);                 // swiglu.cu
Status kv_write_cuda(const KvWriteArgs& a, cudaStream_t stream);        // kv_write.cu
Status gather_rows_cuda(const GatherRowsArgs& a, cudaStream_t stream);  // gather_rows.cu
Status argmax_cuda(const ArgmaxArgs& a, cudaStream_t stream);           // argmax.cu
Status sample_cuda(const SampleArgs& a, cudaStream_t stream);           // sample.cu
Status logprobs_cuda(const LogprobsArgs& a, cudaStream_t stream);       // logprobs.cu
Status attention_cuda(const AttentionArgs& a, cudaStream_t stream);     // attention.cu
Status check_attention_args(const AttentionArgs& a);  // attention_args.cu (host-side checks)
// The split CTAs' partials (attention_scratch.cc): one buffer of this size per (device, stream).
inline constexpr size_t kAttentionScratchBytes = size_t{32} << 20;
// That buffer for `stream` on the current device, or null where there is none to be had: out of
// memory (remembered, not retried every step), or the stream is being captured into a graph and
// none was allocated before (no allocation during a capture; tried again after it). With null,
// the launch walks long rows in one CTA each, which gives the same bits.
StatusOr<float*> attention_split_scratch(cudaStream_t stream);
// The split partials' scratch of `stream`, allocated now instead of at the first
// long-context launch. Out of memory is not an error (long rows are walked instead).
Status attention_reserve_scratch(cudaStream_t stream);
// Frees that scratch (the stream's work done, no graph holding it left): ~CudaBackend.
void attention_release_scratch(cudaStream_t stream);
// The cuBLASLt handle and workspace of `stream` (matmul.cu), made now instead of at the first
// GEMM.
Status matmul_reserve_workspace(cudaStream_t stream);
// Frees it likewise (~CudaBackend): a backend made and destroyed in one process (tests, an engine
// restart) would otherwise leave its 32 MiB behind, and the attention scratch's 32 MiB.
void matmul_release_workspace(cudaStream_t stream);
inline constexpr int kAttentionMaxHeadDim = 256;  // attention.cu keeps dims in registers
// attention.cu, for tests: the launch shape forced (split CTAs + merge, or one CTA per (row,
// kv head, slice of its query heads) walking a long row's splits; both give the same bits),
// and the split count of n keys.
Status attention_cuda_for_test(const AttentionArgs& a, cudaStream_t stream, bool split_ctas);
int attention_num_splits(int n_keys);
// attention_prefill.cu: the opt-in tensor-core path for the rows of sequences with q_len >=
// min_q_len (README: off unless PAGODA_CUDA_TC_PREFILL=1; not bit-identical to the rest).
inline constexpr int kAttentionTcMinQLen = 16;   // the threshold PAGODA_CUDA_TC_PREFILL=1 uses
inline constexpr int kAttentionTcMaxGroup = 64;  // n_heads / n_kv_heads the path takes at most
int attention_tc_min_q_len();  // kAttentionTcMinQLen if PAGODA_CUDA_TC_PREFILL=1 (read once), else
                               // 0
bool attention_tc_eligible(const AttentionArgs& a);  // bf16 everywhere, head_dim 64/128, aligned
// Launches the tensor-core kernel for the rows it owns (a valid for check_attention_args and
// attention_tc_eligible); attention.cu's kernel must then skip those rows.
Status attention_prefill_cuda(const AttentionArgs& a, cudaStream_t stream, int min_q_len);
// attention.cu, for tests: attention_cuda with the path forced on at min_q_len >= 1 (ineligible
// arguments: the CUDA-core kernel alone). attention_cuda_for_test never takes the path.
Status attention_cuda_tc_for_test(const AttentionArgs& a, cudaStream_t stream, int min_q_len);
// cuBLASLt GEMM; keeps its handle and workspace per device (created on first use).
Status matmul_cuda(const MatmulArgs& a, cudaStream_t stream);  // matmul.cu
// rope_kv_write.cu: rope + kv_write on the fused [q; k; v] GEMM output.
Status rope_kv_write_cuda(const RopeKvWriteArgs& a, cudaStream_t stream);

}  // namespace pagoda::cuda
