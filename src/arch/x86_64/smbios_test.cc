// Unit tests for the SMBIOS tables: they read guest memory the way Linux's dmi_scan.c does (a
// 16-byte-step scan of 0xf0000-0xfffff for "_SM3_", the entry point checksum, then a walk of
// the structures and their string sets) using the byte offsets of DSP0134 §5.2.2, §7.1 and §7.2.
#include "arch/x86_64/smbios.h"

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/mptable.h"
#include "arch/x86_64/table_test_util.h"

namespace tern::x86_64 {
namespace {

using testing::Bytes;
using testing::Load;
using testing::Sum;
using testing::Text;

GuestMemory LowMemory() {
  std::array<RegionSpec, 1> regions = {{{0, kFirmwareEnd}}};
  auto memory = GuestMemory::Create(regions);
  EXPECT_TRUE(memory.ok());
  return std::move(memory).value();
}

struct Parsed {
  int major = 0;
  std::map<uint8_t, std::vector<uint8_t>> formatted;       // type -> formatted area
  std::map<uint8_t, std::vector<std::string>> strings;     // type -> its string set
  std::string String(uint8_t type, size_t offset) const {  // the string a field numbers
    uint8_t number = formatted.at(type)[offset];
    return number == 0 ? "" : strings.at(type).at(number - 1);
  }
};

// dmi_smbios3_present + dmi_walk: the first "_SM3_" with a good checksum, then the structures up
// to type 127 or the table's maximum size.
std::optional<Parsed> Parse(const GuestMemory& memory) {
  for (uint64_t gpa = 0xf0000; gpa + 24 <= kFirmwareEnd; gpa += 16) {
    std::span<const uint8_t> entry = Bytes(memory, gpa, 24);
    if (Text(entry, 0, 5) != "_SM3_" || entry[6] < 0x18 || Sum(entry.first(entry[6])) != 0) {
      continue;
    }
    Parsed parsed;
    parsed.major = entry[7];
    auto size = Load<uint32_t>(entry, 0x0c);
    std::span<const uint8_t> table = Bytes(memory, Load<uint64_t>(entry, 0x10), size);
    size_t at = 0;
    while (at + 4 <= table.size()) {
      uint8_t type = table[at], length = table[at + 1];
      parsed.formatted[type].assign(table.begin() + at, table.begin() + at + length);
      size_t s = at + length;
      std::vector<std::string>& strings = parsed.strings[type];
      while (s < table.size() && table[s] != 0) {
        std::string text(reinterpret_cast<const char*>(&table[s]));
        strings.push_back(text);
        s += text.size() + 1;
      }
      at = strings.empty() ? s + 2 : s + 1;
      if (type == 127) return parsed;
    }
    return std::nullopt;  // no end-of-table structure
  }
  return std::nullopt;
}

TEST(SmbiosTest, LinuxFindsSystemInformation) {
  GuestMemory memory = LowMemory();
  SmbiosSystemInfo info;
  info.manufacturer = "Amazon EC2";
  info.product_name = "t3.micro";
  info.serial_number = "ec2e1916-9099-7caf-fd21-012345abcdef";
  info.uuid = ParseSmbiosUuid("EC2E1916-9099-7caf-fd21-012345abcdef").value();
  info.family = "Tern";
  ASSERT_TRUE(SetupSmbios(memory, info).ok());
  std::optional<Parsed> parsed = Parse(memory);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->major, 3);
  EXPECT_EQ(parsed->String(0, 0x04), "Tern");                                  // BIOS vendor
  EXPECT_EQ(parsed->formatted.at(0)[0x13] & 0x10, 0x10);                       // a VM
  EXPECT_EQ(parsed->String(1, 0x04), "Amazon EC2");                            // sys_vendor
  EXPECT_EQ(parsed->String(1, 0x05), "t3.micro");                              // product_name
  EXPECT_EQ(parsed->String(1, 0x06), "");                                      // no version
  EXPECT_EQ(parsed->String(1, 0x07), "ec2e1916-9099-7caf-fd21-012345abcdef");  // product_serial
  EXPECT_EQ(parsed->String(1, 0x1a), "Tern");
  // Linux prints the UUID of SMBIOS >= 2.6 from these bytes as ec2e1916-9099-7caf-...
  const std::vector<uint8_t>& system = parsed->formatted.at(1);
  std::vector<uint8_t> uuid(system.begin() + 8, system.begin() + 24);
  EXPECT_EQ(uuid, (std::vector<uint8_t>{0x16, 0x19, 0x2e, 0xec, 0x99, 0x90, 0xaf, 0x7c, 0xfd, 0x21,
                                        0x01, 0x23, 0x45, 0xab, 0xcd, 0xef}));
  EXPECT_EQ(system[0x18], 0x06);  // wake-up type: power switch
}

TEST(SmbiosTest, CoexistsWithTheLargestMpTable) {
  GuestMemory memory = LowMemory();
  ASSERT_TRUE(SetupMpTable(memory, kMaxVcpus).ok());
  ASSERT_TRUE(SetupSmbios(memory, SmbiosSystemInfo{}).ok());
  std::optional<Parsed> parsed = Parse(memory);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->String(1, 0x04), "Tern");
  EXPECT_EQ(parsed->String(1, 0x05), "tern-vmm");
  EXPECT_EQ(parsed->String(1, 0x07), "");
  EXPECT_EQ(Text(Bytes(memory, kMpTableStart, 4), 0, 4), "_MP_");  // still intact
}

TEST(SmbiosTest, RefusesBadStringsAndUuids) {
  GuestMemory memory = LowMemory();
  SmbiosSystemInfo info;
  info.product_name = std::string(kSmbiosMaxStringLength + 1, 'x');
  EXPECT_EQ(SetupSmbios(memory, info).error().errno_value(), EINVAL);
  info.product_name = "bad\nname";
  EXPECT_EQ(SetupSmbios(memory, info).error().errno_value(), EINVAL);
  info.product_name = std::string(kSmbiosMaxStringLength, 'x');
  EXPECT_TRUE(SetupSmbios(memory, info).ok());
  for (const char* bad :
       {"", "ec2e1916-9099-7caf-fd21-012345abcde", "ec2e1916+9099-7caf-fd21-012345abcdef",
        "ec2e1916-9099-7caf-fd21-012345abcdeg", "ec2e19169-099-7caf-fd21-012345abcdef"}) {
    EXPECT_FALSE(ParseSmbiosUuid(bad).ok()) << bad;
  }
}

TEST(SmbiosTest, GuestMemoryTooSmallIsAnError) {
  std::array<RegionSpec, 1> regions = {{{0, kSmbiosStart}}};
  auto memory = GuestMemory::Create(regions);
  ASSERT_TRUE(memory.ok());
  EXPECT_EQ(SetupSmbios(*memory, SmbiosSystemInfo{}).error().errno_value(), EFAULT);
}

}  // namespace
}  // namespace tern::x86_64
