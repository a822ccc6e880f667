// Unit tests for the guest-physical layout: RAM around the MMIO gap and the PCI windows.
#include "arch/x86_64/layout.h"

#include <gtest/gtest.h>

namespace tern::x86_64 {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

TEST(PciLayoutTest, FixedWindowsSitInTheMmioGapClearOfTheApics) {
  const PciLayout layout = PciLayoutFor(512 << 20);
  EXPECT_EQ(layout.ecam_base, 0xe0000000u);
  EXPECT_EQ(layout.ecam_size, 1u << 20);
  EXPECT_EQ(layout.mmio32_base, 0xc0000000u);
  EXPECT_EQ(layout.mmio32_base + layout.mmio32_size, layout.ecam_base);
  EXPECT_GE(layout.mmio32_base, kMmioGapStart);
  EXPECT_LE(layout.ecam_base + layout.ecam_size, kIoapicAddress);
}

TEST(PciLayoutTest, SixtyFourBitWindowFollowsRam) {
  PciLayout small = PciLayoutFor(512 << 20);
  EXPECT_EQ(small.mmio64_base, 4 * kGiB);
  EXPECT_EQ(small.mmio64_size, 64 * kGiB);
  PciLayout big = PciLayoutFor(3 * kGiB + (512 << 20));  // RAM ends at 4.5 GiB
  EXPECT_EQ(big.mmio64_base, 5 * kGiB);
  PciLayout exact = PciLayoutFor(4 * kGiB);  // RAM ends at 5 GiB exactly
  EXPECT_EQ(exact.mmio64_base, 5 * kGiB);
}

TEST(PciLayoutTest, SixtyFourBitWindowStaysBelow2To40) {
  PciLayout near = PciLayoutFor(1000 * kGiB);  // RAM ends at 1001 GiB
  EXPECT_EQ(near.mmio64_base, 1001 * kGiB);
  EXPECT_EQ(near.mmio64_base + near.mmio64_size, kMaxGuestPhysAddress);
  PciLayout past = PciLayoutFor(1024 * kGiB);
  EXPECT_EQ(past.mmio64_size, 0u);
}

TEST(AcpiGedLayoutTest, RegisterPageIsFreeMmio) {
  EXPECT_EQ(kAcpiGedAddress % kPageSize, 0u);
  EXPECT_EQ(kAcpiGedSize, kPageSize);
  const uint64_t end = kAcpiGedAddress + kAcpiGedSize;
  EXPECT_GE(kAcpiGedAddress, kMmioGapStart);
  EXPECT_LE(end, kIoapicAddress);
  for (uint64_t ram : {uint64_t{512} << 20, 3 * kGiB, 64 * kGiB}) {
    for (const RegionSpec& region : RamRegions(ram)) {
      EXPECT_TRUE(end <= region.guest_base || kAcpiGedAddress >= region.guest_base + region.size)
          << "GED page overlaps RAM at " << region.guest_base;
    }
    const PciLayout pci = PciLayoutFor(ram);
    EXPECT_GE(kAcpiGedAddress, pci.mmio32_base + pci.mmio32_size);
    EXPECT_LT(end, pci.mmio64_base);
    // Clear of ECAM even if it grew to all 256 buses (1 MiB each).
    EXPECT_GE(kAcpiGedAddress, pci.ecam_base + (uint64_t{256} << 20));
  }
}

TEST(AcpiGedLayoutTest, GsiIsAFreeIoapicPin) {
  EXPECT_LT(kAcpiGedGsi, 24u);  // KVM's IOAPIC has 24 pins
  EXPECT_GE(kAcpiGedGsi, 16u);  // above the ISA IRQs (COM1 is 4)
  EXPECT_NE(kAcpiGedGsi, kCom1Irq);
}

}  // namespace
}  // namespace tern::x86_64
