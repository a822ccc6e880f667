// Unit tests for the x86-64 ACPI tables: they parse guest memory the way a guest's ACPICA does
// (RSDP scan and checksums, XSDT, each table's length and checksum, FADT, MADT, DSDT) using the
// byte offsets of ACPI 6.4 §5.2, independently of the structs that wrote them.
#include "arch/x86_64/acpi_tables.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/table_test_util.h"
#include "devices/acpi_ged.h"

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

bool Contains(std::span<const uint8_t> haystack, const std::vector<uint8_t>& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

// ACPICA's legacy scan of 0xe0000-0xfffff in 16-byte steps: signature, both checksums.
std::optional<uint64_t> ScanForRsdp(const GuestMemory& memory) {
  for (uint64_t gpa = 0xe0000; gpa + 36 <= kFirmwareEnd; gpa += 16) {
    std::span<const uint8_t> rsdp = Bytes(memory, gpa, 36);
    if (Text(rsdp, 0, 8) == "RSD PTR " && Sum(rsdp.first(20)) == 0 && Sum(rsdp) == 0) {
      return gpa;
    }
  }
  return std::nullopt;
}

// A system description table found in guest memory, checked as ACPICA checks it.
std::span<const uint8_t> ReadTable(const GuestMemory& memory, uint64_t address) {
  EXPECT_GE(address, kAcpiStart);
  EXPECT_EQ(address % 8, 0u) << "table at " << address << " is not 8-byte aligned";
  std::span<const uint8_t> header = Bytes(memory, address, 36);
  const uint32_t length = Load<uint32_t>(header, 4);
  EXPECT_GE(length, 36u);
  EXPECT_LE(address + length, kMpTableStart) << Text(header, 0, 4) << " runs past the area";
  std::span<const uint8_t> table = Bytes(memory, address, length);
  EXPECT_EQ(Sum(table), 0) << Text(header, 0, 4) << " checksum";
  EXPECT_EQ(Text(header, 10, 6), "TERN  ");
  EXPECT_EQ(Text(header, 16, 8), "TERNVMM ");
  EXPECT_EQ(Text(header, 28, 4), "TERN");
  return table;
}

struct GuestView {
  uint64_t rsdp = 0;
  std::span<const uint8_t> xsdt;
  std::map<std::string, std::span<const uint8_t>> tables;  // by signature, DSDT included
  std::vector<std::pair<uint64_t, uint64_t>> ranges;       // [start, end) of every structure
};

GuestView Parse(const GuestMemory& memory, uint64_t rsdp_address) {
  GuestView view;
  view.rsdp = rsdp_address;
  std::span<const uint8_t> rsdp = Bytes(memory, rsdp_address, 36);
  EXPECT_EQ(rsdp[15], 2);  // revision
  EXPECT_EQ(Text(rsdp, 9, 6), "TERN  ");
  EXPECT_EQ(Load<uint32_t>(rsdp, 20), 36u);
  view.ranges.push_back({rsdp_address, rsdp_address + 36});
  const uint64_t xsdt_address = Load<uint64_t>(rsdp, 24);
  view.xsdt = ReadTable(memory, xsdt_address);
  EXPECT_EQ(Text(view.xsdt, 0, 4), "XSDT");
  view.ranges.push_back({xsdt_address, xsdt_address + view.xsdt.size()});
  EXPECT_EQ((view.xsdt.size() - 36) % 8, 0u);
  for (size_t offset = 36; offset + 8 <= view.xsdt.size(); offset += 8) {
    const uint64_t address = Load<uint64_t>(view.xsdt, offset);
    std::span<const uint8_t> table = ReadTable(memory, address);
    view.tables[Text(table, 0, 4)] = table;
    view.ranges.push_back({address, address + table.size()});
  }
  if (view.tables.count("FACP") && view.tables["FACP"].size() >= 148) {
    const uint64_t dsdt_address = Load<uint64_t>(view.tables["FACP"], 140);
    view.tables["DSDT"] = ReadTable(memory, dsdt_address);
    view.ranges.push_back({dsdt_address, dsdt_address + view.tables["DSDT"].size()});
  }
  return view;
}

void ExpectSleepRegister(std::span<const uint8_t> fadt, size_t offset, uint16_t port) {
  EXPECT_EQ(fadt[offset], 1) << "system I/O space";
  EXPECT_EQ(fadt[offset + 1], 8) << "8 bits wide";
  EXPECT_EQ(fadt[offset + 2], 0) << "bit offset";
  EXPECT_EQ(fadt[offset + 3], 1) << "byte access";
  EXPECT_EQ(Load<uint64_t>(fadt, offset + 4), port);
}

class AcpiTablesTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  void SetUp() override {
    auto rsdp = SetupAcpiTables(memory_, GetParam());
    ASSERT_TRUE(rsdp.ok()) << rsdp.error().ToString();
    ASSERT_EQ(*rsdp, kAcpiStart);
    view_ = Parse(memory_, *rsdp);
  }

  GuestMemory memory_ = LowMemory();
  GuestView view_;
};

TEST_P(AcpiTablesTest, RsdpIsFoundByTheBiosAreaScan) {
  EXPECT_EQ(ScanForRsdp(memory_), kAcpiStart);
}

TEST_P(AcpiTablesTest, XsdtListsFadtAndMadtAndNothingOverlaps) {
  EXPECT_EQ(view_.tables.count("FACP"), 1u);
  EXPECT_EQ(view_.tables.count("APIC"), 1u);
  EXPECT_EQ(view_.tables.count("DSDT"), 1u);
  EXPECT_EQ(view_.xsdt[8], 1);  // XSDT revision
  std::vector<std::pair<uint64_t, uint64_t>> ranges = view_.ranges;
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].second, ranges[i].first) << "tables overlap";
  }
}

TEST_P(AcpiTablesTest, WithoutPciThereIsNoMcfgOrHostBridge) {
  EXPECT_EQ(view_.tables.count("MCFG"), 0u);
  EXPECT_FALSE(Contains(view_.tables["DSDT"], {'P', 'C', 'I', '0'}));
}

TEST_P(AcpiTablesTest, FadtDescribesAHardwareReducedPlatform) {
  std::span<const uint8_t> fadt = view_.tables["FACP"];
  ASSERT_EQ(fadt.size(), 276u);
  EXPECT_EQ(fadt[8], 6);    // revision
  EXPECT_EQ(fadt[131], 4);  // minor version
  const uint32_t flags = Load<uint32_t>(fadt, 112);
  EXPECT_NE(flags & (1u << 20), 0u) << "HW_REDUCED_ACPI";
  EXPECT_NE(flags & (1u << 4), 0u) << "PWR_BUTTON (control method)";
  EXPECT_NE(flags & (1u << 5), 0u) << "SLP_BUTTON (control method)";
  EXPECT_EQ(flags & (1u << 10), 0u) << "RESET_REG_SUP without a reset register";
  const uint16_t boot_arch = Load<uint16_t>(fadt, 109);
  EXPECT_NE(boot_arch & (1u << 2), 0u) << "VGA not present";
  EXPECT_EQ(Load<uint32_t>(fadt, 36), 0u) << "no FACS";
  EXPECT_EQ(Load<uint16_t>(fadt, 46), 0u) << "no SCI";
  ExpectSleepRegister(fadt, 244, kAcpiSleepControlPort);
  ExpectSleepRegister(fadt, 256, kAcpiSleepStatusPort);
  EXPECT_EQ(Text(fadt, 268, 8), "TERNVMM ");
}

TEST_P(AcpiTablesTest, DsdtDefinesS5AndCom1) {
  std::span<const uint8_t> dsdt = view_.tables["DSDT"];
  EXPECT_EQ(dsdt[8], 2);  // revision 2: 64-bit AML integers
  // Name (_S5, Package () {5, 0, 0, 0}), ACPI 6.4 §20.2.5.
  EXPECT_TRUE(Contains(
      dsdt, {0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, kS5SleepType, 0x00, 0x00, 0x00}));
  // Device (COM1) with _HID EisaId ("PNP0501") and IO 0x3f8/8 + IRQ 4 in its _CRS.
  EXPECT_TRUE(Contains(dsdt, {0x5b, 0x82}));
  EXPECT_TRUE(
      Contains(dsdt, {'C', 'O', 'M', '1', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01}));
  EXPECT_TRUE(Contains(dsdt, {0x47, 0x01, kCom1Port & 0xff, kCom1Port >> 8, kCom1Port & 0xff,
                              kCom1Port >> 8, 0x01, 0x08, 0x22, 1 << kCom1Irq, 0x00, 0x79}));
}

// Little-endian bytes of `value`.
std::vector<uint8_t> Le32(uint32_t value) {
  return {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
          static_cast<uint8_t>(value >> 16), static_cast<uint8_t>(value >> 24)};
}

std::vector<uint8_t> Join(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

// \_SB.GED0 as iasl 20200925 (-oa) encodes the ASL below, with kAcpiGedGsi and kAcpiGedAddress:
//   Device (GED0) { Name (_HID, "ACPI0013") Name (_UID, Zero)
//     Name (_CRS, ResourceTemplate () {
//       Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {GSI} })
//     OperationRegion (GDRG, SystemMemory, ADDRESS, 0x04)
//     Field (GDRG, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }
//     Method (_EVT, 1, Serialized) {
//       Store (GDAT, Local0)
//       If (LEqual (And (Local0, One, ), One)) { Notify (\_SB.PWRB, 0x80) } } }
std::vector<uint8_t> ExpectedGed() {
  static_assert(AcpiGed::kPowerButtonEvent == 1, "_EVT tests bit 0 with One");
  static_assert(AcpiGed::kRegisterSize == 4, "the field is one DWord");
  static_assert(kAcpiGedAddress > 0xffff && kAcpiGedAddress <= 0xffffffff, "a DWordConst");
  return Join(
      {{0x5b, 0x82, 0x4c, 0x06, 'G',  'E',  'D',  '0',  0x08, '_',  'H',  'I',  'D', 0x0d, 'A',
        'C',  'P',  'I',  '0',  '0',  '1',  '3',  0x00, 0x08, '_',  'U',  'I',  'D', 0x00, 0x08,
        '_',  'C',  'R',  'S',  0x11, 0x0e, 0x0a, 0x0b, 0x89, 0x06, 0x00, 0x03, 0x01},
       Le32(kAcpiGedGsi),
       {0x79, 0x00, 0x5b, 0x80, 'G', 'D', 'R', 'G', 0x00, 0x0c},
       Le32(static_cast<uint32_t>(kAcpiGedAddress)),
       {0x0a, 0x04, 0x5b, 0x81, 0x0b, 'G',  'D',  'R',  'G',  0x43, 'G',  'D',  'A',
        'T',  0x20, 0x14, 0x21, '_',  'E',  'V',  'T',  0x09, 0x70, 'G',  'D',  'A',
        'T',  0x60, 0xa0, 0x14, 0x93, 0x7b, 0x60, 0x01, 0x00, 0x01, 0x86, 0x5c, 0x2e,
        '_',  'S',  'B',  '_',  'P',  'W',  'R',  'B',  0x0a, 0x80}});
}

// [begin, end) of the body of the DSDT's Scope (\_SB) (ACPI 6.4 §20.2.5.1 DefScope: ScopeOp,
// PkgLength, NameString, terms); {0, 0} if there is none.
std::pair<size_t, size_t> SystemBusScope(std::span<const uint8_t> dsdt) {
  const std::vector<uint8_t> name = {0x5c, '_', 'S', 'B', '_'};
  const auto found = std::search(dsdt.begin(), dsdt.end(), name.begin(), name.end());
  const size_t name_at = found - dsdt.begin();
  for (size_t follow = 0; found != dsdt.end() && follow <= 3 && name_at >= 2 + follow; ++follow) {
    const size_t op_at = name_at - 2 - follow;
    if (dsdt[op_at] != 0x10 || (dsdt[op_at + 1] >> 6) != follow) continue;
    size_t length = follow == 0 ? dsdt[op_at + 1] & 0x3f : dsdt[op_at + 1] & 0x0f;
    for (size_t i = 0; i < follow; ++i) length |= size_t{dsdt[op_at + 2 + i]} << (4 + 8 * i);
    if (op_at + 1 + length > dsdt.size()) break;
    return {name_at + name.size(), op_at + 1 + length};
  }
  ADD_FAILURE() << "no Scope (\\_SB) in the DSDT";
  return {0, 0};
}

// Memory32Fixed (ReadWrite, kAcpiGedAddress, kAcpiGedSize)
std::vector<uint8_t> ExpectedGedReservation() {
  static_assert(kAcpiGedSize >= AcpiGed::kRegisterSize);
  return Join({{0x86, 0x09, 0x00, 0x01},
               Le32(static_cast<uint32_t>(kAcpiGedAddress)),
               Le32(static_cast<uint32_t>(kAcpiGedSize))});
}

TEST_P(AcpiTablesTest, DsdtDefinesTheGenericEventDeviceAndPowerButton) {
  std::span<const uint8_t> dsdt = view_.tables["DSDT"];
  EXPECT_TRUE(Contains(dsdt, ExpectedGed()));
  // Device (PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, Zero) }
  EXPECT_TRUE(Contains(dsdt, {0x5b, 0x82, 0x15, 'P',  'W',  'R',  'B', 0x08, '_', 'H', 'I', 'D',
                              0x0c, 0x41, 0xd0, 0x0c, 0x0c, 0x08, '_', 'U',  'I', 'D', 0x00}));
  // Both inside Scope (\_SB).
  const auto [scope_begin, scope_end] = SystemBusScope(dsdt);
  ASSERT_LT(scope_begin, scope_end);
  std::span<const uint8_t> system_bus = dsdt.subspan(scope_begin, scope_end - scope_begin);
  EXPECT_TRUE(Contains(system_bus, ExpectedGed()));
  EXPECT_TRUE(Contains(system_bus, {'P', 'W', 'R', 'B', 0x08, '_', 'H', 'I', 'D'}));
}

TEST_P(AcpiTablesTest, DsdtReservesTheGedPageWithoutPci) {
  std::span<const uint8_t> dsdt = view_.tables["DSDT"];
  EXPECT_TRUE(
      Contains(dsdt, {'M', 'R', 'E', 'S', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x02}));
  // The GED page is the only resource: the End Tag follows it.
  EXPECT_TRUE(Contains(dsdt, Join({ExpectedGedReservation(), {0x79, 0x00}})));
}

TEST_P(AcpiTablesTest, MadtListsEveryVcpuAndOneIoapic) {
  const uint32_t num_vcpus = GetParam();
  std::span<const uint8_t> madt = view_.tables["APIC"];
  EXPECT_EQ(madt[8], 5);  // revision
  EXPECT_EQ(Load<uint32_t>(madt, 36), kLapicAddress);
  EXPECT_EQ(Load<uint32_t>(madt, 40) & 1, 0u) << "PCAT_COMPAT on a hardware-reduced platform";
  std::vector<std::span<const uint8_t>> lapics, ioapics;
  size_t offset = 44;
  while (offset + 2 <= madt.size()) {
    const uint8_t type = madt[offset];
    const uint8_t length = madt[offset + 1];
    ASSERT_GE(length, 2);
    ASSERT_LE(offset + length, madt.size()) << "entry overruns the MADT";
    if (type == 0) lapics.push_back(madt.subspan(offset, length));
    if (type == 1) ioapics.push_back(madt.subspan(offset, length));
    offset += length;
  }
  EXPECT_EQ(offset, madt.size());
  ASSERT_EQ(lapics.size(), num_vcpus);
  for (uint32_t i = 0; i < num_vcpus; ++i) {
    ASSERT_EQ(lapics[i].size(), 8u);
    EXPECT_EQ(lapics[i][2], i) << "ACPI processor UID";
    EXPECT_EQ(lapics[i][3], i) << "APIC ID";
    EXPECT_EQ(Load<uint32_t>(lapics[i], 4) & 1, 1u) << "enabled";
  }
  ASSERT_EQ(ioapics.size(), 1u);
  ASSERT_EQ(ioapics[0].size(), 12u);
  EXPECT_GE(ioapics[0][2], num_vcpus) << "IOAPIC ID clashes with a CPU's APIC ID";
  EXPECT_NE(ioapics[0][2], 0xff);
  EXPECT_EQ(Load<uint32_t>(ioapics[0], 4), kIoapicAddress);
  EXPECT_EQ(Load<uint32_t>(ioapics[0], 8), 0u) << "GSI base";
}

TEST_P(AcpiTablesTest, WritesNothingOutsideTheAcpiArea) {
  GuestMemory memory = LowMemory();
  std::vector<uint8_t> fill(kFirmwareEnd, kFill);
  ASSERT_TRUE(memory.Write(0, fill).ok());
  ASSERT_TRUE(SetupAcpiTables(memory, GetParam()).ok());
  std::span<const uint8_t> all = Bytes(memory, 0, kFirmwareEnd);
  for (uint64_t gpa = 0; gpa < kFirmwareEnd; ++gpa) {
    if (gpa >= kAcpiStart && gpa < kMpTableStart) continue;
    ASSERT_EQ(all[gpa], kFill) << "byte at " << gpa << " was written";
  }
}

INSTANTIATE_TEST_SUITE_P(VcpuCounts, AcpiTablesTest, ::testing::Values(1u, 2u, 32u, kMaxVcpus));

// With PCI: the MCFG and, in the DSDT, \_SB.PCI0 and the ECAM reservation \_SB.MRES.
class AcpiTablesPciTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rsdp = SetupAcpiTables(memory_, 2, layout_);
    ASSERT_TRUE(rsdp.ok()) << rsdp.error().ToString();
    view_ = Parse(memory_, *rsdp);
  }

  GuestMemory memory_ = LowMemory();
  PciLayout layout_ = PciLayoutFor(uint64_t{512} << 20);
  GuestView view_;
};

TEST_F(AcpiTablesPciTest, XsdtListsTheMcfg) {
  EXPECT_EQ(view_.xsdt.size(), 36u + 3 * 8);
  ASSERT_EQ(view_.tables.count("MCFG"), 1u);
  std::vector<std::pair<uint64_t, uint64_t>> ranges = view_.ranges;
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    EXPECT_LE(ranges[i - 1].second, ranges[i].first) << "tables overlap";
  }
}

TEST_F(AcpiTablesPciTest, McfgDescribesEcamForBusZero) {
  std::span<const uint8_t> mcfg = view_.tables["MCFG"];
  ASSERT_EQ(mcfg.size(), 60u);  // header, 8 reserved bytes, one 16-byte allocation
  EXPECT_EQ(mcfg[8], 1);        // revision
  EXPECT_EQ(Load<uint64_t>(mcfg, 36), 0u);
  EXPECT_EQ(Load<uint64_t>(mcfg, 44), 0xe0000000u);  // base address
  EXPECT_EQ(Load<uint16_t>(mcfg, 52), 0u);           // segment group
  EXPECT_EQ(mcfg[54], 0);                            // start bus
  EXPECT_EQ(mcfg[55], 0);                            // end bus
  EXPECT_EQ(Load<uint32_t>(mcfg, 56), 0u);
}

TEST_F(AcpiTablesPciTest, DsdtDescribesTheHostBridge) {
  std::span<const uint8_t> dsdt = view_.tables["DSDT"];
  // Name (_HID, EisaId ("PNP0A08")) Name (_CID, EisaId ("PNP0A03")) Name (_ADR, Zero)
  // Name (_SEG, Zero) Name (_UID, Zero) Name (_BBN, Zero), as iasl encodes them.
  EXPECT_TRUE(
      Contains(dsdt, {'P',  'C',  'I',  '0', 0x08, '_',  'H',  'I',  'D',  0x0c, 0x41, 0xd0,
                      0x0a, 0x08, 0x08, '_', 'C',  'I',  'D',  0x0c, 0x41, 0xd0, 0x0a, 0x03,
                      0x08, '_',  'A',  'D', 'R',  0x00, 0x08, '_',  'S',  'E',  'G',  0x00,
                      0x08, '_',  'U',  'I', 'D',  0x00, 0x08, '_',  'B',  'B',  'N',  0x00}));
  // Its _CRS: WordBusNumber 0-0; IO 0xcf8/8; WordIO 0x1000-0xffff; DWordMemory
  // 0xc0000000-0xdfffffff; QWordMemory 0x100000000-0x10ffffffff (iasl's bytes).
  EXPECT_TRUE(Contains(
      dsdt,
      {0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
       0x00, 0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08, 0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03,
       0x00, 0x00, 0x00, 0x10, 0xff, 0xff, 0x00, 0x00, 0x00, 0xf0, 0x87, 0x17, 0x00, 0x00, 0x0c,
       0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xdf, 0x00, 0x00,
       0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03, 0x00, 0x00, 0x00,
       0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xff, 0xff,
       0xff, 0xff, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
       0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x79, 0x00}));
}

TEST_F(AcpiTablesPciTest, DsdtReservesTheEcamAsAMotherboardResource) {
  std::span<const uint8_t> dsdt = view_.tables["DSDT"];
  // Device (MRES) { Name (_HID, EisaId ("PNP0C02")) ... Memory32Fixed (ReadWrite, 0xE0000000,
  // 0x100000) }
  EXPECT_TRUE(
      Contains(dsdt, {'M', 'R', 'E', 'S', 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0c, 0x02}));
  // The GED page, then the ECAM, then the End Tag.
  EXPECT_TRUE(Contains(dsdt, Join({ExpectedGedReservation(),
                                   {0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00,
                                    0x10, 0x00, 0x79, 0x00}})));
}

TEST_F(AcpiTablesPciTest, DsdtStillHasTheGenericEventDevice) {
  EXPECT_TRUE(Contains(view_.tables["DSDT"], ExpectedGed()));
}

TEST(AcpiTablesPciLayoutTest, OmitsAnEmpty64BitWindow) {
  GuestMemory memory = LowMemory();
  PciLayout layout = PciLayoutFor(uint64_t{512} << 20);
  layout.mmio64_size = 0;
  auto rsdp = SetupAcpiTables(memory, 1, layout);
  ASSERT_TRUE(rsdp.ok());
  GuestView view = Parse(memory, *rsdp);
  EXPECT_TRUE(Contains(view.tables["DSDT"], {'P', 'C', 'I', '0'}));
  EXPECT_FALSE(Contains(view.tables["DSDT"], {0x8a, 0x2b, 0x00}));
}

TEST(AcpiTablesPciLayoutTest, RejectsMalformedLayouts) {
  GuestMemory memory = LowMemory();
  const PciLayout good = PciLayoutFor(uint64_t{512} << 20);
  std::vector<PciLayout> bad(6, good);
  bad[0].ecam_size = 0;
  bad[1].ecam_size = 0x180000;             // not whole buses
  bad[2].ecam_size = uint64_t{512} << 20;  // 512 buses
  bad[3].ecam_base = 0xfff00000 + 0x1000;  // misaligned
  bad[4].mmio32_base = 0xffff0000;         // runs past 4 GiB
  bad[5].mmio64_base = ~uint64_t{0};
  for (const PciLayout& layout : bad) {
    auto rsdp = SetupAcpiTables(memory, 1, layout);
    ASSERT_FALSE(rsdp.ok());
    EXPECT_EQ(rsdp.error().errno_value(), EINVAL);
  }
}

TEST(AcpiTablesErrorsTest, RejectsBadVcpuCounts) {
  GuestMemory memory = LowMemory();
  for (uint32_t bad : {0u, kMaxVcpus + 1}) {
    auto rsdp = SetupAcpiTables(memory, bad);
    ASSERT_FALSE(rsdp.ok()) << bad;
    EXPECT_EQ(rsdp.error().errno_value(), EINVAL);
  }
  EXPECT_FALSE(ScanForRsdp(memory).has_value());
}

TEST(AcpiTablesErrorsTest, FailsWhenGuestMemoryDoesNotCoverTheArea) {
  std::array<RegionSpec, 1> regions = {{{0, kAcpiStart}}};
  auto memory = GuestMemory::Create(regions);
  ASSERT_TRUE(memory.ok());
  auto rsdp = SetupAcpiTables(*memory, 1);
  ASSERT_FALSE(rsdp.ok());
  EXPECT_EQ(rsdp.error().errno_value(), EFAULT);
}

}  // namespace
}  // namespace tern::x86_64
