// Unit tests for Base64Encode/Base64Decode: RFC 4648 test vectors, binary bytes, bad input.
#include "cloud/base64.h"

#include <gtest/gtest.h>

namespace tern::cloud {
namespace {

TEST(Base64Test, Rfc4648Vectors) {
  const char* plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char* coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(Base64Encode(plain[i]), coded[i]);
    EXPECT_EQ(Base64Decode(coded[i]), plain[i]);
  }
  std::string binary("\0\xff\x10", 3);
  EXPECT_EQ(Base64Decode(Base64Encode(binary)), binary);
  EXPECT_EQ(Base64Decode("Zm9v\nYmFy\n"), "foobar");
}

TEST(Base64Test, RefusesMalformedText) {
  EXPECT_FALSE(Base64Decode("Zm9").has_value());
  EXPECT_FALSE(Base64Decode("!!!!").has_value());
}

}  // namespace
}  // namespace tern::cloud
