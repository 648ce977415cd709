// Tokenizer: text <-> token ids. The SentencePiece implementation is the first; others (e.g.
// tokenizer.json BPE) plug in behind the same interface.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace pagoda {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text; prepends BOS when add_bos and the model has one.
  virtual StatusOr<std::vector<int>> encode(std::string_view text, bool add_bos) const = 0;
  // Decodes a whole sequence (special tokens dropped), as SentencePiece would.
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  // Raw bytes of one piece: "▁" turned into a space, byte-fallback pieces (<0x0A>) into their
  // byte, control tokens (BOS/EOS/UNK as control) into "". Used by IncrementalDetokenizer.
  virtual std::string piece_bytes(int id) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;  // -1 if none
  virtual int eos_id() const = 0;  // -1 if none

  // How decode treats one piece; IncrementalDetokenizer mirrors decode with it. kByte pieces
  // are assembled into UTF-8 across tokens (a run of them is cut by any other piece, and an
  // incomplete character becomes one U+FFFD per byte); kControl decodes to ""; kUnknown to
  // piece_bytes() verbatim (never stripped); kNormal pieces are complete UTF-8.
  enum class PieceKind { kNormal, kByte, kControl, kUnknown };
  virtual PieceKind piece_kind(int /*id*/) const { return PieceKind::kNormal; }

  // What decode does with the space that a kNormal piece at the start of the text begins with:
  // kKeep it; kStripFirst: drop it from the first such piece only; kStripAll: drop it from
  // every piece while the decoded text is still empty (models that remove extra whitespace).
  enum class LeadingSpace { kKeep, kStripFirst, kStripAll };
  virtual LeadingSpace leading_space() const { return LeadingSpace::kKeep; }
};

StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& path);

// Turns a stream of ids into text deltas that never split a UTF-8 character and follow
// SentencePiece's rule that the leading space of the very first piece is dropped.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}
  // Adds one id; returns the text that is now complete (possibly "").
  std::string push(int id);
  // Returns whatever is held back (an incomplete UTF-8 tail becomes U+FFFD).
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  // Resolves pending_ into `out` as SentencePiece resolves a run of byte pieces; unless
  // `final`, keeps back a tail that may still become a valid character.
  void drain(std::string& out, bool final);

  std::string pending_;   // bytes of an incomplete UTF-8 character
  bool at_start_ = true;  // a leading space may still be stripped (SentencePiece's is_bos_ws)
  bool space_stripped_ = false;  // the previous non-byte piece had its leading space stripped
  bool any_text_ = false;        // some text has been produced
};

}  // namespace pagoda
