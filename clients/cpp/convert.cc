#include "clients/cpp/convert.h"

#include <cstdint>
#include <string>

namespace pagoda::client::internal {
namespace {

Status negative(const std::string& field, long long value, const char* expected) {
  return InvalidArgument(field + ": must be " + expected + ", got " + std::to_string(value));
}

TokenLogprob to_logprob(const pagoda::v1::TokenLogprob& p) {
  TokenLogprob out;
  out.token_id = static_cast<int>(p.token_id());
  out.logprob = p.logprob();
  out.top.reserve(p.top_size());
  for (const auto& t : p.top()) {
    out.top.push_back({static_cast<int>(t.token_id()), t.logprob(), t.token()});
  }
  return out;
}

Usage to_usage(const pagoda::v1::Usage& u) {
  return {static_cast<int>(u.prompt_tokens()), static_cast<int>(u.completion_tokens()),
          static_cast<int>(u.cached_tokens())};
}

// Protobuf varints, for the two health messages.
void put_varint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

bool get_varint(std::string_view bytes, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < bytes.size(); shift += 7) {
    const auto byte = static_cast<uint8_t>(bytes[(*pos)++]);
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

StatusOr<pagoda::v1::GenerateRequest> to_proto(const GenerateOptions& o) {
  pagoda::v1::GenerateRequest req;
  req.set_model(o.model);
  if (o.token_ids) {
    auto* ids = req.mutable_token_ids();  // set even when empty: the server says what is wrong
    ids->mutable_ids()->Reserve(static_cast<int>(o.token_ids->size()));
    for (size_t i = 0; i < o.token_ids->size(); ++i) {
      const int id = (*o.token_ids)[i];
      if (id < 0) return negative("token_ids[" + std::to_string(i) + "]", id, ">= 0");
      ids->add_ids(static_cast<uint32_t>(id));
    }
  } else {
    req.set_text(o.text);
  }
  if (o.add_bos) req.set_add_bos(*o.add_bos);

  auto* s = req.mutable_sampling();
  if (o.temperature) s->set_temperature(*o.temperature);
  if (o.top_k) s->set_top_k(*o.top_k);
  if (o.top_p) s->set_top_p(*o.top_p);
  if (o.min_p) s->set_min_p(*o.min_p);
  if (o.repetition_penalty) s->set_repetition_penalty(*o.repetition_penalty);
  if (o.presence_penalty) s->set_presence_penalty(*o.presence_penalty);
  if (o.frequency_penalty) s->set_frequency_penalty(*o.frequency_penalty);
  if (o.seed) s->set_seed(*o.seed);

  auto* stop = req.mutable_stop();
  if (o.max_tokens) {
    // 0 goes through (the server names it); negatives do not fit the wire's uint32.
    if (*o.max_tokens < 0) return negative("stop.max_tokens", *o.max_tokens, ">= 1");
    stop->set_max_tokens(static_cast<uint32_t>(*o.max_tokens));
  }
  for (const auto& text : o.stop) stop->add_stop(text);
  for (size_t i = 0; i < o.stop_token_ids.size(); ++i) {
    const int id = o.stop_token_ids[i];
    if (id < 0) return negative("stop.stop_token_ids[" + std::to_string(i) + "]", id, ">= 0");
    stop->add_stop_token_ids(static_cast<uint32_t>(id));
  }
  stop->set_ignore_eos(o.ignore_eos);

  req.set_return_token_ids(o.return_token_ids);
  if (o.logprobs < 0) return negative("logprobs", o.logprobs, "in [0, 20] (0 means none)");
  req.set_logprobs(static_cast<uint32_t>(o.logprobs));
  req.set_priority(o.priority);
  req.set_cache_salt(o.cache_salt);
  return req;
}

FinishReason from_proto(pagoda::v1::FinishReason reason) {
  switch (reason) {
    case pagoda::v1::FINISH_REASON_LENGTH: return FinishReason::kLength;
    case pagoda::v1::FINISH_REASON_STOP: return FinishReason::kStop;
    case pagoda::v1::FINISH_REASON_STOP_SEQUENCE: return FinishReason::kStopSequence;
    case pagoda::v1::FINISH_REASON_CANCELLED: return FinishReason::kCancelled;
    case pagoda::v1::FINISH_REASON_TIME_LIMIT: return FinishReason::kTimeLimit;
    case pagoda::v1::FINISH_REASON_CONTENT_FILTER: return FinishReason::kContentFilter;
    case pagoda::v1::FINISH_REASON_ERROR: return FinishReason::kError;
    default: return FinishReason::kUnspecified;
  }
}

Chunk to_chunk(const pagoda::v1::GenerateResponse& r) {
  Chunk c;
  c.request_id = r.request_id();
  c.text = r.text();
  c.token_ids.assign(r.token_ids().begin(), r.token_ids().end());
  c.logprobs.reserve(r.logprobs_size());
  for (const auto& p : r.logprobs()) c.logprobs.push_back(to_logprob(p));
  c.usage = to_usage(r.usage());
  c.finish_reason = from_proto(r.finish_reason());
  return c;
}

void append(const pagoda::v1::GenerateResponse& r, GenerateResult* result) {
  ++result->chunks;
  if (!r.request_id().empty()) result->request_id = r.request_id();
  result->text += r.text();
  result->token_ids.insert(result->token_ids.end(), r.token_ids().begin(), r.token_ids().end());
  for (const auto& p : r.logprobs()) result->logprobs.push_back(to_logprob(p));
  if (r.has_usage()) result->usage = to_usage(r.usage());
  if (r.finish_reason() != pagoda::v1::FINISH_REASON_UNSPECIFIED) {
    result->finish_reason = from_proto(r.finish_reason());
  }
  if (r.has_timings()) {
    const auto& t = r.timings();
    result->timings = {t.queue_seconds(), t.first_token_seconds(), t.decode_seconds(),
                       t.total_seconds()};
  }
  if (!r.model_id().empty()) result->model_id = r.model_id();
  if (!r.model_revision().empty()) result->model_revision = r.model_revision();
}

ModelInfo from_proto(const pagoda::v1::ModelInfo& m) {
  return {m.id(),
          m.revision(),
          static_cast<int>(m.context_length()),
          static_cast<int>(m.vocab_size()),
          m.dtype(),
          m.architecture(),
          m.backend(),
          static_cast<int>(m.max_logprobs())};
}

ServerInfo from_proto(const pagoda::v1::ServerInfo& s) {
  ServerInfo out;
  out.running = static_cast<int>(s.running());
  out.waiting = static_cast<int>(s.waiting());
  out.kv_cache_usage = s.kv_cache_usage();
  out.uptime_seconds = s.uptime_seconds();
  out.version = s.version();
  out.preemptions = s.preemptions();
  out.prefix_cache_hit_rate = s.prefix_cache_hit_rate();
  out.num_kv_blocks = static_cast<int>(s.num_kv_blocks());
  out.kv_blocks_in_use = static_cast<int>(s.kv_blocks_in_use());
  out.draining = s.draining();
  return out;
}

std::string encode_health_request(std::string_view service) {
  std::string out;
  if (service.empty()) return out;  // proto3 leaves a default string off the wire
  out.push_back(0x0a);              // field 1, wire type 2 (length-delimited)
  put_varint(service.size(), &out);
  out.append(service);
  return out;
}

StatusOr<int> decode_health_response(std::string_view bytes) {
  int status = 0;
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint64_t key = 0;
    if (!get_varint(bytes, &pos, &key)) break;
    const uint64_t field = key >> 3, wire = key & 7;
    uint64_t value = 0;
    if (wire == 0) {  // varint
      if (!get_varint(bytes, &pos, &value)) break;
      if (field == 1) status = static_cast<int>(value);
    } else if (wire == 2) {  // length-delimited: skip
      if (!get_varint(bytes, &pos, &value) || value > bytes.size() - pos) break;
      pos += value;
    } else if (wire == 1 || wire == 5) {  // fixed64 / fixed32: skip
      const size_t n = wire == 1 ? 8 : 4;
      if (n > bytes.size() - pos) break;
      pos += n;
    } else {
      break;
    }
    if (pos == bytes.size()) return status;
  }
  if (bytes.empty()) return status;
  return DataLoss("grpc.health.v1.HealthCheckResponse: malformed message (" +
                  std::to_string(bytes.size()) + " bytes)");
}

}  // namespace pagoda::client::internal
