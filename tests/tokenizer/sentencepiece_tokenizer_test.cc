// SentencePiece tokenizer against independent facts: token ids from SOURCES.md and from
// llama2.c's run.c (tests/data/stories260K_greedy.json), Llama 2 ids as published by Hugging
// Face, and round trips.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

const std::string kSourceDir = PAGODA_SOURCE_DIR;
const std::string kStoriesModel = kSourceDir + "/assets/models/stories260K/tokenizer.model";
const std::string kLlama2Model = kSourceDir + "/assets/tokenizers/llama2/tokenizer.model";
const std::string kGreedyJson = kSourceDir + "/tests/data/stories260K_greedy.json";

std::unique_ptr<Tokenizer> load_or_die(const std::string& path) {
  auto tokenizer = load_sentencepiece_tokenizer(path);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  if (!tokenizer.ok()) return nullptr;
  return std::move(tokenizer).value();
}

TEST(SentencePieceTokenizer, StoriesModelBasics) {
  auto tok = load_or_die(kStoriesModel);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // tok512 removes extra whitespace: every space a text starts with is dropped on decode.
  EXPECT_EQ(tok->leading_space(), Tokenizer::LeadingSpace::kStripAll);
}

TEST(SentencePieceTokenizer, StoriesEncodeMatchesSourcesFact) {
  auto tok = load_or_die(kStoriesModel);
  ASSERT_NE(tok, nullptr);
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  auto ids = tok->encode(text, /*add_bos=*/true);
  ASSERT_TRUE(ids.ok());
  const std::vector<int> expected = {1,   403, 407, 261, 378, 432, 383, 286,
                                     261, 376, 298, 315, 421, 395, 317, 426};
  EXPECT_EQ(*ids, expected);
  auto no_bos = tok->encode(text, /*add_bos=*/false);
  ASSERT_TRUE(no_bos.ok());
  EXPECT_EQ(*no_bos, std::vector<int>(expected.begin() + 1, expected.end()));
  EXPECT_EQ(tok->decode(*ids), text);
}

TEST(SentencePieceTokenizer, StoriesMatchesLlama2cReference) {
  auto tok = load_or_die(kStoriesModel);
  ASSERT_NE(tok, nullptr);
  std::ifstream in(kGreedyJson);
  ASSERT_TRUE(in) << kGreedyJson;
  const auto json = nlohmann::json::parse(in);
  ASSERT_GE(json.at("cases").size(), 3u);
  for (const auto& c : json.at("cases")) {
    const std::string prompt = c.at("prompt").get<std::string>();
    const auto prompt_ids = c.at("prompt_ids").get<std::vector<int>>();
    const auto generated = c.at("generated_ids").get<std::vector<int>>();
    const std::string text = c.at("text").get<std::string>();
    SCOPED_TRACE("prompt \"" + prompt + "\"");

    auto ids = tok->encode(prompt, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, prompt_ids);  // the empty prompt gives just [BOS]

    // `text` is what run.c printed: the prompt followed by the generated pieces, i.e. the
    // decode of prompt and generation together, and the prompt plus the generation's decode.
    std::vector<int> all = prompt_ids;
    all.insert(all.end(), generated.begin(), generated.end());
    EXPECT_EQ(tok->decode(all), text);
    EXPECT_EQ(prompt + tok->decode(generated), text);
    EXPECT_EQ(tok->decode(prompt_ids), prompt);
  }
}

TEST(SentencePieceTokenizer, StoriesByteFallback) {
  auto tok = load_or_die(kStoriesModel);
  ASSERT_NE(tok, nullptr);
  const std::string text = "caf\xC3\xA9 \xF0\x9F\x98\x80 \xE4\xB8\x96\xE7\x95\x8C";  // café 😀 世界
  auto ids = tok->encode(text, false);
  ASSERT_TRUE(ids.ok());
  int byte_pieces = 0;
  for (int id : *ids) {
    EXPECT_NE(id, 0) << "no <unk>: the model falls back to bytes";
    if (tok->piece_kind(id) == Tokenizer::PieceKind::kByte) ++byte_pieces;
  }
  EXPECT_GE(byte_pieces, 10);  // the emoji and both CJK characters are spelled in bytes
  EXPECT_EQ(tok->decode(*ids), text);
  // tok512 collapses runs of spaces and trims the ends.
  auto spaced = tok->encode("  a   b  ", false);
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ(tok->decode(*spaced), "a b");
}

TEST(SentencePieceTokenizer, PieceBytes) {
  auto tok = load_or_die(kStoriesModel);
  ASSERT_NE(tok, nullptr);
  using Kind = Tokenizer::PieceKind;
  EXPECT_EQ(tok->piece_kind(1), Kind::kControl);
  EXPECT_EQ(tok->piece_bytes(1), "");
  EXPECT_EQ(tok->piece_bytes(2), "");
  EXPECT_EQ(tok->piece_kind(0), Kind::kUnknown);
  EXPECT_EQ(tok->piece_bytes(0), tok->decode({0}));  // whatever SentencePiece shows for <unk>
  EXPECT_FALSE(tok->piece_bytes(0).empty());
  // Byte pieces <0x00>..<0xFF> are ids 3..258 in both models.
  EXPECT_EQ(tok->piece_kind(3 + 0x0A), Kind::kByte);
  EXPECT_EQ(tok->piece_bytes(3 + 0x0A), "\n");
  EXPECT_EQ(tok->piece_bytes(3 + 0xE2), std::string(1, '\xE2'));
  // 261 is "▁a", 403 is "▁Once".
  EXPECT_EQ(tok->piece_kind(261), Kind::kNormal);
  EXPECT_EQ(tok->piece_bytes(261), " a");
  EXPECT_EQ(tok->piece_bytes(403), " Once");
  EXPECT_EQ(tok->piece_bytes(-1), "");
  EXPECT_EQ(tok->piece_bytes(512), "");
  EXPECT_EQ(tok->decode({-5, 403, 100000}), "Once");  // out-of-range ids are dropped
}

TEST(SentencePieceTokenizer, Llama2Basics) {
  auto tok = load_or_die(kLlama2Model);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->leading_space(), Tokenizer::LeadingSpace::kStripFirst);
  // As Hugging Face's LlamaTokenizer gives it.
  auto ids = tok->encode("Hello world", true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int>{1, 15043, 3186}));
  EXPECT_EQ(tok->piece_bytes(15043), " Hello");
}

TEST(SentencePieceTokenizer, Llama2RoundTrips) {
  auto tok = load_or_die(kLlama2Model);
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> texts = {
      "Hello, world! The quick brown fox jumps over the lazy dog.",
      "Ça va? Crème brûlée, naïve façade, Øresund, Straße, Ελληνικά, русский",
      "日本語のテキストと中文的文本，还有한국어。",
      "emoji \xF0\x9F\x98\x80\xF0\x9F\x8E\x89 thumbs \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD family "
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
      "  two leading spaces, tabs\tand\nnewlines\n\n  kept",
      "x",
      "",
  };
  for (const std::string& text : texts) {
    SCOPED_TRACE(text);
    auto ids = tok->encode(text, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok());
    ASSERT_FALSE(ids->empty());
    EXPECT_EQ(ids->front(), 1);
    for (int id : *ids) EXPECT_NE(id, 0) << "byte fallback, so no <unk>";
    EXPECT_EQ(tok->decode(*ids), text);
  }
}

class TempFile {
 public:
  explicit TempFile(const std::string& name, const std::string& contents)
      : path_(std::filesystem::temp_directory_path() /
              ("pagoda_tok_test_" + std::to_string(::getpid()) + "_" + name)) {
    std::ofstream(path_, std::ios::binary) << contents;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

TEST(SentencePieceTokenizer, MissingFileIsNotFound) {
  const std::string path = kSourceDir + "/assets/no/such/tokenizer.model";
  auto tok = load_sentencepiece_tokenizer(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status().message();
}

TEST(SentencePieceTokenizer, GarbageFilesAreInvalid) {
  std::string binary;
  for (int i = 0; i < 4096; ++i) binary += static_cast<char>((i * 2654435761u) >> 13);
  const TempFile garbage("garbage.model", binary);
  const TempFile text("text.model", "this is not a protobuf, it is a sentence.\n");
  const TempFile empty("empty.model", "");
  for (const auto* file : {&garbage, &text, &empty}) {
    auto tok = load_sentencepiece_tokenizer(file->path());
    ASSERT_FALSE(tok.ok()) << file->path();
    EXPECT_EQ(tok.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(tok.status().message().find(file->path()), std::string::npos)
        << tok.status().message();
  }
  auto dir = load_sentencepiece_tokenizer(kSourceDir + "/assets");
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("/assets"), std::string::npos);
}

}  // namespace
}  // namespace pagoda
