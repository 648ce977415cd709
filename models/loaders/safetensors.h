// safetensors: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32"|"F16"|"BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the data; offsets are relative to the start of the data (8 + N). Tensors become zero-copy
// views into a read-only mapping of the file that the WeightStore keeps alive.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "models/weights.h"

namespace pagoda {

// Maps `path`, checks the header against the file (dtypes, shapes, offsets in bounds, sizes,
// no overlaps) and adds every tensor to *store. The names added go to *names when non-null.
// Errors name the file and the tensor: NotFound (no file), DataLoss (truncated file),
// InvalidArgument (inconsistent header), Unimplemented (a dtype other than F32/F16/BF16).
Status load_safetensors(const std::string& path, WeightStore* store,
                        std::vector<std::string>* names = nullptr);

// Loads every shard listed in the "weight_map" of a model.safetensors.index.json (shards are
// relative to the index's folder). A tensor the index maps to a shard that lacks it is NotFound.
Status load_safetensors_index(const std::string& index_path, WeightStore* store);

}  // namespace pagoda
