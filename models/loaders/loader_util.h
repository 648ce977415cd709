// Helpers shared by the checkpoint loaders. Internal to pagoda_model_files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "models/weights.h"

namespace pagoda::loader_util {

// "a/b" from ("a", "b"); `name` unchanged when it is absolute.
std::string join_path(const std::string& dir, const std::string& name);
// The folder part of a path ("." when there is none).
std::string dir_name(const std::string& path);
bool is_regular_file(const std::string& path);
bool is_directory(const std::string& path);

// "[2, 3]"
std::string shape_string(const std::vector<int64_t>& shape);

// Number of elements of `shape`; false on a negative dim or int64 overflow.
bool checked_numel(const std::vector<int64_t>& shape, int64_t* numel);

// Adds a tensor whose bytes live at `data` (inside a mapping the store keeps alive). When `data`
// is not aligned to the element size, the bytes are copied into an owned buffer instead.
// A duplicate name is InvalidArgument naming `source`.
Status add_tensor(WeightStore* store, const std::string& name, const uint8_t* data, DType dtype,
                  const std::vector<int64_t>& shape, const std::string& source);

}  // namespace pagoda::loader_util
