// Unit tests for the snapshot file helpers: whole-buffer reads and writes, and PendingFile's
// write-then-rename.
#include "snapshot/file_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <utility>

#include "snapshot/test_util.h"

namespace tern::snapshot {
namespace {

using testing::Exists;
using testing::ReadBytes;
using testing::ScratchDir;
using testing::WriteBytes;

TEST(PendingFileTest, AppearsOnlyWhenCommitted) {
  ScratchDir dir;
  const std::string path = dir.File("state");
  WriteBytes(path, {9, 9});
  auto file = PendingFile::Create(path);
  ASSERT_TRUE(file.ok()) << file.error().ToString();
  EXPECT_EQ(file->temp_path(), path + ".tmp");
  const std::vector<uint8_t> bytes = {1, 2, 3};
  ASSERT_TRUE(PwriteAll(file->fd(), bytes, 0, file->temp_path()).ok());
  EXPECT_EQ(ReadBytes(path), (std::vector<uint8_t>{9, 9}));
  ASSERT_TRUE(file->Commit().ok());
  EXPECT_EQ(ReadBytes(path), bytes);
  EXPECT_FALSE(Exists(path + ".tmp"));
  EXPECT_EQ(file->Commit().error().errno_value(), EINVAL);
}

TEST(PendingFileTest, RemovedUnlessCommitted) {
  ScratchDir dir;
  const std::string path = dir.File("state");
  {
    auto file = PendingFile::Create(path);
    ASSERT_TRUE(file.ok());
    PendingFile moved = std::move(file).value();
    EXPECT_TRUE(Exists(path + ".tmp"));
  }
  EXPECT_FALSE(Exists(path + ".tmp"));
  EXPECT_FALSE(Exists(path));
}

TEST(PendingFileTest, CreateFailsInAMissingDirectory) {
  ScratchDir dir;
  auto file = PendingFile::Create(dir.File("missing/state"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().errno_value(), ENOENT);
}

TEST(FileIoTest, ReadPastTheEndIsAnError) {
  ScratchDir dir;
  const std::string path = dir.File("data");
  WriteBytes(path, {1, 2, 3, 4});
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  std::vector<uint8_t> bytes(3);
  ASSERT_TRUE(PreadAll(fd.get(), bytes, 1, path).ok());
  EXPECT_EQ(bytes, (std::vector<uint8_t>{2, 3, 4}));
  EXPECT_EQ(PreadAll(fd.get(), bytes, 2, path).error().errno_value(), EIO);
}

}  // namespace
}  // namespace tern::snapshot
