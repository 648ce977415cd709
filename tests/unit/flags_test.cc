#include "core/flags.h"

#include <gtest/gtest.h>

namespace pagoda {
namespace {

TEST(FlagsTest, ParsesValuesAndSwitches) {
  auto f = Flags::parse({"--a", "1", "--b=2.5", "--on"}, {"a", "b", "c"}, {"on"});
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(*f->get_int("a", 0, 0, 10), 1);
  EXPECT_DOUBLE_EQ(*f->get_double("b", 0, 0, 10), 2.5);
  EXPECT_EQ(*f->get_int("c", 7, 0, 10), 7);
  EXPECT_TRUE(f->has("on"));
}

TEST(FlagsTest, ErrorsNameTheFlag) {
  auto expect_error = [](std::vector<std::string> args, const std::string& needle) {
    auto f = Flags::parse(args, {"n", "x"}, {"s"});
    std::string msg;
    if (!f.ok()) {
      msg = f.status().message();
    } else {
      auto i = f->get_int("n", 0, 1, 100);
      auto d = f->get_double("x", 0, 0, 1);
      msg = !i.ok() ? i.status().message() : (!d.ok() ? d.status().message() : "");
    }
    EXPECT_NE(msg.find(needle), std::string::npos) << "args give: '" << msg << "'";
  };
  expect_error({"--bogus", "1"}, "unknown flag --bogus");
  expect_error({"--n"}, "--n needs a value");
  expect_error({"--n", "12abc"}, "--n must be an integer");
  expect_error({"--n", "0"}, "--n must be in [1, 100]");
  expect_error({"--x", "nan"}, "--x must be a number");
  expect_error({"--x", "2"}, "--x must be in");
  expect_error({"--n", "1", "--n", "2"}, "given twice");
  expect_error({"--s=1"}, "takes no value");
  expect_error({"stray"}, "unexpected argument 'stray'");
}

}  // namespace
}  // namespace pagoda
