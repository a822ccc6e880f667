// Unit tests for GuestMemory: region creation rules, bounds-checked translation, and Discard().
#include "base/guest_memory.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

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

}  // namespace
}  // namespace tern
