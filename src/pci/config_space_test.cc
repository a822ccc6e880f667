// Unit tests for ConfigSpace: header fields at the offsets of PCI 3.0 §6.1, read-only fields,
// BAR sizing (§6.2.5.1) and the capability list (§6.7).
#include "pci/config_space.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace tern::pci {
namespace {

constexpr PciIdentity kIdentity{.vendor_id = 0x1af4,
                                .device_id = 0x1041,
                                .subsystem_vendor_id = 0x1af4,
                                .subsystem_id = 0x0001,
                                .revision_id = 0x01,
                                .class_code = 0x020000};

void Write32(ConfigSpace& config, uint16_t offset, uint32_t value) {
  const uint8_t bytes[4] = {uint8_t(value), uint8_t(value >> 8), uint8_t(value >> 16),
                            uint8_t(value >> 24)};
  config.Write(offset, bytes);
}

TEST(ConfigSpaceTest, HeaderHoldsIdentityAndType0Defaults) {
  ConfigSpace config(kIdentity);
  EXPECT_EQ(config.Read16(0x00), 0x1af4);
  EXPECT_EQ(config.Read16(0x02), 0x1041);
  EXPECT_EQ(config.Read8(0x08), 0x01);
  EXPECT_EQ(config.Read32(0x08) >> 8, 0x020000u);  // class code above the revision
  EXPECT_EQ(config.Read8(0x0e), 0x00);             // header type 0, single function
  EXPECT_EQ(config.Read16(0x2c), 0x1af4);
  EXPECT_EQ(config.Read16(0x2e), 0x0001);
  EXPECT_EQ(config.Read8(0x3d), 0x00);  // no INTx pin
  EXPECT_EQ(config.Read16(0x06), 0x0000);
  EXPECT_EQ(config.Read8(0x34), 0x00);
  EXPECT_EQ(config.command(), 0);
  for (uint16_t offset = 0x100; offset < 0x1000; offset += 4) {
    ASSERT_EQ(config.Read32(offset), 0u) << offset;  // extended space reads as zero
  }
}

TEST(ConfigSpaceTest, OnlyWritableBitsChange) {
  ConfigSpace config(kIdentity);
  std::array<uint8_t, 4> before;
  for (uint16_t offset = 0; offset < 0x40; offset += 4) Write32(config, offset, 0xffffffff);
  EXPECT_EQ(config.Read16(0x00), 0x1af4);
  EXPECT_EQ(config.Read16(0x02), 0x1041);
  EXPECT_EQ(config.command(), kCommandMemorySpace | kCommandBusMaster | kCommandInterruptDisable);
  EXPECT_EQ(config.Read16(0x06), 0x0000);  // status is read-only here
  EXPECT_EQ(config.Read32(0x08), 0x02000001u);
  EXPECT_EQ(config.Read8(0x0c), 0xff);  // cache line size: read/write
  EXPECT_EQ(config.Read8(0x0e), 0x00);
  for (uint16_t bar = 0x10; bar < 0x28; bar += 4) EXPECT_EQ(config.Read32(bar), 0u) << bar;
  EXPECT_EQ(config.Read32(0x30), 0u);   // no expansion ROM
  EXPECT_EQ(config.Read8(0x3c), 0xff);  // interrupt line: read/write scratch
  EXPECT_EQ(config.Read8(0x3d), 0x00);
  Write32(config, 0x04, 0);
  EXPECT_EQ(config.command(), 0);
  // Writes past the end are ignored without harm.
  config.Read(0xffe, before);
  config.Write(0xffe, before);
  config.Write(0xffff, before);
  EXPECT_EQ(config.Read32(0xffc), 0u);
}

TEST(ConfigSpaceTest, ThirtyTwoBitBarSizing) {
  ConfigSpace config(kIdentity);
  ASSERT_TRUE(config.AddBar({.index = 1, .size = 0x4000}).ok());
  EXPECT_EQ(config.Read32(0x14), 0u);
  Write32(config, 0x14, 0xffffffff);
  EXPECT_EQ(config.Read32(0x14), 0xffffc000u);  // size mask, memory, 32-bit, not prefetchable
  Write32(config, 0x14, 0xc0004abc);
  EXPECT_EQ(config.Read32(0x14), 0xc0004000u);
  EXPECT_EQ(config.BarAddress(1), 0xc0004000u);
  EXPECT_EQ(config.BarAddress(0), 0u);
  // Byte writes reach only the bytes written.
  const uint8_t byte = 0xd0;
  config.Write(0x17, std::span(&byte, 1));
  EXPECT_EQ(config.BarAddress(1), 0xd0004000u);
}

TEST(ConfigSpaceTest, SixtyFourBitPrefetchableBarSizing) {
  ConfigSpace config(kIdentity);
  ASSERT_TRUE(
      config.AddBar({.index = 2, .size = 0x10000, .is_64bit = true, .prefetchable = true}).ok());
  EXPECT_EQ(config.Read32(0x18), 0x0000000cu);  // type 10b (64-bit), prefetchable
  Write32(config, 0x18, 0xffffffff);
  Write32(config, 0x1c, 0xffffffff);
  EXPECT_EQ(config.Read32(0x18), 0xffff000cu);
  EXPECT_EQ(config.Read32(0x1c), 0xffffffffu);
  Write32(config, 0x18, 0x20000000);
  Write32(config, 0x1c, 0x00000010);
  EXPECT_EQ(config.BarAddress(2), 0x10'2000'0000u);
  ASSERT_EQ(config.bars().size(), 1u);
  EXPECT_TRUE(config.bars()[0].is_64bit);
}

TEST(ConfigSpaceTest, BarsLargerThan4GiBHaveOnlyUpperAddressBits) {
  ConfigSpace config(kIdentity);
  ASSERT_TRUE(config.AddBar({.index = 0, .size = uint64_t{8} << 30, .is_64bit = true}).ok());
  Write32(config, 0x10, 0xffffffff);
  Write32(config, 0x14, 0xffffffff);
  EXPECT_EQ(config.Read32(0x10), 0x00000004u);
  EXPECT_EQ(config.Read32(0x14), 0xfffffffeu);
}

TEST(ConfigSpaceTest, RejectsInvalidBars) {
  ConfigSpace config(kIdentity);
  EXPECT_FALSE(config.AddBar({.index = 6, .size = 0x1000}).ok());
  EXPECT_FALSE(config.AddBar({.index = 5, .size = 0x1000, .is_64bit = true}).ok());
  EXPECT_FALSE(config.AddBar({.index = 0, .size = 0x800}).ok());
  EXPECT_FALSE(config.AddBar({.index = 0, .size = 0x3000}).ok());
  EXPECT_FALSE(config.AddBar({.index = 0, .size = uint64_t{4} << 30}).ok());
  ASSERT_TRUE(config.AddBar({.index = 0, .size = 0x1000, .is_64bit = true}).ok());
  EXPECT_FALSE(config.AddBar({.index = 1, .size = 0x1000}).ok());  // BAR 0's upper half
  EXPECT_FALSE(config.AddBar({.index = 0, .size = 0x1000}).ok());
  EXPECT_TRUE(config.AddBar({.index = 2, .size = 0x1000}).ok());
  EXPECT_EQ(config.bars().size(), 2u);
}

TEST(ConfigSpaceTest, CapabilitiesAreChainedAndMasked) {
  ConfigSpace config(kIdentity);
  const std::vector<uint8_t> body1 = {0x11, 0x22, 0x33, 0x44, 0x55};
  const std::vector<uint8_t> mask1 = {0x00, 0xf0, 0x00, 0x00, 0x00};
  const std::vector<uint8_t> body2 = {0xaa, 0xbb};
  const std::vector<uint8_t> none(2, 0);
  auto first = config.AddCapability(0x09, body1, mask1);
  auto second = config.AddCapability(0x11, body2, none);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, 0x40);
  EXPECT_EQ(*second, 0x48);  // 0x40 + 7 bytes, rounded up to a dword
  EXPECT_NE(config.Read16(0x06) & kStatusCapabilitiesList, 0);
  EXPECT_EQ(config.Read8(0x34), 0x40);
  EXPECT_EQ(config.Read8(0x40), 0x09);
  EXPECT_EQ(config.Read8(0x41), 0x48);
  EXPECT_EQ(config.Read8(0x42), 0x11);
  EXPECT_EQ(config.Read8(0x48), 0x11);
  EXPECT_EQ(config.Read8(0x49), 0x00);
  EXPECT_EQ(config.Read16(0x4a), 0xbbaa);

  EXPECT_EQ(config.Write(0x40, std::vector<uint8_t>{0xff, 0xff, 0xff, 0xff}), 0x40);
  EXPECT_EQ(config.Read32(0x40), 0xf2114809u);  // only the high nibble of body byte 1 changed
  EXPECT_EQ(config.Write(0x48, std::vector<uint8_t>{0, 0, 0, 0}), 0x48);
  EXPECT_EQ(config.Read16(0x4a), 0xbbaa);
  EXPECT_EQ(config.Write(0x04, std::vector<uint8_t>{0x02, 0x00}), std::nullopt);
}

TEST(ConfigSpaceTest, CapabilityErrors) {
  ConfigSpace config(kIdentity);
  const std::vector<uint8_t> body(10), short_mask(9);
  EXPECT_EQ(config.AddCapability(0x09, body, short_mask).error().errno_value(), EINVAL);
  const std::vector<uint8_t> big(190);
  EXPECT_TRUE(config.AddCapability(0x09, big, big).ok());  // 0x40 + 192 = 256: fits exactly
  EXPECT_EQ(config.AddCapability(0x09, {}, {}).error().errno_value(), ENOSPC);
}

}  // namespace
}  // namespace tern::pci
