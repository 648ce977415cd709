#include "models/loaders/safetensors.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "models/loaders/json_util.h"
#include "models/loaders/loader_util.h"

namespace pagoda {
namespace {

using json_util::Json;
using loader_util::shape_string;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section, [begin, end)
  uint64_t end = 0;
};

// F32/F16/BF16 are loaded; the other safetensors dtypes are recognised and refused.
Status parse_dtype_tag(const std::string& tag, const std::string& where, DType* out) {
  if (tag == "F32")
    *out = DType::kF32;
  else if (tag == "F16")
    *out = DType::kF16;
  else if (tag == "BF16")
    *out = DType::kBF16;
  else {
    static const std::set<std::string> kKnown = {
        "F64", "I64",  "U64",     "I32",     "U32",     "I16",     "U16",     "I8",
        "U8",  "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};
    if (kKnown.count(tag)) {
      return Unimplemented(where + " has dtype " + tag +
                           ", which pagoda does not load (F32, F16, BF16)");
    }
    return InvalidArgument(where + " has unknown dtype '" + tag + "'");
  }
  return OkStatus();
}

Status parse_entry(const std::string& name, const Json& v, const std::string& path,
                   uint64_t data_size, Entry* e) {
  const std::string where = path + ": tensor '" + name + "'";
  if (!v.is_object()) return InvalidArgument(where + ": header entry is not an object");
  e->name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) {
    return InvalidArgument(where + ": header entry needs a string 'dtype'");
  }
  PAGODA_RETURN_IF_ERROR(parse_dtype_tag(dt->get<std::string>(), where, &e->dtype));
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) {
    return InvalidArgument(where + ": header entry needs a 'shape' array");
  }
  for (const Json& d : *sh) {
    if (!d.is_number_unsigned()) {
      return InvalidArgument(where + ": shape " + sh->dump() + " must hold non-negative integers");
    }
    const uint64_t u = d.get<uint64_t>();
    if (u > (uint64_t{1} << 62))
      return InvalidArgument(where + ": shape " + sh->dump() + " is too large");
    e->shape.push_back(static_cast<int64_t>(u));
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return InvalidArgument(where + ": header entry needs 'data_offsets' [begin, end]");
  }
  e->begin = (*off)[0].get<uint64_t>();
  e->end = (*off)[1].get<uint64_t>();
  const std::string range = "[" + std::to_string(e->begin) + ", " + std::to_string(e->end) + ")";
  if (e->end < e->begin)
    return InvalidArgument(where + ": data_offsets " + range + " are reversed");
  if (e->end > data_size) {
    return DataLoss(where + ": data_offsets " + range + " run past the end of the data (" +
                    std::to_string(data_size) +
                    " bytes): the file is truncated or the header lies");
  }
  int64_t numel = 0;
  if (!loader_util::checked_numel(e->shape, &numel)) {
    return InvalidArgument(where + ": shape " + shape_string(e->shape) + " is too large");
  }
  const uint64_t need = static_cast<uint64_t>(numel) * dtype_size(e->dtype);
  if (e->end - e->begin != need) {
    return InvalidArgument(where + ": data_offsets " + range + " span " +
                           std::to_string(e->end - e->begin) + " bytes but shape " +
                           shape_string(e->shape) + " " + dt->get<std::string>() + " needs " +
                           std::to_string(need));
  }
  return OkStatus();
}

}  // namespace

Status load_safetensors(const std::string& path, WeightStore* store,
                        std::vector<std::string>* names) {
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::open(path));
  const uint8_t* bytes = file->data();
  const uint64_t size = file->size();
  if (size < 8) {
    return DataLoss(path + ": truncated: " + std::to_string(size) +
                    " bytes is too short for the 8-byte safetensors header length");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian
  if (header_len > size - 8) {
    return DataLoss(path + ": header length " + std::to_string(header_len) +
                    " runs past the end of the file (" + std::to_string(size) +
                    " bytes): truncated or not a safetensors file");
  }
  if (header_len > kMaxHeaderBytes) {
    return InvalidArgument(path + ": header length " + std::to_string(header_len) +
                           " exceeds the 100 MiB limit");
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  Json root = Json::parse(header, header + header_len, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return InvalidArgument(path + ": the safetensors header is not valid JSON");
  if (!root.is_object())
    return InvalidArgument(path + ": the safetensors header is not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  std::vector<Entry> entries;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return InvalidArgument(path + ": __metadata__ is not an object");
      continue;
    }
    Entry e;
    PAGODA_RETURN_IF_ERROR(parse_entry(it.key(), it.value(), path, data_size, &e));
    entries.push_back(std::move(e));
  }

  // No two tensors may share bytes (empty tensors take none).
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) {
    if (e.end > e.begin) by_offset.push_back(&e);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& a = *by_offset[i - 1];
    const Entry& b = *by_offset[i];
    if (b.begin < a.end) {
      return InvalidArgument(path + ": tensors '" + a.name + "' [" + std::to_string(a.begin) +
                             ", " + std::to_string(a.end) + ") and '" + b.name + "' [" +
                             std::to_string(b.begin) + ", " + std::to_string(b.end) +
                             ") overlap: the header lies about data_offsets");
    }
  }

  for (const Entry& e : entries) {
    PAGODA_RETURN_IF_ERROR(loader_util::add_tensor(store, e.name, bytes + data_start + e.begin,
                                                   e.dtype, e.shape, path));
    if (names != nullptr) names->push_back(e.name);
  }
  store->keep_alive(std::move(file));
  return OkStatus();
}

Status load_safetensors_index(const std::string& index_path, WeightStore* store) {
  std::string text;
  PAGODA_RETURN_IF_ERROR(json_util::read_text_file(index_path, &text));
  PAGODA_ASSIGN_OR_RETURN(Json root, json_util::parse_object(text, index_path));
  auto wm = root.find("weight_map");
  if (wm == root.end() || !wm->is_object() || wm->empty()) {
    return InvalidArgument(index_path + ": needs a non-empty 'weight_map' object");
  }
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> tensor names
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) {
      return InvalidArgument(index_path + ": weight_map entry for '" + it.key() +
                             "' is not a file name");
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard[0] == '/' || shard.find("..") != std::string::npos) {
      return InvalidArgument(index_path + ": weight_map entry for '" + it.key() +
                             "' names an unusable shard '" + shard + "'");
    }
    by_shard[shard].push_back(it.key());
  }
  const std::string dir = loader_util::dir_name(index_path);
  for (const auto& [shard, expected] : by_shard) {
    const std::string shard_path = loader_util::join_path(dir, shard);
    std::vector<std::string> loaded;
    PAGODA_RETURN_IF_ERROR(load_safetensors(shard_path, store, &loaded));
    const std::set<std::string> have(loaded.begin(), loaded.end());
    for (const std::string& name : expected) {
      if (!have.count(name)) {
        return NotFound(shard_path + ": tensor '" + name + "' is missing, though " + index_path +
                        " maps it to this shard");
      }
    }
  }
  return OkStatus();
}

}  // namespace pagoda
