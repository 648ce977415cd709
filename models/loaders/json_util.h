// Small helpers over nlohmann::json that turn missing keys and wrong types into Status errors
// naming the file and the key. Internal to pagoda_model_files (nlohmann is linked privately).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace pagoda::json_util {

using Json = nlohmann::json;

enum class Need { kRequired, kOptional };

// Parses `text` (never throws); InvalidArgument naming `source` unless it is a JSON object.
StatusOr<Json> parse_object(const std::string& text, const std::string& source);

// True when `obj` has `key` with a non-null value.
bool has(const Json& obj, const char* key);

// Each reader leaves *out unchanged when an optional key is absent or null; a required key that
// is absent or null, or a value of the wrong type or range, is InvalidArgument naming both.
Status read_int(const Json& obj, const char* key, const std::string& source, Need need, int* out);
Status read_float(const Json& obj, const char* key, const std::string& source, Need need,
                  float* out);
Status read_bool(const Json& obj, const char* key, const std::string& source, Need need, bool* out);
Status read_string(const Json& obj, const char* key, const std::string& source, Need need,
                   std::string* out);
// An integer or a list of integers (eos_token_id); *out is replaced when the key is present.
Status read_token_ids(const Json& obj, const char* key, const std::string& source,
                      std::vector<int>* out);

// Reads a whole file into *out; NotFound / DataLoss naming the path.
Status read_text_file(const std::string& path, std::string* out);

}  // namespace pagoda::json_util
