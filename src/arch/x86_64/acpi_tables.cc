// Builds the x86-64 RSDP, XSDT, FADT, MADT, DSDT and MCFG and places them from kAcpiStart upward.
#include "arch/x86_64/acpi_tables.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "acpi/aml.h"
#include "acpi/sdt.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/mptable.h"

namespace tern::x86_64 {
namespace {

namespace aml = acpi::aml;

constexpr uint64_t kTableAlignment = 16;

// MADT fixed fields after the header, ACPI 6.4 §5.2.12 Table 5.19.
struct [[gnu::packed]] MadtFixed {
  uint32_t local_apic_address;
  uint32_t flags;
};

// Processor Local APIC structure, ACPI 6.4 §5.2.12.2 Table 5.22.
struct [[gnu::packed]] MadtLocalApic {
  uint8_t type;  // 0
  uint8_t length;
  uint8_t acpi_processor_uid;
  uint8_t apic_id;
  uint32_t flags;
};
static_assert(sizeof(MadtLocalApic) == 8);

// I/O APIC structure, ACPI 6.4 §5.2.12.3 Table 5.24.
struct [[gnu::packed]] MadtIoApic {
  uint8_t type;  // 1
  uint8_t length;
  uint8_t io_apic_id;
  uint8_t reserved;
  uint32_t io_apic_address;
  uint32_t global_system_interrupt_base;
};
static_assert(sizeof(MadtIoApic) == 12);

// Local APIC NMI structure, ACPI 6.4 §5.2.12.7 Table 5.29.
struct [[gnu::packed]] MadtLocalApicNmi {
  uint8_t type;  // 4
  uint8_t length;
  uint8_t acpi_processor_uid;  // 0xff: all processors
  uint16_t flags;              // MPS INTI flags; 0 = conforms to the bus
  uint8_t local_apic_lint;
};
static_assert(sizeof(MadtLocalApicNmi) == 6);

// MCFG, PCI Firmware 3.0 §4.1.2 Table 4-3: 8 reserved bytes after the header, then one
// allocation structure per ECAM range (Table 4-3 "Configuration Space Base Address Allocation").
struct [[gnu::packed]] McfgAllocation {
  uint64_t base_address;
  uint16_t pci_segment_group;
  uint8_t start_bus;
  uint8_t end_bus;
  uint32_t reserved;
};
static_assert(sizeof(McfgAllocation) == 16);
constexpr uint8_t kMcfgRevision = 1;
constexpr uint64_t kEcamBytesPerBus = 1 << 20;  // PCIe 4.0 §7.2.2
constexpr uint64_t kMaxBuses = 256;
constexpr uint64_t k4GiB = uint64_t{1} << 32;
constexpr uint16_t kPciIoWindowStart = 0x1000;  // ports below are the legacy devices'

constexpr uint8_t kMadtTypeLocalApic = 0;
constexpr uint8_t kMadtTypeIoApic = 1;
constexpr uint8_t kMadtTypeLocalApicNmi = 4;
constexpr uint32_t kLocalApicEnabled = 1;
constexpr uint8_t kAllProcessors = 0xff;

// A table's bytes and where it goes.
struct PlacedTable {
  uint64_t address;
  std::vector<uint8_t> bytes;
};

Status CheckVcpuCount(uint32_t num_vcpus) {
  if (num_vcpus == 0 || num_vcpus > kMaxVcpus) {
    return Error("ACPI tables: vCPU count " + std::to_string(num_vcpus) + " is not in 1.." +
                     std::to_string(kMaxVcpus),
                 EINVAL);
  }
  return Ok();
}

// \_SB.COM1: the 16550 UART at kCom1Port with ISA IRQ kCom1Irq (edge, active high).
aml::Term Com1Device() {
  return aml::Device("COM1",
                     {aml::Name("_HID", aml::EisaId("PNP0501")), aml::Name("_UID", aml::Integer(0)),
                      aml::Name("_CRS", aml::ResourceTemplate(
                                            {aml::Io(kCom1Port, kCom1Port, 1, 8),
                                             aml::IrqNoFlags(static_cast<uint8_t>(kCom1Irq))}))});
}

Status CheckPciLayout(const PciLayout& pci) {
  const bool ecam_ok = pci.ecam_size != 0 && pci.ecam_size % kEcamBytesPerBus == 0 &&
                       pci.ecam_size / kEcamBytesPerBus <= kMaxBuses &&
                       pci.ecam_base % kEcamBytesPerBus == 0 && pci.ecam_base < k4GiB &&
                       pci.ecam_size <= k4GiB - pci.ecam_base;
  const bool mmio32_ok =
      pci.mmio32_size != 0 && pci.mmio32_base < k4GiB && pci.mmio32_size <= k4GiB - pci.mmio32_base;
  const bool mmio64_ok = pci.mmio64_base + pci.mmio64_size >= pci.mmio64_base;
  if (!ecam_ok || !mmio32_ok || !mmio64_ok) {
    return Error("ACPI tables: malformed PCI layout", EINVAL);
  }
  return Ok();
}

uint8_t LastBus(const PciLayout& pci) {
  return static_cast<uint8_t>(pci.ecam_size / kEcamBytesPerBus - 1);
}

// \_SB.PCI0: the host bridge of segment 0 and the windows it forwards to bus 0 (ACPI 6.4
// §6.1.5 and §6.4.3.5, PCI Firmware 3.0 §4.1.5). Linux's x86 ACPI PCI code drops the
// configuration ports 0xcf8..0xcff from the windows; they are listed as QEMU and Cloud
// Hypervisor list them.
aml::Term PciHostBridge(const PciLayout& pci) {
  std::vector<aml::Resource> resources = {
      aml::WordBusNumber(0, LastBus(pci)),
      aml::Io(kPciConfigIoPort, kPciConfigIoPort, 1, kPciConfigIoSize),
      aml::WordIo(kPciIoWindowStart, 0xffff),
      aml::DWordMemory(static_cast<uint32_t>(pci.mmio32_base),
                       static_cast<uint32_t>(pci.mmio32_base + pci.mmio32_size - 1))};
  if (pci.mmio64_size != 0) {
    resources.push_back(aml::QWordMemory(pci.mmio64_base, pci.mmio64_base + pci.mmio64_size - 1));
  }
  return aml::Device(
      "PCI0", {aml::Name("_HID", aml::EisaId("PNP0A08")), aml::Name("_CID", aml::EisaId("PNP0A03")),
               aml::Name("_ADR", aml::Integer(0)), aml::Name("_SEG", aml::Integer(0)),
               aml::Name("_UID", aml::Integer(0)), aml::Name("_BBN", aml::Integer(0)),
               aml::Name("_CRS", aml::ResourceTemplate(resources))});
}

// \_SB.MRES: a motherboard resource (PNP0C02) reserving the GED register page, so that Linux
// assigns it to nothing else, and with PCI the ECAM range, which Linux uses for MMCONFIG only
// when such a device (or an e820 reservation) covers it (arch/x86/pci/mmconfig-shared.c).
aml::Term MotherboardResources(const std::optional<PciLayout>& pci) {
  std::vector<aml::Resource> resources = {aml::Memory32Fixed(
      true, static_cast<uint32_t>(kAcpiGedAddress), static_cast<uint32_t>(kAcpiGedSize))};
  if (pci) {
    resources.push_back(aml::Memory32Fixed(true, static_cast<uint32_t>(pci->ecam_base),
                                           static_cast<uint32_t>(pci->ecam_size)));
  }
  return aml::Device("MRES",
                     {aml::Name("_HID", aml::EisaId("PNP0C02")), aml::Name("_UID", aml::Integer(0)),
                      aml::Name("_CRS", aml::ResourceTemplate(resources))});
}

// \_SB.GED0: the Generic Event Device (ACPI 6.4 §5.6.9) of devices/acpi_ged.h. Its interrupt is
// GSI kAcpiGedGsi, edge-triggered and active-high as an irqfd injects it; Linux
// (drivers/acpi/evged.c) runs _EVT with the GSI as Arg0 on each edge. _EVT reads the
// read-to-clear event register once and notifies the power button of a press (0x80).
aml::Term GenericEventDevice() {
  constexpr uint64_t kPowerButtonEvent = 1;  // AcpiGed::kPowerButtonEvent
  constexpr uint64_t kStatusChange = 0x80;   // a control-method power button press, §4.8.2.2.1.2
  return aml::Device(
      "GED0",
      {aml::Name("_HID", aml::String("ACPI0013")), aml::Name("_UID", aml::Integer(0)),
       aml::Name("_CRS", aml::ResourceTemplate({aml::Interrupt(
                             aml::ResourceUsage::kConsumer, aml::InterruptTrigger::kEdge,
                             aml::InterruptPolarity::kActiveHigh, aml::InterruptSharing::kExclusive,
                             {kAcpiGedGsi})})),
       aml::OperationRegion("GDRG", aml::RegionSpace::kSystemMemory, kAcpiGedAddress, 4),
       aml::Field("GDRG", aml::FieldAccess::kDWord, aml::FieldLock::kNoLock,
                  aml::FieldUpdate::kWriteAsZeros, {{"GDAT", 32}}),
       aml::Method("_EVT", 1, true,
                   {aml::Store(aml::NameString("GDAT"), aml::Local(0)),
                    aml::If(aml::LEqual(aml::And(aml::Local(0), aml::Integer(kPowerButtonEvent)),
                                        aml::Integer(kPowerButtonEvent)),
                            {aml::Notify(aml::NameString("\\_SB_.PWRB"),
                                         aml::Integer(kStatusChange))})})});
}

// \_SB.PWRB: the control-method power button (PNP0C0C, ACPI 6.4 §4.8.2.2.1.2) that GED0
// notifies; Linux's button driver turns the notification into KEY_POWER.
aml::Term PowerButton() {
  return aml::Device(
      "PWRB", {aml::Name("_HID", aml::EisaId("PNP0C0C")), aml::Name("_UID", aml::Integer(0))});
}

// The DSDT's definition block: \_S5 (ACPI 6.4 §7.4.2.5; on a hardware-reduced platform element 0
// is the SLP_TYP written to SLEEP_CONTROL_REG) and the system bus devices.
Result<std::vector<uint8_t>> BuildDsdt(const std::optional<PciLayout>& pci) {
  std::vector<aml::Term> system_bus = {Com1Device(), GenericEventDevice(), PowerButton()};
  if (pci) system_bus.push_back(PciHostBridge(*pci));
  system_bus.push_back(MotherboardResources(pci));
  std::vector<uint8_t> aml_code;
  for (const aml::Term& term :
       {aml::Name("_S5_", aml::Package({aml::Integer(kS5SleepType), aml::Integer(0),
                                        aml::Integer(0), aml::Integer(0)})),
        aml::Scope("\\_SB_", system_bus)}) {
    TERN_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, term.Encode());
    aml_code.insert(aml_code.end(), bytes.begin(), bytes.end());
  }
  return acpi::BuildSdt("DSDT", acpi::kDsdtRevision, aml_code);
}

Result<std::vector<uint8_t>> BuildMcfg(const PciLayout& pci) {
  std::vector<uint8_t> body;
  acpi::AppendBytes(body, uint64_t{0});  // reserved
  acpi::AppendBytes(body, McfgAllocation{.base_address = pci.ecam_base,
                                         .pci_segment_group = 0,
                                         .start_bus = 0,
                                         .end_bus = LastBus(pci),
                                         .reserved = 0});
  return acpi::BuildSdt("MCFG", kMcfgRevision, body);
}

Result<std::vector<uint8_t>> BuildMadt(uint32_t num_vcpus) {
  std::vector<uint8_t> body;
  acpi::AppendBytes(
      body, MadtFixed{.local_apic_address = static_cast<uint32_t>(kLapicAddress), .flags = 0});
  for (uint32_t i = 0; i < num_vcpus; ++i) {
    acpi::AppendBytes(body, MadtLocalApic{.type = kMadtTypeLocalApic,
                                          .length = sizeof(MadtLocalApic),
                                          .acpi_processor_uid = static_cast<uint8_t>(i),
                                          .apic_id = static_cast<uint8_t>(i),
                                          .flags = kLocalApicEnabled});
  }
  acpi::AppendBytes(body, MadtIoApic{.type = kMadtTypeIoApic,
                                     .length = sizeof(MadtIoApic),
                                     .io_apic_id = IoapicApicId(num_vcpus),
                                     .reserved = 0,
                                     .io_apic_address = static_cast<uint32_t>(kIoapicAddress),
                                     .global_system_interrupt_base = 0});
  acpi::AppendBytes(body, MadtLocalApicNmi{.type = kMadtTypeLocalApicNmi,
                                           .length = sizeof(MadtLocalApicNmi),
                                           .acpi_processor_uid = kAllProcessors,
                                           .flags = 0,
                                           .local_apic_lint = 1});
  return acpi::BuildSdt("APIC", acpi::kMadtRevision, body);
}

Result<std::vector<uint8_t>> BuildFadt(uint64_t dsdt_address) {
  acpi::Fadt fadt{};
  fadt.header = acpi::MakeSdtHeader("FACP", acpi::kFadtRevision);
  fadt.flags = acpi::kFadtHwReducedAcpi | acpi::kFadtPwrButton | acpi::kFadtSlpButton;
  fadt.iapc_boot_arch = acpi::kIapcVgaNotPresent | acpi::kIapcCmosRtcNotPresent;
  fadt.fadt_minor_version = acpi::kFadtMinorVersion;
  fadt.x_dsdt = dsdt_address;
  fadt.sleep_control_reg = acpi::IoPortByteRegister(kAcpiSleepControlPort);
  fadt.sleep_status_reg = acpi::IoPortByteRegister(kAcpiSleepStatusPort);
  std::memcpy(fadt.hypervisor_vendor_identity, "TERNVMM ", 8);
  return acpi::SerializeSdt(fadt);
}

// Reserves space for `bytes` in `area` and records the placed table.
Result<uint64_t> Place(acpi::TableArea& area, std::vector<uint8_t> bytes,
                       std::vector<PlacedTable>& placed) {
  TERN_ASSIGN_OR_RETURN(uint64_t address, area.Allocate(bytes.size(), kTableAlignment));
  placed.push_back({address, std::move(bytes)});
  return address;
}

// Lays out RSDP, DSDT, MADT, FADT, MCFG (with PCI) and XSDT from kAcpiStart upward (the RSDP
// first, so it lands exactly at kAcpiStart); returns them with their addresses, the RSDP first.
Result<std::vector<PlacedTable>> LayOutTables(uint32_t num_vcpus,
                                              const std::optional<PciLayout>& pci) {
  acpi::TableArea area(kAcpiStart, kMpTableStart);
  std::vector<PlacedTable> placed;
  TERN_RETURN_IF_ERROR(Place(area, std::vector<uint8_t>(sizeof(acpi::Rsdp)), placed));
  TERN_ASSIGN_OR_RETURN(std::vector<uint8_t> dsdt, BuildDsdt(pci));
  TERN_ASSIGN_OR_RETURN(uint64_t dsdt_address, Place(area, std::move(dsdt), placed));
  TERN_ASSIGN_OR_RETURN(std::vector<uint8_t> madt, BuildMadt(num_vcpus));
  TERN_ASSIGN_OR_RETURN(uint64_t madt_address, Place(area, std::move(madt), placed));
  TERN_ASSIGN_OR_RETURN(std::vector<uint8_t> fadt, BuildFadt(dsdt_address));
  TERN_ASSIGN_OR_RETURN(uint64_t fadt_address, Place(area, std::move(fadt), placed));
  std::vector<uint64_t> xsdt_entries = {fadt_address, madt_address};
  if (pci) {
    TERN_ASSIGN_OR_RETURN(std::vector<uint8_t> mcfg, BuildMcfg(*pci));
    TERN_ASSIGN_OR_RETURN(uint64_t mcfg_address, Place(area, std::move(mcfg), placed));
    xsdt_entries.push_back(mcfg_address);
  }
  TERN_ASSIGN_OR_RETURN(std::vector<uint8_t> xsdt, acpi::BuildXsdt(xsdt_entries));
  TERN_ASSIGN_OR_RETURN(uint64_t xsdt_address, Place(area, std::move(xsdt), placed));
  placed[0].bytes.clear();
  acpi::AppendBytes(placed[0].bytes, acpi::MakeRsdp(xsdt_address));
  return placed;
}

}  // namespace

Result<uint64_t> SetupAcpiTables(const GuestMemory& memory, uint32_t num_vcpus,
                                 const std::optional<PciLayout>& pci) {
  TERN_RETURN_IF_ERROR(CheckVcpuCount(num_vcpus));
  if (pci) TERN_RETURN_IF_ERROR(CheckPciLayout(*pci));
  Result<std::vector<PlacedTable>> tables = LayOutTables(num_vcpus, pci);
  if (!tables.ok()) return tables.error().WithContext("building the ACPI tables");
  for (const PlacedTable& table : *tables) {
    Status status = memory.Write(table.address, table.bytes);
    if (!status.ok()) return status.error().WithContext("writing the ACPI tables");
  }
  return tables->front().address;
}

}  // namespace tern::x86_64
