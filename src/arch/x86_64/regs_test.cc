// Unit tests for the boot page tables, GDT and long-mode register state.
#include "arch/x86_64/regs.h"

#include <gtest/gtest.h>

#include "arch/x86_64/layout.h"

namespace tern::x86_64 {
namespace {

// Walks the guest's 4-level page tables like the MMU for a 2 MiB mapping; returns the
// physical address `virt` maps to, or UINT64_MAX if unmapped.
uint64_t Translate(const GuestMemory& memory, uint64_t virt) {
  uint64_t pml4e = *memory.ReadObj<uint64_t>(kPml4Start + ((virt >> 39) & 511) * 8);
  if (!(pml4e & 1)) return UINT64_MAX;
  uint64_t pdpte = *memory.ReadObj<uint64_t>((pml4e & ~0xfffull) + ((virt >> 30) & 511) * 8);
  if (!(pdpte & 1)) return UINT64_MAX;
  uint64_t pde = *memory.ReadObj<uint64_t>((pdpte & ~0xfffull) + ((virt >> 21) & 511) * 8);
  if (!(pde & 1) || !(pde & 0x80)) return UINT64_MAX;
  return (pde & ~0x1fffffull) + (virt & 0x1fffff);
}

TEST(PageTablesTest, IdentityMapsFirstFourGiB) {
  std::vector<RegionSpec> regions = RamRegions(64 << 20);
  auto memory = GuestMemory::Create(regions);
  ASSERT_TRUE(memory.ok());
  ASSERT_TRUE(SetupPageTables(*memory).ok());
  for (uint64_t address :
       {0ull, 0x1000200ull, 0x3fffffffull, 0x40000000ull, 0xfee00000ull, 0xffffffffull}) {
    EXPECT_EQ(Translate(*memory, address), address) << std::hex << address;
  }
  EXPECT_EQ(Translate(*memory, 0x100000000ull), UINT64_MAX);
  // Page tables stay inside low RAM below the command line.
  EXPECT_LT(kPdStart + 4 * kPageSize, kCmdlineStart);
}

TEST(GdtTest, BootSegmentsFollowThe64BitBootProtocol) {
  std::vector<RegionSpec> regions = RamRegions(64 << 20);
  auto memory = GuestMemory::Create(regions);
  ASSERT_TRUE(memory.ok());
  ASSERT_TRUE(SetupGdt(*memory).ok());
  uint64_t code = *memory->ReadObj<uint64_t>(kGdtStart + 0x10);
  uint64_t data = *memory->ReadObj<uint64_t>(kGdtStart + 0x18);
  EXPECT_EQ((code >> 53) & 1, 1u);  // L: 64-bit code
  EXPECT_EQ((code >> 47) & 1, 1u);  // present
  EXPECT_EQ((code >> 43) & 1, 1u);  // executable
  EXPECT_EQ((data >> 43) & 1, 0u);  // data
  EXPECT_EQ((data >> 41) & 1, 1u);  // writable

  kvm_sregs sregs = BootSregs(kvm_sregs{});
  EXPECT_EQ(sregs.cs.selector, 0x10);
  EXPECT_EQ(sregs.cs.l, 1);
  EXPECT_EQ(sregs.ds.selector, 0x18);
  EXPECT_EQ(sregs.ss.selector, 0x18);
  EXPECT_EQ(sregs.ds.limit, 0xffffffffu);
  EXPECT_EQ(sregs.gdt.base, kGdtStart);
  EXPECT_EQ(sregs.cr3, kPml4Start);
  EXPECT_TRUE(sregs.cr0 & 1u);            // PE
  EXPECT_TRUE(sregs.cr0 & (1u << 31));    // PG
  EXPECT_TRUE(sregs.cr4 & (1u << 5));     // PAE
  EXPECT_EQ(sregs.efer & 0x500, 0x500u);  // LME | LMA

  kvm_regs regs = BootRegs(0x1000200);
  EXPECT_EQ(regs.rip, 0x1000200u);
  EXPECT_EQ(regs.rsi, kZeroPageStart);
  EXPECT_EQ(regs.rflags, 2u);
}

}  // namespace
}  // namespace tern::x86_64
