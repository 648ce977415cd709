// Built instead of sentencepiece_tokenizer.cc when libsentencepiece is not available.
#include "tokenizer/tokenizer.h"

namespace pagoda {

StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& path) {
  return Unimplemented("cannot load " + path + ": this build has no SentencePiece (install libsentencepiece-dev and rebuild)");
}

}  // namespace pagoda
