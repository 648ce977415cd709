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
  std::string pending_;  // bytes of an incomplete UTF-8 character
  bool at_start_ = true;
};

}  // namespace pagoda
