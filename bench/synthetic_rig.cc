#include "bench/synthetic_rig.h"

#include <cstdio>

#include "core/thread_pool.h"
#include "kernels/backend_factory.h"
#include "models/synthetic.h"

namespace pagoda {

StatusOr<std::unique_ptr<SyntheticRig>> build_synthetic_rig(
    const Flags& flags, const std::string& default_shape, const std::string& default_dtype,
    int64_t context_needed, const std::string& what, int default_threads,
    const std::string& default_device) {
  auto rig = std::make_unique<SyntheticRig>();
  rig->shape = flags.get_string("shape", default_shape);
  if (!parse_dtype(flags.get_string("dtype", default_dtype), &rig->dtype) ||
      rig->dtype == DType::kI32)
    return InvalidArgument("--dtype must be f32, f16 or bf16");
  PAGODA_ASSIGN_OR_RETURN(int64_t threads, flags.get_int("threads", default_threads, 1, 1024));
  rig->threads = static_cast<int>(threads);
  ThreadPool::set_default_threads(rig->threads);
  PAGODA_ASSIGN_OR_RETURN(ModelConfig config, synthetic_config(rig->shape));
  if (context_needed > config.max_position_embeddings)
    return InvalidArgument(what + " exceed the context of " + rig->shape + " (" +
                           std::to_string(config.max_position_embeddings) + " tokens)");
  std::fprintf(stderr, "building synthetic %s (%s)...\n", rig->shape.c_str(),
               dtype_name(rig->dtype));
  PAGODA_ASSIGN_OR_RETURN(rig->loaded, make_synthetic_model(config, rig->dtype, 42));
  PAGODA_ASSIGN_OR_RETURN(rig->backend,
                          make_backend(flags.get_string("device", default_device), rig->threads));
  PAGODA_ASSIGN_OR_RETURN(rig->model, LlamaModel::create(rig->loaded, rig->backend.get()));
  return rig;
}

double weight_bytes_per_token(const LoadedModel& m) {
  double bytes = 0;
  for (const auto& [name, t] : m.weights.tensors()) {
    if (m.weights.is_view(name)) continue;  // a fused projection's part: counted there
    if (name == "model.embed_tokens.weight") {
      bytes += static_cast<double>(t.nbytes()) / t.shape[0];
      if (m.config.tie_word_embeddings) bytes += static_cast<double>(t.nbytes());  // LM head
    } else {
      bytes += static_cast<double>(t.nbytes());
    }
  }
  return bytes;
}

}  // namespace pagoda
