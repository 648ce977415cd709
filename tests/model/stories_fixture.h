// Test fixtures holding the real stories260K model (weights only; or with its tokenizer and a
// CPU backend, for tests that run the Engine), loaded once per test suite.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/engine.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {

// The stories260K weights alone (no backend, no tokenizer: tests that run under the sanitizers,
// which the SentencePiece shim cannot), loaded once per test suite.
class StoriesWeightsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = load_model(std::string(PAGODA_SOURCE_DIR) + "/assets/models/stories260K");
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    loaded_ = new LoadedModel(std::move(loaded).value());
  }
  static void TearDownTestSuite() {
    delete loaded_;
    loaded_ = nullptr;
  }

  static inline LoadedModel* loaded_ = nullptr;
};

class StoriesModelTest : public StoriesWeightsTest {
 protected:
  static void SetUpTestSuite() {
    StoriesWeightsTest::SetUpTestSuite();
    if (loaded_ == nullptr) return;
    backend_ = make_backend("cpu", 2).value().release();
    model_ = LlamaModel::create(*loaded_, backend_).value().release();
    tokenizer_ = load_sentencepiece_tokenizer(loaded_->tokenizer_path).value().release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete model_;
    delete backend_;
    tokenizer_ = nullptr;
    model_ = nullptr;
    backend_ = nullptr;
    StoriesWeightsTest::TearDownTestSuite();
  }

  static inline Backend* backend_ = nullptr;
  static inline LlamaModel* model_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
};

}  // namespace pagoda
