// The SentencePiece tokenizer: a thin layer over sentencepiece::SentencePieceProcessor that
// also describes every piece (kind and raw bytes) for IncrementalDetokenizer.
#include <sentencepiece_processor.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "tokenizer/tokenizer.h"

#include <cstdio>

namespace pagoda {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, SentencePiece's "▁"

std::string replace_space_symbol(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  size_t pos = 0;
  while (pos < piece.size()) {
    if (piece.substr(pos, kSpaceSymbol.size()) == kSpaceSymbol) {
      out += ' ';
      pos += kSpaceSymbol.size();
    } else {
      out += piece[pos++];
    }
  }
  return out;
}

// "<0xAB>" -> 0xAB; -1 if the piece is not in that form.
int byte_piece_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  Status load(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      return NotFound("tokenizer model not found: " + path);
    }
    if (!std::filesystem::is_regular_file(path, ec)) {
      return InvalidArgument("tokenizer model is not a regular file: " + path);
    }
    const auto status = sp_.Load(path);
    if (!status.ok()) {
      return InvalidArgument("not a SentencePiece model: " + path + " (" + status.ToString() + ")");
    }
    if (sp_.GetPieceSize() <= 0) {
      return InvalidArgument("SentencePiece model has no pieces: " + path);
    }
    describe_pieces();
    return OkStatus();
  }

  StatusOr<std::vector<int>> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) return InvalidArgument("cannot tokenize text: " + status.ToString());
    if (add_bos && sp_.bos_id() >= 0) ids.insert(ids.begin(), sp_.bos_id());
    return ids;
  }

  std::string decode(const std::vector<int>& ids) const override {
    // SentencePiece rejects the whole sequence for one bad id; drop such ids instead, as
    // IncrementalDetokenizer does.
    std::vector<int> valid;
    valid.reserve(ids.size());
    for (int id : ids) {
      if (id >= 0 && id < vocab_size()) valid.push_back(id);
    }
    return sp_.DecodeIds(valid);
  }

  std::string piece_bytes(int id) const override {
    if (id < 0 || id >= vocab_size()) return "";
    return bytes_[id];
  }

  PieceKind piece_kind(int id) const override {
    if (id < 0 || id >= vocab_size()) return PieceKind::kControl;
    return kinds_[id];
  }

  LeadingSpace leading_space() const override { return leading_space_; }
  int vocab_size() const override { return static_cast<int>(bytes_.size()); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }

 private:
  void describe_pieces() {
    const int n = sp_.GetPieceSize();
    kinds_.resize(n);
    bytes_.resize(n);
    for (int id = 0; id < n; ++id) {
      const std::string& piece = sp_.IdToPiece(id);
      const int byte = sp_.IsByte(id) ? byte_piece_value(piece) : -1;
      if (sp_.IsControl(id)) {
        kinds_[id] = PieceKind::kControl;
      } else if (sp_.IsUnknown(id)) {
        // Whatever the model decodes <unk> to: " ⁇ " by default, or its trainer's unk_surface.
        kinds_[id] = PieceKind::kUnknown;
        bytes_[id] = sp_.DecodeIds({id});
      } else if (byte >= 0) {
        kinds_[id] = PieceKind::kByte;
        bytes_[id] = std::string(1, static_cast<char>(byte));
      } else {
        kinds_[id] = PieceKind::kNormal;
        bytes_[id] = replace_space_symbol(piece);
      }
    }
    leading_space_ = probe_leading_space();
  }

  // SentencePiece drops the space a sequence starts with depending on the model's normalizer
  // spec (add_dummy_prefix, remove_extra_whitespaces) and its own version. Rather than
  // re-deriving that rule, ask the library: decode a piece "▁x" alone, and "▁" then "▁x".
  LeadingSpace probe_leading_space() const {
    int spaced = -1;  // a normal piece "▁x..." (longer than "▁")
    for (int id = 0; id < vocab_size() && spaced < 0; ++id) {
      if (kinds_[id] == PieceKind::kNormal && bytes_[id].size() > 1 && bytes_[id][0] == ' ') {
        spaced = id;
      }
    }
    if (spaced < 0) return LeadingSpace::kKeep;  // no piece starts with a space: moot
    const std::string stripped = bytes_[spaced].substr(1);
    if (sp_.DecodeIds({spaced}) != stripped) return LeadingSpace::kKeep;
    const int space = sp_.PieceToId(kSpaceSymbol);
    if (space < 0 || space >= vocab_size() || kinds_[space] != PieceKind::kNormal ||
        bytes_[space] != " ") {
      return LeadingSpace::kStripFirst;  // without a "▁" piece the two rules agree
    }
    return sp_.DecodeIds({space, spaced}) == stripped ? LeadingSpace::kStripAll
                                                      : LeadingSpace::kStripFirst;
  }

  sentencepiece::SentencePieceProcessor sp_;
  std::vector<PieceKind> kinds_;
  std::vector<std::string> bytes_;
  LeadingSpace leading_space_ = LeadingSpace::kKeep;
};

}  // namespace

}  // namespace pagoda

// The one symbol this shared library exports (see tokenizer/CMakeLists.txt): a new tokenizer,
// or null with *code (a StatusCode) and message filled in.
extern "C" __attribute__((visibility("default"))) pagoda::Tokenizer* pagoda_spm_create(
    const char* path, int* code, char* message, size_t message_size) {
  auto tokenizer = std::make_unique<pagoda::SentencePieceTokenizer>();
  const pagoda::Status s = tokenizer->load(path);
  if (!s.ok()) {
    *code = static_cast<int>(s.code());
    std::snprintf(message, message_size, "%s", s.message().c_str());
    return nullptr;
  }
  return tokenizer.release();
}
