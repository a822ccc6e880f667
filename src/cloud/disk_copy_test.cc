// Unit tests for CopyDisk: content, holes kept, independence of the copy, errors.
#include "cloud/disk_copy.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace tern::cloud {
namespace {

class CopyDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/disk-copy-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::string dir_;
};

TEST_F(CopyDiskTest, CopiesDataAndKeepsHoles) {
  std::string source = dir_ + "/ami.raw", copy = dir_ + "/root.raw";
  {
    int fd = ::open(source.c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_EQ(::ftruncate(fd, 64 << 20), 0);  // 64 MiB, two 4 KiB data blocks
    ASSERT_EQ(::pwrite(fd, "boot", 4, 0), 4);
    ASSERT_EQ(::pwrite(fd, "data", 4, 32 << 20), 4);
    ::close(fd);
  }
  Result<CopyKind> kind = CopyDisk(source, copy);
  ASSERT_TRUE(kind.ok()) << kind.error().ToString();
  EXPECT_EQ(Read(copy), Read(source));
  struct stat st {};
  ASSERT_EQ(::stat(copy.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 << 20);
  if (*kind == CopyKind::kSparse) {
    EXPECT_LT(st.st_blocks * 512, 1 << 20);  // holes stayed holes
  }

  std::ofstream(copy, std::ios::in | std::ios::out | std::ios::binary) << "XXXX";
  EXPECT_EQ(Read(source).substr(0, 4), "boot");  // writes to the copy never reach the source
}

TEST_F(CopyDiskTest, RefusesAnExistingDestinationAndLeavesItAlone) {
  std::string source = dir_ + "/a", copy = dir_ + "/b";
  std::ofstream(source) << "a";
  std::ofstream(copy) << "keep";
  Result<CopyKind> kind = CopyDisk(source, copy);
  ASSERT_FALSE(kind.ok());
  EXPECT_EQ(Read(copy), "keep");
}

TEST_F(CopyDiskTest, MissingSourceOrDirectoryIsAnError) {
  EXPECT_FALSE(CopyDisk(dir_ + "/none", dir_ + "/copy").ok());
  EXPECT_FALSE(CopyDisk(dir_, dir_ + "/copy").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/copy"));
}

}  // namespace
}  // namespace tern::cloud
