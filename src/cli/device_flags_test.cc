// Tests of the --disk and --net flag parsers.
#include "cli/device_flags.h"

#include <gtest/gtest.h>

namespace tern::cli {
namespace {

TEST(ParseKeyValuesTest, SplitsItemsAndUnescapesDoubleCommas) {
  auto values = ParseKeyValues("--disk", "path=/a,,b,readonly=on", {"path", "readonly"});
  ASSERT_TRUE(values.ok()) << values.error().ToString();
  EXPECT_EQ((*values)["path"], "/a,b");
  EXPECT_EQ((*values)["readonly"], "on");
}

TEST(ParseKeyValuesTest, RejectsMalformedLists) {
  for (const char* text : {"", "path", "=x", "path=a,", "path=a,path=b", "size=1"}) {
    auto values = ParseKeyValues("--disk", text, {"path", "readonly"});
    ASSERT_FALSE(values.ok()) << text;
    EXPECT_EQ(values.error().errno_value(), EINVAL);
    EXPECT_EQ(values.error().message().rfind("--disk: ", 0), 0u) << values.error().message();
  }
  EXPECT_NE(ParseKeyValues("--disk", "size=1", {"path", "readonly"})
                .error()
                .message()
                .find("keys: path, readonly"),
            std::string::npos);
}

TEST(ParseDiskFlagTest, PathAndReadOnly) {
  auto disk = ParseDiskFlag("path=/images/root.raw");
  ASSERT_TRUE(disk.ok());
  EXPECT_EQ(disk->path, "/images/root.raw");
  EXPECT_FALSE(disk->read_only);
  disk = ParseDiskFlag("readonly=on,path=x");
  ASSERT_TRUE(disk.ok());
  EXPECT_TRUE(disk->read_only);
  EXPECT_FALSE(ParseDiskFlag("readonly=on").ok());
  EXPECT_FALSE(ParseDiskFlag("path=").ok());
  EXPECT_FALSE(ParseDiskFlag("path=x,readonly=maybe").ok());
}

TEST(ParseNetFlagTest, TapAndMac) {
  auto net = ParseNetFlag("tap=tap0,mac=52:54:00:12:34:56");
  ASSERT_TRUE(net.ok()) << net.error().ToString();
  EXPECT_EQ(net->tap, "tap0");
  ASSERT_TRUE(net->mac.has_value());
  EXPECT_EQ((*net->mac)[5], 0x56);
  net = ParseNetFlag("tap=tap1");
  ASSERT_TRUE(net.ok());
  EXPECT_FALSE(net->mac.has_value());
  EXPECT_FALSE(ParseNetFlag("mac=52:54:00:12:34:56").ok());
  EXPECT_FALSE(ParseNetFlag("tap=averyveryverylongname").ok());
  EXPECT_FALSE(ParseNetFlag("tap=a/b").ok());
  auto bad_mac = ParseNetFlag("tap=tap0,mac=ff:ff:ff:ff:ff:ff");
  ASSERT_FALSE(bad_mac.ok());
  EXPECT_EQ(bad_mac.error().message().rfind("--net: ", 0), 0u);
}

}  // namespace
}  // namespace tern::cli
