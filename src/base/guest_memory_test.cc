// Unit tests for GuestMemory: region creation rules and bounds-checked translation.
#include "base/guest_memory.h"

#include <gtest/gtest.h>

#include <array>

namespace tern {
namespace {

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

}  // namespace
}  // namespace tern
