// The Generation API through the C++ client against a real `pagoda serve` with the bundled
// stories260K: unary vs streaming, the llama2.c greedy reference, usage accounting,
// tokenization, model info and bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/e2e_cpp/server_fixture.h"

namespace pagoda::e2e {
namespace {

using client::Chunk;
using client::FinishReason;
using client::GenerateOptions;
using client::GenerateResult;
using client::RpcCode;
using ::testing::HasSubstr;

struct ReferenceCase {
  std::string prompt, text;
  int steps = 0;
  std::vector<int> prompt_ids, generated_ids;
};

std::vector<ReferenceCase> load_reference() {
  std::ifstream in(std::string(PAGODA_SOURCE_DIR) + "/tests/data/stories260K_greedy.json");
  const auto j = nlohmann::json::parse(in);
  std::vector<ReferenceCase> cases;
  for (const auto& c : j.at("cases")) {
    cases.push_back({c.at("prompt").get<std::string>(), c.at("text").get<std::string>(),
                     c.at("steps").get<int>(), c.at("prompt_ids").get<std::vector<int>>(),
                     c.at("generated_ids").get<std::vector<int>>()});
  }
  return cases;
}

// Streams `options`, checking each chunk's shape on the way.
GenerateResult stream(client::Client& c, const GenerateOptions& options,
                      std::vector<Chunk>* chunks = nullptr) {
  GenerateResult result;
  int finals = 0;
  const Status status = c.generate(
      options,
      [&](const Chunk& chunk) {
        if (chunk.is_final()) ++finals;
        EXPECT_EQ(finals, chunk.is_final() ? 1 : 0) << "a chunk after the final one";
        if (chunks) chunks->push_back(chunk);
        return true;
      },
      &result);
  EXPECT_TRUE(status.ok()) << status.to_string();
  EXPECT_EQ(finals, 1);
  return result;
}

class GenerationTest : public ServerSuite {};

TEST_F(GenerationTest, CompleteAndGenerateGiveTheSameTextAndIds) {
  GenerateOptions greedy;
  greedy.text = "Once upon a time";
  greedy.temperature = 0.0f;
  greedy.max_tokens = 60;
  greedy.return_token_ids = true;
  GenerateOptions seeded = greedy;
  seeded.temperature = 0.9f;
  seeded.top_p = 0.95f;
  seeded.seed = 42;
  for (const GenerateOptions& options : {greedy, seeded}) {
    auto unary = client().complete(options);
    ASSERT_TRUE(unary.ok()) << unary.status().to_string();
    std::vector<Chunk> chunks;
    const GenerateResult streamed = stream(client(), options, &chunks);
    EXPECT_FALSE(unary->text.empty());
    EXPECT_EQ(streamed.text, unary->text);
    EXPECT_EQ(streamed.token_ids, unary->token_ids);
    EXPECT_EQ(static_cast<int>(unary->token_ids.size()), unary->usage.completion_tokens);
    EXPECT_EQ(streamed.finish_reason, unary->finish_reason);
    EXPECT_NE(unary->finish_reason, FinishReason::kUnspecified);
    EXPECT_EQ(streamed.usage.prompt_tokens, unary->usage.prompt_tokens);
    EXPECT_EQ(streamed.usage.completion_tokens, unary->usage.completion_tokens);
    EXPECT_GT(chunks.size(), 1u) << "Generate should stream, not answer once";
    EXPECT_EQ(unary->model_id, "stories260K");
    EXPECT_EQ(streamed.model_id, "stories260K");
    EXPECT_FALSE(streamed.model_revision.empty());
    EXPECT_FALSE(streamed.request_id.empty());
    EXPECT_NE(streamed.request_id, unary->request_id);
    EXPECT_GT(streamed.timings.total_seconds, 0.0);
    EXPECT_GE(streamed.timings.total_seconds, streamed.timings.first_token_seconds);
  }
}

// llama2.c's run.c (greedy, fp32) through the wire: token-id input, every id equal.
TEST_F(GenerationTest, GreedyMatchesTheLlama2cReference) {
  const auto cases = load_reference();
  ASSERT_FALSE(cases.empty());
  for (const ReferenceCase& c : cases) {
    GenerateOptions options;
    options.token_ids = c.prompt_ids;
    options.temperature = 0.0f;
    options.ignore_eos = true;
    options.stop_token_ids = {1};
    options.max_tokens = c.steps - static_cast<int>(c.prompt_ids.size()) + 1;
    options.return_token_ids = true;
    const GenerateResult result = stream(client(), options);
    EXPECT_EQ(result.token_ids, c.generated_ids) << "prompt '" << c.prompt << "'";
    EXPECT_EQ(result.usage.prompt_tokens, static_cast<int>(c.prompt_ids.size()));
    EXPECT_EQ(result.usage.completion_tokens, static_cast<int>(c.generated_ids.size()));
    const bool stopped_on_bos = !c.generated_ids.empty() && c.generated_ids.back() == 1;
    EXPECT_EQ(result.finish_reason, stopped_on_bos ? FinishReason::kStop : FinishReason::kLength)
        << client::finish_reason_name(result.finish_reason);
    if (!c.prompt.empty()) {
      EXPECT_EQ(c.prompt + result.text, c.text) << c.prompt;
    }
  }
}

TEST_F(GenerationTest, UsageAddsUp) {
  const std::string text = "Lily and Ben went to the park";
  auto prompt_ids = client().tokenize(text, /*add_bos=*/true);
  ASSERT_TRUE(prompt_ids.ok()) << prompt_ids.status().to_string();
  GenerateOptions options;
  options.text = text;
  options.max_tokens = 50;
  options.seed = 3;
  options.return_token_ids = true;
  std::vector<Chunk> chunks;
  const GenerateResult result = stream(client(), options, &chunks);
  int ids_so_far = 0;
  for (const Chunk& chunk : chunks) {
    ids_so_far += static_cast<int>(chunk.token_ids.size());
    EXPECT_EQ(chunk.usage.prompt_tokens, static_cast<int>(prompt_ids->size()));
    EXPECT_EQ(chunk.usage.completion_tokens, ids_so_far) << "usage so far, chunk by chunk";
  }
  EXPECT_EQ(result.usage.prompt_tokens, static_cast<int>(prompt_ids->size()));
  EXPECT_EQ(result.usage.completion_tokens, static_cast<int>(result.token_ids.size()));
  EXPECT_GE(result.usage.completion_tokens, 1);
  EXPECT_LE(result.usage.completion_tokens, 50);
  EXPECT_LE(result.usage.cached_tokens, result.usage.prompt_tokens);
  if (result.finish_reason == FinishReason::kLength) {
    EXPECT_EQ(result.usage.completion_tokens, 50);
  }

  // Without BOS the prompt is one token shorter.
  options.add_bos = false;
  const GenerateResult no_bos = stream(client(), options);
  EXPECT_EQ(no_bos.usage.prompt_tokens, static_cast<int>(prompt_ids->size()) - 1);
}

TEST_F(GenerationTest, TokenizeDetokenizeRoundTrip) {
  for (const std::string text :
       {"Once upon a time", "Lily and Ben went to the park.", "a\nb c", "\"Hi!\" she said."}) {
    auto with_bos = client().tokenize(text, true);
    ASSERT_TRUE(with_bos.ok()) << with_bos.status().to_string();
    auto ids = client().tokenize(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    ASSERT_FALSE(ids->empty());
    ASSERT_EQ(with_bos->size(), ids->size() + 1);
    EXPECT_EQ(with_bos->front(), 1) << "BOS";
    EXPECT_TRUE(std::equal(ids->begin(), ids->end(), with_bos->begin() + 1));
    auto back = client().detokenize(*ids);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(*back, text);
  }
  auto reference = load_reference();
  auto ids = client().tokenize(reference[0].prompt, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, reference[0].prompt_ids) << "sentencepiece ids as llama2.c has them";
}

TEST_F(GenerationTest, TokenizeBadInputIsInvalidArgument) {
  auto bad_utf8 = client().tokenize("abc\xff", true);
  ASSERT_FALSE(bad_utf8.ok());
  EXPECT_EQ(client::rpc_code(bad_utf8.status()), RpcCode::kInvalidArgument)
      << bad_utf8.status().to_string();
  EXPECT_THAT(bad_utf8.status().message(), HasSubstr("text"));
  auto out_of_vocab = client().detokenize({1, 512});
  ASSERT_FALSE(out_of_vocab.ok());
  EXPECT_EQ(client::rpc_code(out_of_vocab.status()), RpcCode::kInvalidArgument)
      << out_of_vocab.status().to_string();
  EXPECT_THAT(out_of_vocab.status().message(), HasSubstr("token_ids"));
}

TEST_F(GenerationTest, ModelInfoIsSane) {
  auto info = client().model_info();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->id, "stories260K");
  EXPECT_EQ(info->vocab_size, 512);
  EXPECT_EQ(info->context_length, 512);
  EXPECT_EQ(info->architecture, "llama");
  EXPECT_EQ(info->max_logprobs, 20);  // pagoda serve's default
  EXPECT_FALSE(info->dtype.empty());
  EXPECT_FALSE(info->backend.empty());
  ASSERT_FALSE(info->revision.empty());
  EXPECT_GE(info->revision.size(), 8u);
  EXPECT_EQ(info->revision.find_first_not_of("0123456789abcdef"), std::string::npos)
      << "revision should be lower-case hex: " << info->revision;
  auto again = client().model_info();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->revision, info->revision);

  auto server = client().server_info();
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  EXPECT_GT(server->num_kv_blocks, 0);
  EXPECT_GE(server->uptime_seconds, 0.0);
  EXPECT_FALSE(server->version.empty());
  EXPECT_FALSE(server->draining);
}

// Each bad request is INVALID_ARGUMENT through both RPCs, and the message names the field.
TEST_F(GenerationTest, BadInputIsInvalidArgumentNamingTheField) {
  struct Case {
    const char* name;
    const char* field;  // must appear in the message
    GenerateOptions options;
  };
  std::vector<Case> cases;
  auto add = [&](const char* name, const char* field, auto edit) {
    GenerateOptions o;
    o.text = "Once upon a time";
    o.max_tokens = 8;
    edit(o);
    cases.push_back({name, field, o});
  };
  add("empty text", "text", [](GenerateOptions& o) { o.text = ""; });
  add("top_p 1.5", "top_p", [](GenerateOptions& o) { o.top_p = 1.5f; });
  add("unknown model", "model", [](GenerateOptions& o) { o.model = "no-such-model"; });
  add("empty token ids", "token_ids", [](GenerateOptions& o) { o.token_ids.emplace(); });
  add("token id >= vocab", "token_ids", [](GenerateOptions& o) { o.token_ids = {1, 512}; });
  add("negative temperature", "temperature", [](GenerateOptions& o) { o.temperature = -1.0f; });
  add("max_tokens 0", "max_tokens", [](GenerateOptions& o) { o.max_tokens = 0; });
  add("logprobs 21", "logprobs", [](GenerateOptions& o) { o.logprobs = 21; });
  add("invalid UTF-8", "text", [](GenerateOptions& o) { o.text = "abc\xff\xfe"; });
  add("prompt ids beyond the context", "token_ids",
      [](GenerateOptions& o) { o.token_ids = std::vector<int>(600, 5); });
  add("prompt text beyond the context", "text", [](GenerateOptions& o) {
    o.text.clear();
    for (int i = 0; i < 300; ++i) o.text += "Once upon a time ";
  });

  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto unary = client().complete(c.options);
    ASSERT_FALSE(unary.ok());
    EXPECT_EQ(unary.status().code(), StatusCode::kInvalidArgument) << unary.status().to_string();
    EXPECT_EQ(client::rpc_code(unary.status()), RpcCode::kInvalidArgument);
    EXPECT_THAT(unary.status().message(), HasSubstr(c.field));

    int chunks = 0;
    const Status streamed = client().generate(
        c.options,
        [&](const Chunk&) {
          ++chunks;
          return true;
        },
        nullptr);
    EXPECT_EQ(streamed.code(), StatusCode::kInvalidArgument) << streamed.to_string();
    EXPECT_THAT(streamed.message(), HasSubstr(c.field));
    EXPECT_EQ(chunks, 0);
  }
  // Still serving.
  GenerateOptions fine;
  fine.text = "Once upon a time";
  fine.max_tokens = 4;
  auto ok = client().complete(fine);
  EXPECT_TRUE(ok.ok()) << ok.status().to_string();
}

TEST_F(GenerationTest, HealthServingForLivenessAndReadiness) {
  auto live = client().healthy(client::kLivenessService);
  ASSERT_TRUE(live.ok()) << live.status().to_string();
  EXPECT_TRUE(*live);
  auto ready = client().healthy(client::kReadinessService);
  ASSERT_TRUE(ready.ok()) << ready.status().to_string();
  EXPECT_TRUE(*ready);
  auto unknown = client().healthy("no.such.Service");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(client::rpc_code(unknown.status()), RpcCode::kNotFound) << unknown.status().to_string();
}

}  // namespace
}  // namespace pagoda::e2e
