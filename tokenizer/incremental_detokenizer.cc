// IncrementalDetokenizer: decode one id at a time so that the concatenated deltas equal
// Tokenizer::decode of the whole sequence. It replays SentencePiece's decoder as a state
// machine (see tokenizer/README.md):
//   - a run of byte pieces is turned into UTF-8 characters left to right; a byte that does not
//     start a valid character becomes U+FFFD; any non-byte piece (control ones included) ends
//     the run, so an incomplete character at its end becomes one U+FFFD per byte;
//   - the leading space of a normal piece is dropped while the decoded text is still empty
//     (and, for LeadingSpace::kStripFirst, no earlier piece has had its space dropped).
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace pagoda {
namespace {

constexpr char kReplacementCharacter[] = "\xEF\xBF\xBD";  // U+FFFD

bool is_trail_byte(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

bool is_valid_codepoint(uint32_t c) {
  return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF);
}

// Bytes the character starting with `lead` needs, by SentencePiece's reading of lead bytes (1
// for bytes that cannot start a character).
size_t needed_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

// SentencePiece's string_util::IsValidDecodeUTF8 on the start of `s` (non-empty): true with the
// character's length when `s` starts with a valid, shortest-form, non-surrogate character.
bool decode_utf8(const std::string& s, size_t* length) {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = needed_length(b[0]);
  *length = 1;
  if (n == 1) return b[0] < 0x80;
  if (s.size() < n) return false;
  for (size_t i = 1; i < n; ++i) {
    if (!is_trail_byte(b[i])) return false;
  }
  uint32_t cp = 0;
  uint32_t min = 0;
  if (n == 2) {
    cp = ((b[0] & 0x1Fu) << 6) | (b[1] & 0x3Fu);
    min = 0x80;
  } else if (n == 3) {
    cp = ((b[0] & 0x0Fu) << 12) | ((b[1] & 0x3Fu) << 6) | (b[2] & 0x3Fu);
    min = 0x800;
  } else {
    cp = ((b[0] & 0x07u) << 18) | ((b[1] & 0x3Fu) << 12) | ((b[2] & 0x3Fu) << 6) | (b[3] & 0x3Fu);
    min = 0x10000;
  }
  if (cp < min || !is_valid_codepoint(cp)) return false;
  *length = n;
  return true;
}

}  // namespace

void IncrementalDetokenizer::drain(std::string& out, bool final) {
  size_t start = 0;
  while (start < pending_.size()) {
    const auto lead = static_cast<unsigned char>(pending_[start]);
    const size_t have = pending_.size() - start;
    if (!final && have < needed_length(lead)) {
      // Hold the tail back while it may still become a character. Once a byte in it is not a
      // continuation byte it cannot, and the decision below is already the final one.
      bool may_complete = true;
      for (size_t i = start + 1; i < pending_.size(); ++i) {
        may_complete = may_complete && is_trail_byte(static_cast<unsigned char>(pending_[i]));
      }
      if (may_complete) break;
    }
    size_t length = 1;
    const std::string rest = pending_.substr(start, 4);
    if (decode_utf8(rest, &length)) {
      out.append(rest, 0, length);
    } else {
      out += kReplacementCharacter;
    }
    start += length;
  }
  pending_.erase(0, start);
}

std::string IncrementalDetokenizer::push(int id) {
  using PieceKind = Tokenizer::PieceKind;
  using LeadingSpace = Tokenizer::LeadingSpace;
  std::string out;
  if (id < 0 || id >= tokenizer_->vocab_size()) return out;  // decode drops such ids too
  const PieceKind kind = tokenizer_->piece_kind(id);
  if (kind == PieceKind::kByte) {
    pending_ += tokenizer_->piece_bytes(id);
    drain(out, /*final=*/false);
    any_text_ = any_text_ || !out.empty();
    return out;
  }

  drain(out, /*final=*/true);  // any other piece ends a run of byte pieces
  any_text_ = any_text_ || !out.empty();
  if (space_stripped_ || any_text_) at_start_ = false;

  std::string piece = kind == PieceKind::kControl ? std::string() : tokenizer_->piece_bytes(id);
  space_stripped_ = false;
  const LeadingSpace rule = tokenizer_->leading_space();
  if (kind == PieceKind::kNormal && at_start_ && rule != LeadingSpace::kKeep && !piece.empty() &&
      piece[0] == ' ') {
    piece.erase(0, 1);
    space_stripped_ = rule == LeadingSpace::kStripFirst;
  }
  any_text_ = any_text_ || !piece.empty();
  out += piece;
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  drain(out, /*final=*/true);
  any_text_ = any_text_ || !out.empty();
  return out;
}

}  // namespace pagoda
