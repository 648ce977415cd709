// IncrementalDetokenizer: the deltas of push() plus flush() concatenate to Tokenizer::decode
// (that is, SentencePiece's own decoder) for many sequences, and each delta is valid UTF-8.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

const std::string kSourceDir = PAGODA_SOURCE_DIR;
const std::string kStoriesModel = kSourceDir + "/assets/models/stories260K/tokenizer.model";
const std::string kLlama2Model = kSourceDir + "/assets/tokenizers/llama2/tokenizer.model";

// Strict UTF-8: shortest form, no surrogates, at most U+10FFFF.
bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      n = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto t = static_cast<unsigned char>(s[i + k]);
      if ((t & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (t & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return false;
    i += n;
  }
  return true;
}

// Streams ids through a fresh detokenizer and checks it against decode(); returns the deltas.
std::vector<std::string> check_stream(const Tokenizer& tok, const std::vector<int>& ids) {
  std::string trace = "ids:";
  for (int id : ids) trace.append(" ").append(std::to_string(id));
  SCOPED_TRACE(trace);
  IncrementalDetokenizer detok(&tok);
  std::vector<std::string> deltas;
  std::string joined;
  for (int id : ids) {
    deltas.push_back(detok.push(id));
    EXPECT_TRUE(is_valid_utf8(deltas.back())) << "delta after id " << id;
    joined += deltas.back();
  }
  deltas.push_back(detok.flush());
  EXPECT_TRUE(is_valid_utf8(deltas.back())) << "flush";
  joined += deltas.back();
  EXPECT_EQ(joined, tok.decode(ids));
  return deltas;
}

class IncrementalDetokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tok = load_sentencepiece_tokenizer(GetParam());
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    tok_ = std::move(tok).value();
    space_ = -1;
    for (int id = 0; id < tok_->vocab_size(); ++id) {
      if (tok_->piece_kind(id) == Tokenizer::PieceKind::kNormal && tok_->piece_bytes(id) == " ") {
        space_ = id;
      }
    }
  }
  int byte_id(unsigned char b) const { return 3 + b; }  // <0x00> is id 3 in both models
  std::vector<int> encode(const std::string& text, bool bos = false) const {
    auto ids = tok_->encode(text, bos);
    EXPECT_TRUE(ids.ok());
    return ids.ok() ? *ids : std::vector<int>{};
  }

  std::unique_ptr<Tokenizer> tok_;
  int space_ = -1;  // the "▁" piece
};

TEST_P(IncrementalDetokenizerTest, EdgeCasesMatchDecode) {
  ASSERT_GE(space_, 0);
  const int a = encode("a")[0];  // "▁a"
  const int unk = 0, bos = 1, eos = 2;
  const std::vector<std::vector<int>> cases = {
      {},
      {bos},
      {space_},
      {space_, a},
      {space_, space_, a},
      {bos, space_, a},
      {space_, bos, a},
      {a, a},
      {bos, a, eos, a},
      {byte_id(' '), a},
      {byte_id('A'), a},
      {unk, a},
      {a, unk, a},
      {byte_id(0xE2)},
      {byte_id(0xE2), byte_id(0x82)},
      {byte_id(0xE2), byte_id(0x82), byte_id(0xAC)},
      {byte_id(0xE2), eos, byte_id(0x82), byte_id(0xAC)},
      {byte_id(0xE2), a},
      {byte_id(0xE2), bos, a},
      {byte_id(0x82), byte_id(0xE2), byte_id(0x82), byte_id(0xAC)},
      {byte_id(0xE2), byte_id(0xE2), byte_id(0x82), byte_id(0xAC)},
      {byte_id(0xE0), byte_id(0x80), byte_id(0x80)},                 // overlong
      {byte_id(0xED), byte_id(0xA0), byte_id(0x80)},                 // surrogate
      {byte_id(0xF4), byte_id(0x90), byte_id(0x80), byte_id(0x80)},  // above U+10FFFF
      {byte_id(0xF0), byte_id(0x9F), byte_id(0x98)},                 // cut emoji
      {byte_id(0xEF), byte_id(0xBF), byte_id(0xBD)},                 // a real U+FFFD
      {byte_id(0xC0), byte_id(0x80), a},
      {byte_id(0xFF), byte_id(0xF8), space_, a},
      {bos, byte_id(0xE2), byte_id(0x82), byte_id(0xAC), a},
      {-1, a, tok_->vocab_size(), a},
  };
  for (const auto& ids : cases) check_stream(*tok_, ids);
}

TEST_P(IncrementalDetokenizerTest, HoldsBackSplitCharacters) {
  // "😀" is spelled in byte pieces by tok512 and by Llama 2: F0 9F 98 80.
  const std::vector<int> ids = {byte_id(0xF0), byte_id(0x9F), byte_id(0x98), byte_id(0x80)};
  const auto deltas = check_stream(*tok_, ids);
  EXPECT_EQ(deltas, (std::vector<std::string>{"", "", "", "\xF0\x9F\x98\x80", ""}));
  // Cut short, the held bytes come out of flush() as U+FFFD, as SentencePiece decodes them.
  IncrementalDetokenizer detok(tok_.get());
  EXPECT_EQ(detok.push(byte_id(0xF0)), "");
  EXPECT_EQ(detok.push(byte_id(0x9F)), "");
  EXPECT_EQ(detok.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_P(IncrementalDetokenizerTest, DropsOnlyTheFirstLeadingSpace) {
  const auto ids = encode("Once upon a time", /*bos=*/true);
  const auto deltas = check_stream(*tok_, ids);
  EXPECT_EQ(deltas[0], "");      // BOS
  EXPECT_EQ(deltas[1], "Once");  // "▁Once" at the start
  EXPECT_EQ(deltas[2], " upon");
}

TEST_P(IncrementalDetokenizerTest, EncodedTextWithMultiByteCharacters) {
  const std::vector<std::string> pool = {
      "Once upon a time",
      "caf\xC3\xA9",
      "\xF0\x9F\x98\x80",
      "\xF0\x9F\x8E\x89!",
      "\xE4\xB8\x96\xE7\x95\x8C",
      "na\xC3\xAFve",
      " ",
      "\n",
      "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
      "x y  z",
      "\xC3\x98resund",
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9",
      "Lily.",
      "5\xE2\x82\xAC",
  };
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<int> ids;
    const int parts = 1 + static_cast<int>(rng() % 5);
    for (int p = 0; p < parts; ++p) {
      const auto piece = encode(pool[rng() % pool.size()], rng() % 4 == 0);
      ids.insert(ids.end(), piece.begin(), piece.end());
      if (rng() % 6 == 0) ids.push_back(2);  // EOS in the middle
    }
    check_stream(*tok_, ids);
  }
}

TEST_P(IncrementalDetokenizerTest, RandomIdsOverTheWholeVocabulary) {
  std::mt19937 rng(42);
  const int vocab = tok_->vocab_size();
  for (int trial = 0; trial < 1500; ++trial) {
    const int length = static_cast<int>(rng() % 24);
    std::vector<int> ids;
    for (int i = 0; i < length; ++i) ids.push_back(static_cast<int>(rng() % vocab));
    check_stream(*tok_, ids);
  }
}

TEST_P(IncrementalDetokenizerTest, RandomIdsHeavyOnBytesAndSpaces) {
  ASSERT_GE(space_, 0);
  std::mt19937 rng(7);
  const int vocab = tok_->vocab_size();
  // Lead bytes and continuation bytes in proportions that often form whole characters.
  const std::vector<unsigned char> interesting = {0xC3, 0xE2, 0xE4, 0xF0, 0xF4, 0xED, 0xE0,
                                                  0x80, 0x82, 0x9F, 0xA9, 0xAC, 0xBF, 0x41,
                                                  0x20, 0xC0, 0xFF, 0x90, 0xA0, 0x98};
  for (int trial = 0; trial < 3000; ++trial) {
    const int length = static_cast<int>(rng() % 16);
    std::vector<int> ids;
    for (int i = 0; i < length; ++i) {
      const unsigned r = rng() % 20;
      if (r < 9) {
        ids.push_back(byte_id(interesting[rng() % interesting.size()]));
      } else if (r < 11) {
        ids.push_back(byte_id(static_cast<unsigned char>(rng())));
      } else if (r < 13) {
        ids.push_back(space_);
      } else if (r < 15) {
        ids.push_back(static_cast<int>(rng() % 3));  // unk, bos, eos
      } else {
        ids.push_back(static_cast<int>(rng() % vocab));
      }
    }
    check_stream(*tok_, ids);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, IncrementalDetokenizerTest,
                         ::testing::Values(kStoriesModel, kLlama2Model), [](const auto& info) {
                           return info.param == kStoriesModel ? std::string("stories260K")
                                                              : std::string("llama2");
                         });

TEST(IncrementalDetokenizer, StreamsReferenceGenerationsAfterThePrompt) {
  auto tok = load_sentencepiece_tokenizer(kStoriesModel);
  ASSERT_TRUE(tok.ok());
  std::ifstream in(kSourceDir + "/tests/data/stories260K_greedy.json");
  ASSERT_TRUE(in);
  const auto json = nlohmann::json::parse(in);
  for (const auto& c : json.at("cases")) {
    const auto prompt = c.at("prompt").get<std::string>();
    const auto text = c.at("text").get<std::string>();
    // The server's way: feed the prompt, keep what it decodes to, then stream the generation.
    IncrementalDetokenizer detok(tok->get());
    std::string prompt_text;
    for (int id : c.at("prompt_ids").get<std::vector<int>>()) prompt_text += detok.push(id);
    EXPECT_EQ(prompt_text, prompt);
    std::string streamed;
    for (int id : c.at("generated_ids").get<std::vector<int>>()) {
      const std::string delta = detok.push(id);
      EXPECT_TRUE(is_valid_utf8(delta));
      streamed += delta;
    }
    streamed += detok.flush();
    EXPECT_EQ(prompt_text + streamed, text);
  }
}

}  // namespace
}  // namespace pagoda
