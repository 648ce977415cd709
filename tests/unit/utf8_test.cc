#include "core/utf8.h"

#include <gtest/gtest.h>

namespace pagoda {
namespace {

TEST(Utf8Test, AcceptsWellFormedAndRejectsIllFormed) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain ascii"));
  EXPECT_TRUE(valid_utf8("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(valid_utf8("\xFF"));
  EXPECT_FALSE(valid_utf8("\xC3"));              // truncated
  EXPECT_FALSE(valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(valid_utf8("a\x80z"));            // stray continuation byte
}

TEST(Utf8Test, SanitizeReplacesEachBadByte) {
  EXPECT_EQ(sanitize_utf8("a\xFFz"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(sanitize_utf8("\xC3"), "\xEF\xBF\xBD");
  EXPECT_EQ(sanitize_utf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_TRUE(valid_utf8(sanitize_utf8("\xED\xA0\x80\xF4\x90\x80\x80 x")));
}

}  // namespace
}  // namespace pagoda
