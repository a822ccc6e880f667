// Unit tests for the generic ACPI table helpers: checksums, SDT headers, the RSDP, the XSDT,
// the FADT layout and table placement. Offsets are the spec's (ACPI 6.4 §5.2), read from the
// bytes, so a wrong struct layout fails here.
#include "acpi/sdt.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <string>

namespace tern::acpi {
namespace {

uint8_t Sum(std::span<const uint8_t> bytes) {
  return static_cast<uint8_t>(std::accumulate(bytes.begin(), bytes.end(), 0u));
}

template <typename T>
T Load(const std::vector<uint8_t>& bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

std::string Text(const std::vector<uint8_t>& bytes, size_t offset, size_t length) {
  return std::string(reinterpret_cast<const char*>(bytes.data()) + offset, length);
}

TEST(ChecksumTest, MakesBytesSumToZero) {
  std::vector<uint8_t> bytes = {0x01, 0x02, 0xff, 0x00};
  bytes[3] = Checksum(bytes);
  EXPECT_EQ(bytes[3], 0xfe);  // 1 + 2 + 255 = 0x102, and 0x02 + 0xfe = 0x100
  EXPECT_EQ(Sum(bytes), 0);
  EXPECT_EQ(Checksum(std::vector<uint8_t>{}), 0);
}

TEST(SdtTest, BuildSdtFillsTheHeader) {
  const std::vector<uint8_t> body = {1, 2, 3, 4, 5};
  auto table = BuildSdt("TEST", 7, body);
  ASSERT_TRUE(table.ok());
  ASSERT_EQ(table->size(), 41u);
  EXPECT_EQ(Text(*table, 0, 4), "TEST");
  EXPECT_EQ(Load<uint32_t>(*table, 4), 41u);
  EXPECT_EQ((*table)[8], 7);
  EXPECT_EQ(Text(*table, 10, 6), "TERN  ");
  EXPECT_EQ(Text(*table, 16, 8), "TERNVMM ");
  EXPECT_EQ(Load<uint32_t>(*table, 24), kOemRevision);
  EXPECT_EQ(Text(*table, 28, 4), "TERN");
  EXPECT_EQ(Load<uint32_t>(*table, 32), kCreatorRevision);
  EXPECT_EQ(Sum(*table), 0);
  EXPECT_EQ((*table)[40], 5);
}

TEST(SdtTest, SealRejectsTablesShorterThanAHeader) {
  std::vector<uint8_t> short_table(35);
  EXPECT_FALSE(SealSdt(short_table).ok());
}

TEST(SdtTest, SerializeSdtSealsAFixedTable) {
  Fadt fadt{};
  fadt.header = MakeSdtHeader("FACP", kFadtRevision);
  fadt.flags = kFadtHwReducedAcpi;
  fadt.sleep_control_reg = IoPortByteRegister(0x600);
  auto bytes = SerializeSdt(fadt);
  ASSERT_TRUE(bytes.ok());
  ASSERT_EQ(bytes->size(), 276u);
  EXPECT_EQ(Load<uint32_t>(*bytes, 4), 276u);
  EXPECT_EQ(Sum(*bytes), 0);
  EXPECT_EQ(Load<uint32_t>(*bytes, 112), 1u << 20);
  // Generic Address Structure at offset 244: SystemIO, 8 bits, offset 0, byte access, 0x600.
  EXPECT_EQ((*bytes)[244], 1);
  EXPECT_EQ((*bytes)[245], 8);
  EXPECT_EQ((*bytes)[246], 0);
  EXPECT_EQ((*bytes)[247], 1);
  EXPECT_EQ(Load<uint64_t>(*bytes, 248), 0x600u);
}

TEST(RsdpTest, HasBothChecksumsAndTheXsdtAddress) {
  Rsdp rsdp = MakeRsdp(0x123456789a);
  std::vector<uint8_t> bytes;
  AppendBytes(bytes, rsdp);
  ASSERT_EQ(bytes.size(), 36u);
  EXPECT_EQ(Text(bytes, 0, 8), "RSD PTR ");
  EXPECT_EQ(Sum(std::span(bytes).first(20)), 0);
  EXPECT_EQ(Sum(bytes), 0);
  EXPECT_EQ(Text(bytes, 9, 6), "TERN  ");
  EXPECT_EQ(bytes[15], 2);                    // revision
  EXPECT_EQ(Load<uint32_t>(bytes, 16), 0u);   // no RSDT
  EXPECT_EQ(Load<uint32_t>(bytes, 20), 36u);  // length
  EXPECT_EQ(Load<uint64_t>(bytes, 24), 0x123456789au);
}

TEST(XsdtTest, ListsTheAddressesInOrder) {
  const uint64_t addresses[] = {0xe0100, 0x1'0000'0000};
  auto xsdt = BuildXsdt(addresses);
  ASSERT_TRUE(xsdt.ok());
  ASSERT_EQ(xsdt->size(), 36u + 16u);
  EXPECT_EQ(Text(*xsdt, 0, 4), "XSDT");
  EXPECT_EQ((*xsdt)[8], 1);
  EXPECT_EQ(Load<uint64_t>(*xsdt, 36), 0xe0100u);
  EXPECT_EQ(Load<uint64_t>(*xsdt, 44), 0x1'0000'0000u);
  EXPECT_EQ(Sum(*xsdt), 0);
}

TEST(TableAreaTest, AlignsAndRefusesOverflow) {
  TableArea area(0x1000, 0x1100);
  EXPECT_EQ(*area.Allocate(36, 16), 0x1000u);
  EXPECT_EQ(*area.Allocate(8, 16), 0x1030u);
  EXPECT_EQ(*area.Allocate(0x10, 8), 0x1038u);
  EXPECT_FALSE(area.Allocate(0x100, 16).ok());
  EXPECT_EQ(*area.Allocate(0xb8, 1), 0x1048u);  // exactly fills the area
  EXPECT_FALSE(area.Allocate(1, 1).ok());
  EXPECT_FALSE(TableArea(0, 0x100).Allocate(1, 3).ok());
  EXPECT_FALSE(TableArea(0, 0x100).Allocate(UINT64_MAX, 1).ok());
}

}  // namespace
}  // namespace tern::acpi
