// Unit tests for Error/Result: messages, errno, context and the early-return macros.
#include "base/result.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

Result<int> Half(int value) {
  if (value % 2 != 0) return Error("odd value " + std::to_string(value), EINVAL);
  return value / 2;
}

Result<int> Quarter(int value) {
  TERN_ASSIGN_OR_RETURN(int half, Half(value));
  return Half(half);
}

TEST(ResultTest, CarriesValueOrError) {
  EXPECT_EQ(*Quarter(8), 2);
  auto odd = Quarter(6);
  ASSERT_FALSE(odd.ok());
  EXPECT_EQ(odd.error().message(), "odd value 3");
  EXPECT_EQ(odd.error().errno_value(), EINVAL);
}

TEST(ResultTest, StrerrorOnlyForSystemCalls) {
  EXPECT_EQ(Error("kernel image is not a bzImage", EINVAL).ToString(),
            "kernel image is not a bzImage");
  errno = ENOENT;
  Error error = Error::FromErrno("open /x").WithContext("kernel");
  EXPECT_EQ(error.ToString(), "kernel: open /x: No such file or directory");
  EXPECT_EQ(error.errno_value(), ENOENT);
}

}  // namespace
}  // namespace tern
