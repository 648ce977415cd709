// pagoda::client: a C++ client for the pagoda.v1.Generation gRPC API and the standard health
// service. The public types are plain C++ (no protobuf or gRPC types), every call returns a
// pagoda::Status / StatusOr, and nothing throws. A Client is thread-safe: one instance (one
// HTTP/2 connection) serves any number of concurrent calls from any threads.
//
//   auto client = pagoda::client::Client::connect("127.0.0.1:50051", {});
//   if (!client.ok()) ... client.status().to_string() ...
//   pagoda::client::GenerateOptions req;
//   req.text = "Once upon a time";
//   req.max_tokens = 64;
//   pagoda::client::GenerateResult result;
//   auto status = (*client)->generate(req, [](const pagoda::client::Chunk& c) {
//     std::cout << c.text << std::flush;
//     return true;  // false cancels the request
//   }, &result);
//
// Errors: the server's gRPC status becomes a pagoda::Status (see rpc_status.h): the code maps to
// the pagoda code of the same name, and rpc_code(status) gives back the exact gRPC code (e.g.
// DEADLINE_EXCEEDED, which core/status.h has no code for).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clients/cpp/rpc_status.h"
#include "core/status.h"

namespace pagoda::client {

using Metadata = std::vector<std::pair<std::string, std::string>>;

// Per-call settings. Unset fields fall back to the ClientOptions defaults.
struct CallOptions {
  // The call fails with DEADLINE_EXCEEDED after this long (and the server aborts the request).
  // Unset: ClientOptions::default_deadline; zero or negative: no deadline.
  std::optional<std::chrono::milliseconds> deadline;
  // Sent in addition to ClientOptions::metadata. Keys are lower-case ASCII, e.g.
  // {"authorization", "Bearer KEY"}.
  Metadata metadata;
};

struct ClientOptions {
  // connect() waits this long for the connection to come up and fails with UNAVAILABLE if it
  // does not. Zero: connect lazily on the first call (connect() never fails for a dead server).
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds default_deadline{0};  // zero: no deadline
  Metadata metadata;                              // sent with every call
  int max_receive_message_bytes = 64 << 20;
};

enum class FinishReason {
  kUnspecified = 0,  // not finished (a streamed chunk that is not the last)
  kLength,           // max_tokens or the context limit
  kStop,             // end-of-sequence or a stop token id
  kStopSequence,     // a stop string
  kCancelled,
  kTimeLimit,
  kContentFilter,
  kError,
};
// "length", "stop", ... ("unspecified" for kUnspecified).
const char* finish_reason_name(FinishReason reason);

// One request. Unset optionals take the server's defaults (documented in generation.proto).
struct GenerateOptions {
  std::string model;                          // empty: the served model
  std::string text;                           // the input, unless token_ids is set
  std::optional<std::vector<int>> token_ids;  // token-id input; no BOS is added
  std::optional<bool> add_bos;                // text input only; server default true

  // Sampling.
  std::optional<float> temperature;  // 0: greedy
  std::optional<int> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<float> presence_penalty;
  std::optional<float> frequency_penalty;
  std::optional<uint64_t> seed;

  // Stopping.
  std::optional<int> max_tokens;
  std::vector<std::string> stop;  // stop strings (never part of the text)
  std::vector<int> stop_token_ids;
  bool ignore_eos = false;

  bool return_token_ids = false;  // fill Chunk::token_ids / GenerateResult::token_ids
  int logprobs = 0;               // top alternatives per token (0: no logprobs at all)
  int priority = 0;
  std::string cache_salt;

  CallOptions call;
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;
};

struct Timings {
  double queue_seconds = 0;
  double first_token_seconds = 0;
  double decode_seconds = 0;
  double total_seconds = 0;
};

struct TopLogprob {
  int token_id = 0;
  float logprob = 0;
  std::string token;
};

struct TokenLogprob {
  int token_id = 0;
  float logprob = 0;
  std::vector<TopLogprob> top;
};

// One streamed message, as received.
struct Chunk {
  std::string request_id;
  std::string text;                                         // the text delta
  std::vector<int> token_ids;                               // when return_token_ids
  std::vector<TokenLogprob> logprobs;                       // when logprobs were requested
  Usage usage;                                              // so far
  FinishReason finish_reason = FinishReason::kUnspecified;  // set on the last chunk only
  bool is_final() const { return finish_reason != FinishReason::kUnspecified; }
};

// A whole completion: the unary answer, or the chunks of a stream put together.
struct GenerateResult {
  std::string request_id;
  std::string text;
  std::vector<int> token_ids;  // when return_token_ids
  std::vector<TokenLogprob> logprobs;
  Usage usage;
  FinishReason finish_reason = FinishReason::kUnspecified;
  Timings timings;
  std::string model_id;
  std::string model_revision;
  int chunks = 0;  // messages received (1 for complete())
};

struct ModelInfo {
  std::string id;
  std::string revision;  // content hash of the weights (hex)
  int context_length = 0;
  int vocab_size = 0;
  std::string dtype;
  std::string architecture;
  std::string backend;
  int max_logprobs = 0;  // the most logprobs a request may ask for
};

struct ServerInfo {
  int running = 0;
  int waiting = 0;
  double kv_cache_usage = 0;
  double uptime_seconds = 0;
  std::string version;
  uint64_t preemptions = 0;
  double prefix_cache_hit_rate = 0;
  int num_kv_blocks = 0;
  int kv_blocks_in_use = 0;
  bool draining = false;
};

// The grpc.health.v1 service names pagoda serves.
inline constexpr const char* kLivenessService = "";
inline constexpr const char* kReadinessService = "pagoda.v1.Generation";

class Client {
 public:
  // target: "host:port" (or any gRPC target URI). Plain-text channel.
  static StatusOr<std::unique_ptr<Client>> connect(const std::string& target,
                                                   const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Unary Complete: the whole text in one answer.
  StatusOr<GenerateResult> complete(const GenerateOptions& options);

  // Streaming Generate. on_chunk (may be empty) runs on the calling thread for every message
  // received, the final one included; returning false cancels the request (the server aborts it)
  // and generate() returns CANCELLED (on the final message it changes nothing). `final` (may be
  // null) receives everything put together, also when the call fails part-way (then with what
  // arrived before the failure).
  Status generate(const GenerateOptions& options, const std::function<bool(const Chunk&)>& on_chunk,
                  GenerateResult* final);

  StatusOr<std::vector<int>> tokenize(const std::string& text, bool add_bos = true,
                                      const CallOptions& call = {});
  StatusOr<std::string> detokenize(const std::vector<int>& ids, const CallOptions& call = {});
  StatusOr<ModelInfo> model_info(const CallOptions& call = {});
  StatusOr<ServerInfo> server_info(const CallOptions& call = {});

  // grpc.health.v1.Health/Check: true for SERVING, false for NOT_SERVING (or UNKNOWN); an
  // unknown service name is NOT_FOUND. kLivenessService / kReadinessService.
  StatusOr<bool> healthy(const std::string& service = kReadinessService,
                         const CallOptions& call = {});

  const std::string& target() const { return target_; }

 private:
  struct Impl;
  Client(std::string target, std::unique_ptr<Impl> impl);

  std::string target_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pagoda::client
