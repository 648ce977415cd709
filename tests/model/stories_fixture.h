// A test fixture holding the real stories260K model, its tokenizer and a CPU backend, loaded
// once per test suite, for tests that run the Engine.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/engine.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {

class StoriesModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = load_model(std::string(PAGODA_SOURCE_DIR) + "/assets/models/stories260K");
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    loaded_ = new LoadedModel(std::move(loaded).value());
    backend_ = make_backend("cpu", 2).value().release();
    model_ = LlamaModel::create(*loaded_, backend_).value().release();
    tokenizer_ = load_sentencepiece_tokenizer(loaded_->tokenizer_path).value().release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete model_;
    delete backend_;
    delete loaded_;
    tokenizer_ = nullptr;
    model_ = nullptr;
    backend_ = nullptr;
    loaded_ = nullptr;
  }

  static inline LoadedModel* loaded_ = nullptr;
  static inline Backend* backend_ = nullptr;
  static inline LlamaModel* model_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
};

}  // namespace pagoda
