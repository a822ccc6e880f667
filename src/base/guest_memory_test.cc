// Unit tests for GuestMemory: region creation rules, bounds-checked translation, Discard(),
// memory mapped from a snapshot's memory file, and dirty tracking.
#include "base/guest_memory.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "base/guest_memory_test_util.h"

namespace tern {
namespace {

using testing::FillPage;
using testing::PageIs;
using testing::Resident;

TEST(GuestMemoryTest, RejectsOverlapAndUnaligned) {
  std::array<RegionSpec, 2> overlap = {{{0, 0x2000}, {0x1000, 0x1000}}};
  EXPECT_FALSE(GuestMemory::Create(overlap).ok());
  std::array<RegionSpec, 1> unaligned = {{{0x10, 0x1000}}};
  EXPECT_FALSE(GuestMemory::Create(unaligned).ok());
  std::array<RegionSpec, 1> empty = {{{0, 0}}};
  EXPECT_FALSE(GuestMemory::Create(empty).ok());
}

TEST(GuestMemoryTest, TranslatesInsideRegionsOnly) {
  std::array<RegionSpec, 2> specs = {{{0x100000000, 0x2000}, {0, 0x1000}}};
  auto memory = GuestMemory::Create(specs);
  ASSERT_TRUE(memory.ok());
  EXPECT_EQ(memory->total_size(), 0x3000u);
  EXPECT_TRUE(memory->WriteObj<uint32_t>(0xffc, 0xdeadbeef).ok());
  EXPECT_EQ(*memory->ReadObj<uint32_t>(0xffc), 0xdeadbeefu);
  // Straddles the end of the low region.
  EXPECT_FALSE(memory->WriteObj<uint32_t>(0xffe, 1).ok());
  // In the gap between regions.
  EXPECT_FALSE(memory->Slice(0x2000, 1).ok());
  EXPECT_TRUE(memory->Slice(0x100001000, 0x1000).ok());
  EXPECT_FALSE(memory->Slice(0x100001000, 0x1001).ok());
  // Lengths that would wrap the address space.
  EXPECT_FALSE(memory->Slice(0x10, UINT64_MAX).ok());
  EXPECT_FALSE(memory->Slice(UINT64_MAX, 2).ok());
}

constexpr uint64_t kPage = 4096;

TEST(GuestMemoryTest, DiscardZeroesPagesAndDropsThem) {
  std::array<RegionSpec, 1> specs = {{{0, 16 * kPage}}};
  auto memory = GuestMemory::Create(specs);
  ASSERT_TRUE(memory.ok());
  for (uint64_t page = 0; page < 16; ++page) FillPage(*memory, page * kPage, 0xa5);
  ASSERT_TRUE(Resident(*memory, 4 * kPage));
  ASSERT_TRUE(memory->Discard(4 * kPage, 3 * kPage).ok());
  // No longer backed: the host got the memory back (checked before reading faults it in).
  EXPECT_FALSE(Resident(*memory, 4 * kPage));
  EXPECT_FALSE(Resident(*memory, 6 * kPage));
  EXPECT_TRUE(PageIs(*memory, 3 * kPage, 0xa5));
  EXPECT_TRUE(PageIs(*memory, 4 * kPage, 0));
  EXPECT_TRUE(PageIs(*memory, 5 * kPage, 0));
  EXPECT_TRUE(PageIs(*memory, 6 * kPage, 0));
  EXPECT_TRUE(PageIs(*memory, 7 * kPage, 0xa5));
  // The page is usable again afterwards.
  FillPage(*memory, 5 * kPage, 0x11);
  EXPECT_TRUE(PageIs(*memory, 5 * kPage, 0x11));
  // Length 0 is a no-op.
  EXPECT_TRUE(memory->Discard(3 * kPage, 0).ok());
  EXPECT_TRUE(PageIs(*memory, 3 * kPage, 0xa5));
}

TEST(GuestMemoryTest, DiscardRejectsUnalignedAndWrapping) {
  std::array<RegionSpec, 1> specs = {{{0, 4 * kPage}}};
  auto memory = GuestMemory::Create(specs);
  ASSERT_TRUE(memory.ok());
  FillPage(*memory, 0, 0x5a);
  Status unaligned_gpa = memory->Discard(0x10, kPage);
  ASSERT_FALSE(unaligned_gpa.ok());
  EXPECT_EQ(unaligned_gpa.error().errno_value(), EINVAL);
  EXPECT_EQ(memory->Discard(0, kPage + 1).error().errno_value(), EINVAL);
  EXPECT_EQ(memory->Discard(UINT64_MAX & ~(kPage - 1), 2 * kPage).error().errno_value(), EINVAL);
  EXPECT_TRUE(PageIs(*memory, 0, 0x5a));
}

TEST(GuestMemoryTest, DiscardOutsideRamDiscardsNothing) {
  // RAM at [0, 4 pages) and [4 GiB, 4 GiB + 4 pages), a gap in between.
  constexpr uint64_t kHigh = 0x100000000;
  std::array<RegionSpec, 2> specs = {{{kHigh, 4 * kPage}, {0, 4 * kPage}}};
  auto memory = GuestMemory::Create(specs);
  ASSERT_TRUE(memory.ok());
  FillPage(*memory, 3 * kPage, 0x77);
  FillPage(*memory, kHigh, 0x77);
  // Straddles the end of the low region into the gap: EFAULT, the RAM page is untouched.
  Status status = memory->Discard(3 * kPage, 2 * kPage);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), EFAULT);
  EXPECT_TRUE(PageIs(*memory, 3 * kPage, 0x77));
  // Wholly in the gap; spanning the gap from one region to the other; past the end.
  EXPECT_EQ(memory->Discard(0x80000000, kPage).error().errno_value(), EFAULT);
  EXPECT_EQ(memory->Discard(3 * kPage, kHigh - 2 * kPage).error().errno_value(), EFAULT);
  EXPECT_EQ(memory->Discard(kHigh + 3 * kPage, 2 * kPage).error().errno_value(), EFAULT);
  EXPECT_EQ(memory->Discard(kHigh - kPage, 2 * kPage).error().errno_value(), EFAULT);
  EXPECT_TRUE(PageIs(*memory, 3 * kPage, 0x77));
  EXPECT_TRUE(PageIs(*memory, kHigh, 0x77));
  // The high region by itself works.
  EXPECT_TRUE(memory->Discard(kHigh, 4 * kPage).ok());
  EXPECT_TRUE(PageIs(*memory, kHigh, 0));
}

TEST(GuestMemoryTest, DiscardSpansAdjacentRegions) {
  std::array<RegionSpec, 2> specs = {{{4 * kPage, 4 * kPage}, {0, 4 * kPage}}};
  auto memory = GuestMemory::Create(specs);
  ASSERT_TRUE(memory.ok());
  ASSERT_EQ(memory->regions().size(), 2u);
  for (uint64_t page = 0; page < 8; ++page) FillPage(*memory, page * kPage, 0x42);
  ASSERT_TRUE(memory->Discard(2 * kPage, 4 * kPage).ok());
  EXPECT_TRUE(PageIs(*memory, 1 * kPage, 0x42));
  for (uint64_t page = 2; page < 6; ++page) EXPECT_TRUE(PageIs(*memory, page * kPage, 0));
  EXPECT_TRUE(PageIs(*memory, 6 * kPage, 0x42));
}

// --- Memory mapped from a file ----------------------------------------------------------------

// The byte at file offset `offset` of the test memory files: differs between pages.
uint8_t FileByte(uint64_t offset) { return static_cast<uint8_t>(offset / kPage * 7 + 1); }

// A temporary memory file of `size` bytes of FileByte(), removed on destruction.
class MemoryFile {
 public:
  explicit MemoryFile(uint64_t size) : path_(::testing::TempDir() + "tern_memory_XXXXXX") {
    Fd fd(::mkstemp(path_.data()));
    EXPECT_TRUE(fd.valid());
    std::vector<uint8_t> bytes(size);
    for (uint64_t i = 0; i < size; ++i) bytes[i] = FileByte(i);
    EXPECT_EQ(::pwrite(fd.get(), bytes.data(), size, 0), static_cast<ssize_t>(size));
  }
  ~MemoryFile() { ::unlink(path_.c_str()); }

  const std::string& path() const { return path_; }
  // The file's byte at `offset`, read with pread().
  uint8_t At(uint64_t offset) const {
    Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    uint8_t byte = 0;
    EXPECT_EQ(::pread(fd.get(), &byte, 1, static_cast<off_t>(offset)), 1);
    return byte;
  }

 private:
  std::string path_;
};

// Regions at [0, 4 pages) and [1 MiB, 1 MiB + 2 pages), listed out of order: the file holds the
// low region at offset 0 and the high one at 4 pages.
constexpr uint64_t kHighBase = 0x100000;
constexpr std::array<RegionSpec, 2> kFileSpecs = {{{kHighBase, 2 * kPage}, {0, 4 * kPage}}};

TEST(GuestMemoryFileTest, MapsRegionsFromConsecutiveFileOffsets) {
  MemoryFile file(6 * kPage);
  auto memory = GuestMemory::CreateFromFile(kFileSpecs, file.path());
  ASSERT_TRUE(memory.ok()) << memory.error().ToString();
  ASSERT_EQ(memory->regions().size(), 2u);
  EXPECT_EQ(memory->total_size(), 6 * kPage);
  for (uint64_t page = 0; page < 4; ++page) {
    EXPECT_TRUE(PageIs(*memory, page * kPage, FileByte(page * kPage)));
  }
  EXPECT_TRUE(PageIs(*memory, kHighBase, FileByte(4 * kPage)));
  EXPECT_TRUE(PageIs(*memory, kHighBase + kPage, FileByte(5 * kPage)));
}

TEST(GuestMemoryFileTest, WritesAreCopyOnWrite) {
  MemoryFile file(6 * kPage);
  auto first = GuestMemory::CreateFromFile(kFileSpecs, file.path());
  auto second = GuestMemory::CreateFromFile(kFileSpecs, file.path());
  ASSERT_TRUE(first.ok() && second.ok());
  FillPage(*first, kPage, 0xee);
  FillPage(*first, kHighBase, 0xdd);
  EXPECT_TRUE(PageIs(*first, kPage, 0xee));
  // Neither the file nor another VM restored from it sees the writes.
  EXPECT_EQ(file.At(kPage), FileByte(kPage));
  EXPECT_EQ(file.At(4 * kPage), FileByte(4 * kPage));
  EXPECT_TRUE(PageIs(*second, kPage, FileByte(kPage)));
  EXPECT_TRUE(PageIs(*second, kHighBase, FileByte(4 * kPage)));
}

TEST(GuestMemoryFileTest, RejectsFileOfTheWrongSize) {
  MemoryFile file(5 * kPage);
  auto memory = GuestMemory::CreateFromFile(kFileSpecs, file.path());
  ASSERT_FALSE(memory.ok());
  EXPECT_EQ(memory.error().errno_value(), EINVAL);
  EXPECT_NE(memory.error().message().find(std::to_string(5 * kPage)), std::string::npos);
  EXPECT_NE(memory.error().message().find(std::to_string(6 * kPage)), std::string::npos);
  auto missing = GuestMemory::CreateFromFile(kFileSpecs, file.path() + ".missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().errno_value(), ENOENT);
  std::array<RegionSpec, 1> unaligned = {{{0x10, 6 * kPage}}};
  EXPECT_EQ(GuestMemory::CreateFromFile(unaligned, file.path()).error().errno_value(), EINVAL);
}

TEST(GuestMemoryFileTest, DiscardGivesZerosNotTheFilesBytes) {
  MemoryFile file(6 * kPage);
  auto memory = GuestMemory::CreateFromFile(kFileSpecs, file.path());
  ASSERT_TRUE(memory.ok());
  FillPage(*memory, 2 * kPage, 0x99);  // a private copy; pages 1 and 3 are the file's
  ASSERT_TRUE(memory->Discard(kPage, 3 * kPage).ok());
  EXPECT_FALSE(Resident(*memory, 2 * kPage));
  for (uint64_t page = 1; page < 4; ++page) EXPECT_TRUE(PageIs(*memory, page * kPage, 0));
  EXPECT_TRUE(PageIs(*memory, 0, FileByte(0)));
  EXPECT_TRUE(PageIs(*memory, kHighBase, FileByte(4 * kPage)));
  EXPECT_EQ(file.At(2 * kPage), FileByte(2 * kPage));
  // Usable again, and discarding again (now anonymous memory) still gives zeros.
  FillPage(*memory, 2 * kPage, 0x12);
  EXPECT_TRUE(PageIs(*memory, 2 * kPage, 0x12));
  ASSERT_TRUE(memory->Discard(2 * kPage, kPage).ok());
  EXPECT_TRUE(PageIs(*memory, 2 * kPage, 0));
  // Spanning both regions is refused: they are not adjacent.
  EXPECT_EQ(memory->Discard(3 * kPage, kHighBase).error().errno_value(), EFAULT);
  ASSERT_TRUE(memory->Discard(kHighBase, 2 * kPage).ok());
  EXPECT_TRUE(PageIs(*memory, kHighBase + kPage, 0));
  EXPECT_EQ(file.At(5 * kPage), FileByte(5 * kPage));
}

// --- Dirty tracking ---------------------------------------------------------------------------

// The pages whose bits are set in `bitmap`, in order.
std::vector<uint64_t> DirtyPages(const std::vector<uint64_t>& bitmap) {
  std::vector<uint64_t> pages;
  for (uint64_t page = 0; page < 64 * bitmap.size(); ++page) {
    if ((bitmap[page / 64] >> (page % 64)) & 1) pages.push_back(page);
  }
  return pages;
}

using Pages = std::vector<uint64_t>;

// Regions of 100 pages at 0 (two bitmap words) and of 3 pages at 1 MiB.
constexpr std::array<RegionSpec, 2> kTrackedSpecs = {{{kHighBase, 3 * kPage}, {0, 100 * kPage}}};

TEST(GuestMemoryDirtyTest, OffByDefault) {
  auto memory = GuestMemory::Create(kTrackedSpecs);
  ASSERT_TRUE(memory.ok());
  EXPECT_FALSE(memory->dirty_tracking());
  FillPage(*memory, 0, 1);
  EXPECT_TRUE(memory->TakeDirtyBitmaps().empty());
}

TEST(GuestMemoryDirtyTest, WritesMarkExactlyTheirPages) {
  auto memory = GuestMemory::Create(kTrackedSpecs);
  ASSERT_TRUE(memory.ok());
  FillPage(*memory, 5 * kPage, 1);  // before tracking: not reported
  memory->EnableDirtyTracking();
  EXPECT_TRUE(memory->dirty_tracking());
  std::vector<std::vector<uint64_t>> bitmaps = memory->TakeDirtyBitmaps();
  ASSERT_EQ(bitmaps.size(), 2u);
  EXPECT_EQ(bitmaps[0].size(), 2u);
  EXPECT_EQ(bitmaps[1].size(), 1u);
  EXPECT_EQ(DirtyPages(bitmaps[0]), Pages{});

  ASSERT_TRUE(memory->WriteObj<uint32_t>(3 * kPage + 8, 1).ok());  // page 3
  ASSERT_TRUE(memory->WriteObj<uint64_t>(7 * kPage - 4, 1).ok());  // pages 6 and 7
  ASSERT_TRUE(memory->Write(63 * kPage + 1, std::vector<uint8_t>(2 * kPage)).ok());  // 63..65
  ASSERT_TRUE(memory->Slice(99 * kPage, kPage).ok());                                // page 99
  ASSERT_TRUE(memory->Slice(50 * kPage, 0).ok());                                    // nothing
  ASSERT_TRUE(memory->WriteObj<uint8_t>(kHighBase + 2 * kPage + 4095, 1).ok());      // high page 2
  bitmaps = memory->TakeDirtyBitmaps();
  ASSERT_EQ(bitmaps.size(), 2u);
  EXPECT_EQ(DirtyPages(bitmaps[0]), (Pages{3, 6, 7, 63, 64, 65, 99}));
  EXPECT_EQ(DirtyPages(bitmaps[1]), Pages{2});
  // Taking cleared them.
  bitmaps = memory->TakeDirtyBitmaps();
  EXPECT_EQ(DirtyPages(bitmaps[0]), Pages{});
  EXPECT_EQ(DirtyPages(bitmaps[1]), Pages{});
  // A failed write marks nothing.
  EXPECT_FALSE(memory->WriteObj<uint32_t>(kHighBase + 3 * kPage - 2, 1).ok());
  EXPECT_EQ(DirtyPages(memory->TakeDirtyBitmaps()[1]), Pages{});
}

TEST(GuestMemoryDirtyTest, ReadsDoNotMark) {
  auto memory = GuestMemory::Create(kTrackedSpecs);
  ASSERT_TRUE(memory.ok());
  memory->EnableDirtyTracking();
  std::vector<uint8_t> bytes(3 * kPage);
  ASSERT_TRUE(memory->Read(10 * kPage, bytes).ok());
  ASSERT_TRUE(memory->ReadObj<uint64_t>(kHighBase + kPage - 4).ok());  // across a page boundary
  EXPECT_TRUE(PageIs(*memory, 99 * kPage, 0));
  std::vector<std::vector<uint64_t>> bitmaps = memory->TakeDirtyBitmaps();
  EXPECT_EQ(DirtyPages(bitmaps[0]), Pages{});
  EXPECT_EQ(DirtyPages(bitmaps[1]), Pages{});
}

TEST(GuestMemoryDirtyTest, DiscardMarksItsPages) {
  auto memory = GuestMemory::Create(kTrackedSpecs);
  ASSERT_TRUE(memory.ok());
  memory->EnableDirtyTracking();
  ASSERT_TRUE(memory->Discard(62 * kPage, 4 * kPage).ok());
  EXPECT_EQ(DirtyPages(memory->TakeDirtyBitmaps()[0]), (Pages{62, 63, 64, 65}));
}

TEST(GuestMemoryDirtyTest, NoMarkIsLostToAConcurrentTake) {
  auto memory = GuestMemory::Create(kTrackedSpecs);
  ASSERT_TRUE(memory.ok());
  memory->EnableDirtyTracking();
  // Each writer writes its own pages; the taker's rounds together must report all of them.
  constexpr int kWriters = 2;
  std::atomic<int> running = kWriters;
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int round = 0; round < 200; ++round) {
        for (uint64_t page = w; page < 100; page += kWriters) {
          EXPECT_TRUE(memory->WriteObj<uint8_t>(page * kPage, 1).ok());
        }
      }
      --running;
    });
  }
  std::set<uint64_t> seen;
  auto take = [&] {
    for (uint64_t page : DirtyPages(memory->TakeDirtyBitmaps()[0])) seen.insert(page);
  };
  while (running > 0) take();
  for (std::thread& writer : writers) writer.join();
  take();
  EXPECT_EQ(seen.size(), 100u);
}

}  // namespace
}  // namespace tern
