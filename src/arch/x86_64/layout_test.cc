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

}  // namespace
}  // namespace tern::x86_64
