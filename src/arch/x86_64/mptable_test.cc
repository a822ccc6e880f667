// Unit tests for the MP table: they read guest memory the way Linux's mpparse.c does (floating
// pointer scan, checksums, entry walk) using the byte offsets of MP spec 1.4 §4.1-§4.3.
#include "arch/x86_64/mptable.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/table_test_util.h"

namespace tern::x86_64 {
namespace {

constexpr uint8_t kFill = 0xa5;

GuestMemory LowMemory() {
  std::array<RegionSpec, 1> regions = {{{0, kFirmwareEnd}}};
  auto memory = GuestMemory::Create(regions);
  EXPECT_TRUE(memory.ok());
  return std::move(memory).value();
}

using testing::Bytes;
using testing::Load;
using testing::Sum;
using testing::Text;

// Linux's smp_scan_config over [0xf0000, 0x100000): "_MP_", length 1, spec 1 or 4, sum 0.
std::optional<uint64_t> ScanForFloatingPointer(const GuestMemory& memory) {
  for (uint64_t gpa = kMpTableStart; gpa + 16 <= kFirmwareEnd; gpa += 16) {
    std::span<const uint8_t> mpf = Bytes(memory, gpa, 16);
    if (Text(mpf, 0, 4) == "_MP_" && mpf[8] == 1 && (mpf[9] == 1 || mpf[9] == 4) && Sum(mpf) == 0) {
      return gpa;
    }
  }
  return std::nullopt;
}

struct ParsedMpTable {
  struct Cpu {
    uint8_t apic_id;
    uint8_t flags;
  };
  std::vector<Cpu> cpus;
  std::vector<std::array<uint8_t, 8>> buses, ioapics, intsrcs, lintsrcs;
  uint16_t entries_walked = 0;
};

// Walks the base table entries (processor entries are 20 bytes, the others 8).
ParsedMpTable WalkEntries(std::span<const uint8_t> table) {
  ParsedMpTable parsed;
  size_t offset = 44;
  while (offset < table.size()) {
    uint8_t type = table[offset];
    size_t size = type == 0 ? 20 : 8;
    EXPECT_LE(offset + size, table.size()) << "entry overruns the base table";
    if (offset + size > table.size() || type > 4) break;
    std::array<uint8_t, 8> head;
    std::memcpy(head.data(), table.data() + offset, 8);
    if (type == 0) parsed.cpus.push_back({table[offset + 1], table[offset + 3]});
    if (type == 1) parsed.buses.push_back(head);
    if (type == 2) parsed.ioapics.push_back(head);
    if (type == 3) parsed.intsrcs.push_back(head);
    if (type == 4) parsed.lintsrcs.push_back(head);
    ++parsed.entries_walked;
    offset += size;
  }
  EXPECT_EQ(offset, table.size());
  return parsed;
}

class MpTableTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(MpTableTest, GuestFindsAConsistentTable) {
  const uint32_t num_vcpus = GetParam();
  GuestMemory memory = LowMemory();
  ASSERT_TRUE(SetupMpTable(memory, num_vcpus).ok());

  std::optional<uint64_t> mpf_address = ScanForFloatingPointer(memory);
  ASSERT_EQ(mpf_address, kMpTableStart);
  std::span<const uint8_t> mpf = Bytes(memory, kMpTableStart, 16);
  EXPECT_EQ(mpf[9], 4);   // spec revision 1.4
  EXPECT_EQ(mpf[11], 0);  // feature1: a configuration table is present
  for (size_t i = 12; i < 16; ++i) {
    EXPECT_EQ(mpf[i], 0) << "feature byte " << i - 10;  // feature2 bit 7 (IMCRP) clear; 3-5 0
  }
  const uint32_t config_address = Load<uint32_t>(mpf, 4);
  EXPECT_EQ(config_address, kMpTableStart + 16);

  std::span<const uint8_t> header = Bytes(memory, config_address, 44);
  EXPECT_EQ(Text(header, 0, 4), "PCMP");
  const uint16_t length = Load<uint16_t>(header, 4);
  std::span<const uint8_t> table = Bytes(memory, config_address, length);
  EXPECT_EQ(Sum(table), 0);
  EXPECT_EQ(header[6], 4);
  EXPECT_EQ(Text(header, 8, 8), "TERN    ");
  EXPECT_EQ(Text(header, 16, 12), "TERN        ");
  EXPECT_EQ(Load<uint32_t>(header, 36), kLapicAddress);
  EXPECT_EQ(Load<uint16_t>(header, 40), 0);  // extended table length
  EXPECT_EQ(header[42], 0);                  // extended table checksum of zero bytes

  ParsedMpTable parsed = WalkEntries(table);
  EXPECT_EQ(Load<uint16_t>(header, 34), parsed.entries_walked);
  ASSERT_EQ(parsed.cpus.size(), num_vcpus);
  for (uint32_t i = 0; i < num_vcpus; ++i) {
    EXPECT_EQ(parsed.cpus[i].apic_id, i);
    EXPECT_EQ(parsed.cpus[i].flags, i == 0 ? 0x03 : 0x01) << "vCPU " << i;
  }
  ASSERT_EQ(parsed.buses.size(), 1u);
  EXPECT_EQ(Text(parsed.buses[0], 2, 6), "ISA   ");
  const uint8_t isa_bus = parsed.buses[0][1];

  ASSERT_EQ(parsed.ioapics.size(), 1u);
  const uint8_t ioapic_id = parsed.ioapics[0][1];
  EXPECT_GE(ioapic_id, num_vcpus);  // no clash with APIC IDs 0..n-1
  EXPECT_NE(ioapic_id, 0xff);
  EXPECT_EQ(ioapic_id, IoapicApicId(num_vcpus));
  EXPECT_EQ(parsed.ioapics[0][3] & 1, 1);  // usable
  EXPECT_EQ(Load<uint32_t>(parsed.ioapics[0], 4), kIoapicAddress);

  ASSERT_EQ(parsed.intsrcs.size(), 16u);
  for (uint8_t irq = 0; irq < 16; ++irq) {
    const auto& e = parsed.intsrcs[irq];
    EXPECT_EQ(e[1], 0);                  // mp_INT
    EXPECT_EQ(Load<uint16_t>(e, 2), 0);  // conforms to the ISA bus: edge, active high
    EXPECT_EQ(e[4], isa_bus);
    EXPECT_EQ(e[5], irq);  // ISA IRQ n ...
    EXPECT_EQ(e[6], ioapic_id);
    EXPECT_EQ(e[7], irq);  // ... to IOAPIC pin n
  }
  ASSERT_EQ(parsed.lintsrcs.size(), 2u);
  EXPECT_EQ(parsed.lintsrcs[0][1], 3);  // ExtINT
  EXPECT_EQ(parsed.lintsrcs[0][7], 0);  // LINT0
  EXPECT_EQ(parsed.lintsrcs[1][1], 1);  // NMI
  EXPECT_EQ(parsed.lintsrcs[1][7], 1);  // LINT1
}

TEST_P(MpTableTest, WritesNothingOutsideTheTable) {
  GuestMemory memory = LowMemory();
  std::vector<uint8_t> fill(kFirmwareEnd, kFill);
  ASSERT_TRUE(memory.Write(0, fill).ok());
  ASSERT_TRUE(SetupMpTable(memory, GetParam()).ok());
  const uint16_t length = Load<uint16_t>(Bytes(memory, kMpTableStart + 16, 44), 4);
  const uint64_t end = kMpTableStart + 16 + length;
  std::span<const uint8_t> all = Bytes(memory, 0, kFirmwareEnd);
  for (uint64_t gpa = 0; gpa < kFirmwareEnd; ++gpa) {
    if (gpa >= kMpTableStart && gpa < end) continue;
    ASSERT_EQ(all[gpa], kFill) << "byte at " << gpa << " was written";
  }
}

INSTANTIATE_TEST_SUITE_P(VcpuCounts, MpTableTest, ::testing::Values(1u, 2u, 32u, kMaxVcpus));

TEST(MpTableErrorsTest, RejectsBadVcpuCounts) {
  GuestMemory memory = LowMemory();
  for (uint32_t bad : {0u, kMaxVcpus + 1, 0x10000u + 1}) {
    Status status = SetupMpTable(memory, bad);
    ASSERT_FALSE(status.ok()) << bad;
    EXPECT_EQ(status.error().errno_value(), EINVAL);
    EXPECT_NE(status.error().message().find("vCPU count"), std::string::npos);
  }
  EXPECT_FALSE(ScanForFloatingPointer(memory).has_value());
}

TEST(MpTableErrorsTest, FailsWhenGuestMemoryDoesNotCoverTheTable) {
  std::array<RegionSpec, 1> regions = {{{0, kMpTableStart}}};
  auto memory = GuestMemory::Create(regions);
  ASSERT_TRUE(memory.ok());
  Status status = SetupMpTable(*memory, 1);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), EFAULT);
}

}  // namespace
}  // namespace tern::x86_64
