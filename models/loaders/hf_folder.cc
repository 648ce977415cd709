#include "models/loaders/hf_folder.h"

#include "models/loaders/json_util.h"
#include "models/loaders/loader_util.h"
#include "models/loaders/safetensors.h"

namespace pagoda {
namespace {

using json_util::Json;
using loader_util::is_regular_file;
using loader_util::join_path;

// Reads bos/eos ids from an optional JSON file into *bos / *eos. With `fill_only`, ids already
// set are kept. A missing file is fine; an unreadable or malformed one is an error.
Status apply_special_ids(const std::string& path, bool fill_only, int* bos, std::vector<int>* eos) {
  if (!is_regular_file(path)) return OkStatus();
  std::string text;
  PAGODA_RETURN_IF_ERROR(json_util::read_text_file(path, &text));
  PAGODA_ASSIGN_OR_RETURN(Json root, json_util::parse_object(text, path));
  int file_bos = -1;
  std::vector<int> file_eos;
  PAGODA_RETURN_IF_ERROR(
      json_util::read_int(root, "bos_token_id", path, json_util::Need::kOptional, &file_bos));
  PAGODA_RETURN_IF_ERROR(json_util::read_token_ids(root, "eos_token_id", path, &file_eos));
  if (file_bos >= 0 && (!fill_only || *bos < 0)) *bos = file_bos;
  if (!file_eos.empty() && (!fill_only || eos->empty())) *eos = std::move(file_eos);
  return OkStatus();
}

}  // namespace

StatusOr<LoadedModel> load_hf_folder(const std::string& dir) {
  if (!loader_util::is_directory(dir)) return NotFound("model folder " + dir + " does not exist");
  const std::string config_path = join_path(dir, "config.json");
  if (!is_regular_file(config_path)) {
    return NotFound(config_path + " does not exist: " + dir +
                    " is not a Hugging Face model folder");
  }
  LoadedModel model;
  model.source = dir;
  std::string text;
  PAGODA_RETURN_IF_ERROR(json_util::read_text_file(config_path, &text));
  PAGODA_ASSIGN_OR_RETURN(model.config, parse_hf_config(text, config_path));
  ModelConfig& c = model.config;

  PAGODA_RETURN_IF_ERROR(apply_special_ids(join_path(dir, "tokenizer_config.json"),
                                           /*fill_only=*/true, &c.bos_token_id, &c.eos_token_ids));
  PAGODA_RETURN_IF_ERROR(apply_special_ids(join_path(dir, "generation_config.json"),
                                           /*fill_only=*/false, &c.bos_token_id, &c.eos_token_ids));
  PAGODA_RETURN_IF_ERROR(c.validate(dir));

  const std::string index_path = join_path(dir, "model.safetensors.index.json");
  const std::string single_path = join_path(dir, "model.safetensors");
  if (is_regular_file(index_path)) {
    PAGODA_RETURN_IF_ERROR(load_safetensors_index(index_path, &model.weights));
  } else if (is_regular_file(single_path)) {
    PAGODA_RETURN_IF_ERROR(load_safetensors(single_path, &model.weights));
  } else if (is_regular_file(join_path(dir, "pytorch_model.bin")) ||
             is_regular_file(join_path(dir, "pytorch_model.bin.index.json"))) {
    return Unimplemented(dir +
                         " holds PyTorch pickle weights (pytorch_model.bin); pagoda reads "
                         "safetensors only");
  } else {
    return NotFound(dir + " has neither model.safetensors nor model.safetensors.index.json");
  }

  PAGODA_RETURN_IF_ERROR(fuse_layer_weights(&model));  // one GEMM for q/k/v, one for gate/up

  const std::string tokenizer = join_path(dir, "tokenizer.model");
  if (is_regular_file(tokenizer)) model.tokenizer_path = tokenizer;
  return model;
}

}  // namespace pagoda
