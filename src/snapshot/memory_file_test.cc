// Unit tests for snapshot memory files: full files with holes for zero pages, restore from them,
// diff files of dirty pages, and rebasing a diff onto a full file.
#include "snapshot/memory_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "base/fd.h"
#include "snapshot/test_util.h"

namespace tern::snapshot {
namespace {

using testing::Exists;
using testing::ReadBytes;
using testing::ScratchDir;

constexpr uint64_t kPage = GuestMemory::kPageSize;
// Regions of 80 pages at 0 and 16 pages at 1 MiB, listed out of order; in the file, the low
// region is at offset 0 and the high one at 80 pages.
constexpr uint64_t kHighBase = 0x100000;
constexpr uint64_t kLowPages = 80;
constexpr uint64_t kHighPages = 16;
constexpr uint64_t kTotalPages = kLowPages + kHighPages;
constexpr std::array<RegionSpec, 2> kSpecs = {
    {{kHighBase, kHighPages* kPage}, {0, kLowPages* kPage}}};

// The guest-physical address of page `page` of the memory file.
uint64_t FilePageGpa(uint64_t page) {
  return page < kLowPages ? page * kPage : kHighBase + (page - kLowPages) * kPage;
}

// Fills file page `page` of `memory` with a pattern that names it, `salt` included.
void FillFilePage(const GuestMemory& memory, uint64_t page, uint8_t salt) {
  std::vector<uint8_t> bytes(kPage);
  for (uint64_t i = 0; i < kPage; ++i) bytes[i] = static_cast<uint8_t>(page * 13 + i + salt);
  ASSERT_TRUE(memory.Write(FilePageGpa(page), bytes).ok());
}

// Guest memory as the memory file lays it out.
std::vector<uint8_t> FileImage(const GuestMemory& memory) {
  std::vector<uint8_t> bytes(kTotalPages * kPage);
  for (uint64_t page = 0; page < kTotalPages; ++page) {
    EXPECT_TRUE(memory.Read(FilePageGpa(page), std::span(bytes).subspan(page * kPage, kPage)).ok());
  }
  return bytes;
}

// Whether file page `page` of `path` is data (not a hole), by SEEK_DATA.
bool IsData(const std::string& path, uint64_t page) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  return ::lseek(fd.get(), static_cast<off_t>(page * kPage), SEEK_DATA) ==
         static_cast<off_t>(page * kPage);
}

// Bytes of disk allocated to `path`.
uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// An empty dirty bitmap per region of kSpecs, in region order.
std::vector<std::vector<uint64_t>> CleanBitmaps() {
  return {std::vector<uint64_t>(2), std::vector<uint64_t>(1)};
}

TEST(MemoryFileTest, ZeroPagesBecomeHoles) {
  ScratchDir dir;
  auto memory = GuestMemory::Create(kSpecs);
  ASSERT_TRUE(memory.ok());
  const std::vector<uint64_t> data_pages = {3, 10, 11, 12, 79, 80, 95};
  for (uint64_t page : data_pages) FillFilePage(*memory, page, 0);
  // A touched page that is zero again is a hole too.
  FillFilePage(*memory, 40, 0);
  ASSERT_TRUE(memory->Write(FilePageGpa(40), std::vector<uint8_t>(kPage)).ok());

  const std::string path = dir.File("vm.mem");
  ASSERT_TRUE(WriteMemoryFile(*memory, path).ok());
  EXPECT_FALSE(Exists(path + ".tmp"));
  std::vector<uint8_t> bytes = ReadBytes(path);
  EXPECT_EQ(bytes.size(), kTotalPages * kPage);
  EXPECT_TRUE(bytes == FileImage(*memory));
  for (uint64_t page = 0; page < kTotalPages; ++page) {
    bool data = std::find(data_pages.begin(), data_pages.end(), page) != data_pages.end();
    EXPECT_EQ(IsData(path, page), data) << "page " << page;
  }
  // Disk holds the data pages (and perhaps a block of file-system metadata), not all 96 pages.
  EXPECT_LE(AllocatedBytes(path), (data_pages.size() + 2) * kPage);
}

TEST(MemoryFileTest, RestoresWhatWasWritten) {
  ScratchDir dir;
  auto memory = GuestMemory::Create(kSpecs);
  ASSERT_TRUE(memory.ok());
  for (uint64_t page = 0; page < kTotalPages; page += 3) FillFilePage(*memory, page, 1);
  const std::string path = dir.File("vm.mem");
  ASSERT_TRUE(WriteMemoryFile(*memory, path).ok());
  auto restored = GuestMemory::CreateFromFile(kSpecs, path);
  ASSERT_TRUE(restored.ok()) << restored.error().ToString();
  EXPECT_TRUE(FileImage(*restored) == FileImage(*memory));

  // Another snapshot written over the file the VM was restored from: the VM keeps its own
  // (old) file, while the path gets the new contents.
  const std::vector<uint8_t> before = FileImage(*restored);
  FillFilePage(*memory, 2, 9);
  FillFilePage(*memory, 85, 9);
  ASSERT_TRUE(WriteMemoryFile(*memory, path).ok());
  EXPECT_TRUE(ReadBytes(path) == FileImage(*memory));
  EXPECT_TRUE(FileImage(*restored) == before);
}

TEST(MemoryFileTest, DiffAndRebaseReproduceMemory) {
  ScratchDir dir;
  auto memory = GuestMemory::Create(kSpecs);
  ASSERT_TRUE(memory.ok());
  for (uint64_t page = 0; page < kTotalPages; page += 2) FillFilePage(*memory, page, 3);
  const std::string base = dir.File("base.mem");
  ASSERT_TRUE(WriteMemoryFile(*memory, base).ok());

  memory->EnableDirtyTracking();
  // Changes: pages across bitmap words and across the region boundary in the file, a page
  // written back to zero, a discarded page, and one write across a page boundary.
  for (uint64_t page : {5, 62, 63, 64, 65, 79, 80, 81}) FillFilePage(*memory, page, 4);
  ASSERT_TRUE(memory->Write(FilePageGpa(20), std::vector<uint8_t>(kPage)).ok());
  ASSERT_TRUE(memory->Discard(FilePageGpa(30), kPage).ok());
  ASSERT_TRUE(memory->WriteObj<uint64_t>(FilePageGpa(91) - 4, ~uint64_t{0}).ok());
  std::vector<std::vector<uint64_t>> bitmaps = memory->TakeDirtyBitmaps();

  const std::string diff = dir.File("diff.mem");
  Status written = WriteDirtyPages(*memory, bitmaps, diff);
  ASSERT_TRUE(written.ok()) << written.error().ToString();
  EXPECT_FALSE(Exists(diff + ".tmp"));
  const std::vector<uint64_t> dirty = {5, 20, 30, 62, 63, 64, 65, 79, 80, 81, 90, 91};
  EXPECT_EQ(ReadBytes(diff).size(), kTotalPages * kPage);
  for (uint64_t page = 0; page < kTotalPages; ++page) {
    bool data = std::find(dirty.begin(), dirty.end(), page) != dirty.end();
    EXPECT_EQ(IsData(diff, page), data) << "page " << page;
  }
  EXPECT_LE(AllocatedBytes(diff), (dirty.size() + 2) * kPage);

  ASSERT_FALSE(ReadBytes(base) == FileImage(*memory));
  Status rebased = RebaseMemoryFile(base, diff);
  ASSERT_TRUE(rebased.ok()) << rebased.error().ToString();
  EXPECT_TRUE(ReadBytes(base) == FileImage(*memory));
  auto restored = GuestMemory::CreateFromFile(kSpecs, base);
  ASSERT_TRUE(restored.ok());
  EXPECT_TRUE(FileImage(*restored) == FileImage(*memory));
}

TEST(MemoryFileTest, DiffOfNothingIsAllHoles) {
  ScratchDir dir;
  auto memory = GuestMemory::Create(kSpecs);
  ASSERT_TRUE(memory.ok());
  FillFilePage(*memory, 7, 5);
  const std::string diff = dir.File("diff.mem");
  ASSERT_TRUE(WriteDirtyPages(*memory, CleanBitmaps(), diff).ok());
  EXPECT_EQ(AllocatedBytes(diff), 0u);
  // Every page dirty: the whole file is data.
  std::vector<std::vector<uint64_t>> all = {{~uint64_t{0}, (uint64_t{1} << 16) - 1}, {0xffff}};
  ASSERT_TRUE(WriteDirtyPages(*memory, all, diff).ok());
  EXPECT_TRUE(ReadBytes(diff) == FileImage(*memory));
}

TEST(MemoryFileTest, DiffRefusesBitmapsThatDoNotFit) {
  ScratchDir dir;
  auto memory = GuestMemory::Create(kSpecs);
  ASSERT_TRUE(memory.ok());
  const std::string diff = dir.File("diff.mem");
  std::vector<std::vector<uint64_t>> one = {std::vector<uint64_t>(2)};
  EXPECT_EQ(WriteDirtyPages(*memory, one, diff).error().errno_value(), EINVAL);
  std::vector<std::vector<uint64_t>> short_bitmap = {std::vector<uint64_t>(1),
                                                     std::vector<uint64_t>(1)};
  EXPECT_EQ(WriteDirtyPages(*memory, short_bitmap, diff).error().errno_value(), EINVAL);
  std::vector<std::vector<uint64_t>> past_end = CleanBitmaps();
  past_end[1][0] = uint64_t{1} << kHighPages;  // page 16 of a 16-page region
  EXPECT_EQ(WriteDirtyPages(*memory, past_end, diff).error().errno_value(), EINVAL);
  EXPECT_FALSE(Exists(diff));
  EXPECT_FALSE(Exists(diff + ".tmp"));
}

TEST(MemoryFileTest, RebaseRefusesFilesOfDifferentSizes) {
  ScratchDir dir;
  auto memory = GuestMemory::Create(kSpecs);
  ASSERT_TRUE(memory.ok());
  std::array<RegionSpec, 1> small_spec = {{{0, kPage}}};
  auto small = GuestMemory::Create(small_spec);
  ASSERT_TRUE(small.ok());
  ASSERT_TRUE(WriteMemoryFile(*memory, dir.File("base.mem")).ok());
  ASSERT_TRUE(WriteMemoryFile(*small, dir.File("diff.mem")).ok());
  Status status = RebaseMemoryFile(dir.File("base.mem"), dir.File("diff.mem"));
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), EINVAL);
  EXPECT_EQ(RebaseMemoryFile(dir.File("missing"), dir.File("diff.mem")).error().errno_value(),
            ENOENT);
}

TEST(MemoryFileTest, WriteIntoAMissingDirectoryFails) {
  ScratchDir dir;
  auto memory = GuestMemory::Create(kSpecs);
  ASSERT_TRUE(memory.ok());
  EXPECT_EQ(WriteMemoryFile(*memory, dir.File("missing/vm.mem")).error().errno_value(), ENOENT);
  EXPECT_EQ(
      WriteDirtyPages(*memory, CleanBitmaps(), dir.File("missing/vm.mem")).error().errno_value(),
      ENOENT);
}

}  // namespace
}  // namespace tern::snapshot
