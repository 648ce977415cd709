#include "models/loaders/json_util.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace pagoda::json_util {
namespace {

std::string type_of(const Json& v) {
  return v.type_name();
}

Status missing(const char* key, const std::string& source) {
  return InvalidArgument(source + ": required key '" + key + "' is missing");
}

Status wrong_type(const char* key, const std::string& source, const char* want, const Json& v) {
  return InvalidArgument(source + ": key '" + key + "' must be " + want + ", got " + type_of(v) +
                         " " + v.dump());
}

// Fetches obj[key]; *value is null when absent or null.
Status lookup(const Json& obj, const char* key, const std::string& source, Need need,
              const Json** value) {
  *value = nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return need == Need::kRequired ? missing(key, source) : OkStatus();
  }
  *value = &*it;
  return OkStatus();
}

Status to_int(const Json& v, const char* key, const std::string& source, int* out) {
  if (!v.is_number_integer()) return wrong_type(key, source, "an integer", v);
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return InvalidArgument(source + ": key '" + key + "' is out of range: " + v.dump());
    }
    *out = static_cast<int>(u);
    return OkStatus();
  }
  const int64_t i = v.get<int64_t>();
  if (i < std::numeric_limits<int>::min() || i > std::numeric_limits<int>::max()) {
    return InvalidArgument(source + ": key '" + key + "' is out of range: " + v.dump());
  }
  *out = static_cast<int>(i);
  return OkStatus();
}

}  // namespace

StatusOr<Json> parse_object(const std::string& text, const std::string& source) {
  Json j = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(source + ": invalid JSON");
  if (!j.is_object()) {
    return InvalidArgument(source + ": expected a JSON object at the top level, got " + type_of(j));
  }
  return j;
}

bool has(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && !it->is_null();
}

Status read_int(const Json& obj, const char* key, const std::string& source, Need need, int* out) {
  const Json* v = nullptr;
  PAGODA_RETURN_IF_ERROR(lookup(obj, key, source, need, &v));
  return v == nullptr ? OkStatus() : to_int(*v, key, source, out);
}

Status read_float(const Json& obj, const char* key, const std::string& source, Need need,
                  float* out) {
  const Json* v = nullptr;
  PAGODA_RETURN_IF_ERROR(lookup(obj, key, source, need, &v));
  if (v == nullptr) return OkStatus();
  if (!v->is_number()) return wrong_type(key, source, "a number", *v);
  *out = static_cast<float>(v->get<double>());
  return OkStatus();
}

Status read_bool(const Json& obj, const char* key, const std::string& source, Need need,
                 bool* out) {
  const Json* v = nullptr;
  PAGODA_RETURN_IF_ERROR(lookup(obj, key, source, need, &v));
  if (v == nullptr) return OkStatus();
  if (!v->is_boolean()) return wrong_type(key, source, "a boolean", *v);
  *out = v->get<bool>();
  return OkStatus();
}

Status read_string(const Json& obj, const char* key, const std::string& source, Need need,
                   std::string* out) {
  const Json* v = nullptr;
  PAGODA_RETURN_IF_ERROR(lookup(obj, key, source, need, &v));
  if (v == nullptr) return OkStatus();
  if (!v->is_string()) return wrong_type(key, source, "a string", *v);
  *out = v->get<std::string>();
  return OkStatus();
}

Status read_token_ids(const Json& obj, const char* key, const std::string& source,
                      std::vector<int>* out) {
  const Json* v = nullptr;
  PAGODA_RETURN_IF_ERROR(lookup(obj, key, source, Need::kOptional, &v));
  if (v == nullptr) return OkStatus();
  std::vector<int> ids;
  if (v->is_array()) {
    for (const Json& e : *v) {
      int id = 0;
      if (!e.is_number_integer())
        return wrong_type(key, source, "an integer or a list of integers", *v);
      PAGODA_RETURN_IF_ERROR(to_int(e, key, source, &id));
      ids.push_back(id);
    }
  } else {
    int id = 0;
    if (!v->is_number_integer())
      return wrong_type(key, source, "an integer or a list of integers", *v);
    PAGODA_RETURN_IF_ERROR(to_int(*v, key, source, &id));
    ids.push_back(id);
  }
  *out = std::move(ids);
  return OkStatus();
}

Status read_text_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return DataLoss("error while reading " + path);
  *out = ss.str();
  return OkStatus();
}

}  // namespace pagoda::json_util
