// The x86-64 guest-physical memory map of a Tern VM: where boot data structures, firmware
// tables and RAM live, and the fixed port numbers and IRQs of the legacy devices.
//
//   0x0000_0000 .. 0x0009_fc00  low RAM (e820 usable); boot structures live in it:
//       0x7000  boot_params (zero page)       0x8ff0  initial stack pointer
//       0x9000  PML4, 0xa000 PDPT, 0xb000..0xefff four page directories (identity map 4 GiB)
//       0x500   GDT                           0x520   IDT (empty)
//       0x20000 kernel command line (up to kCmdlineMaxSize bytes)
//   0x0009_fc00 .. 0x000a_0000  EBDA (reserved)
//   0x000a_0000 .. 0x000e_0000  legacy VGA/ROM hole (not reported)
//   0x000e_0000 .. 0x0010_0000  firmware tables (reserved): ACPI at 0xe0000, MP table at 0xf0000,
//                               SMBIOS at 0xf8000
//   0x0010_0000 .. min(RAM, 3 GiB)          RAM; the kernel loads at 1 MiB or its pref_address
//   0xc000_0000 .. 0x1_0000_0000  32-bit MMIO gap:
//       0xc000_0000 .. 0xe000_0000  PCI 32-bit BAR window
//       0xe000_0000 .. 0xe010_0000  PCI ECAM (MMCONFIG) for bus 0
//       0xfea0_0000 .. 0xfea0_1000  ACPI GED event register page
//       0xfec0_0000 IOAPIC, 0xfee0_0000 LAPIC, 0xfeff_c000 KVM identity map page and TSS
//   0x1_0000_0000 .. 4 GiB + (RAM - 3 GiB)  high RAM for guests bigger than 3 GiB
//   then, from the next 1 GiB boundary: the PCI 64-bit BAR window (64 GiB, below 2^40)
#pragma once

#include <cstdint>
#include <vector>

#include "base/guest_memory.h"

namespace tern::x86_64 {

inline constexpr uint64_t kPageSize = 4096;

inline constexpr uint64_t kGdtStart = 0x500;
inline constexpr uint64_t kIdtStart = 0x520;
inline constexpr uint64_t kZeroPageStart = 0x7000;
inline constexpr uint64_t kBootStackPointer = 0x8ff0;
inline constexpr uint64_t kPml4Start = 0x9000;
inline constexpr uint64_t kPdptStart = 0xa000;
inline constexpr uint64_t kPdStart = 0xb000;  // four 4 KiB page directories
inline constexpr uint64_t kCmdlineStart = 0x20000;
inline constexpr uint64_t kCmdlineMaxSize = 0x10000;  // bytes, including the NUL

inline constexpr uint64_t kEbdaStart = 0x9fc00;
inline constexpr uint64_t kLowRamEnd = 0xa0000;      // 640 KiB
inline constexpr uint64_t kAcpiStart = 0xe0000;      // RSDP, then the other ACPI tables
inline constexpr uint64_t kMpTableStart = 0xf0000;   // MP floating pointer, then the table
inline constexpr uint64_t kSmbiosStart = 0xf8000;    // SMBIOS entry point, then the table
inline constexpr uint64_t kFirmwareEnd = 0x100000;   // end of the ACPI/MP/SMBIOS area
inline constexpr uint64_t kHighRamStart = 0x100000;  // 1 MiB

inline constexpr uint64_t kMmioGapStart = 0xc0000000;  // 3 GiB
inline constexpr uint64_t kMmioGapEnd = 0x100000000;   // 4 GiB
inline constexpr uint64_t kIoapicAddress = 0xfec00000;
inline constexpr uint64_t kLapicAddress = 0xfee00000;

// PCI (see PciLayoutFor): ECAM for bus 0 only (PCIe 4.0 §7.2.2: 1 MiB per bus), the 32-bit BAR
// window, and configuration mechanism #1's ports 0xcf8..0xcff.
inline constexpr uint64_t kPciEcamStart = 0xe0000000;
inline constexpr uint64_t kPciEcamSize = 0x100000;
inline constexpr uint64_t kPciMmio32Start = 0xc0000000;
inline constexpr uint64_t kPciMmio32Size = 0x20000000;  // 512 MiB, up to kPciEcamStart
inline constexpr uint64_t kPciMmio64MaxSize = uint64_t{64} << 30;
inline constexpr uint64_t kPciMmio64Alignment = uint64_t{1} << 30;
// The 64-bit BAR window ends below 2^40 (QEMU-TCG's default MAXPHYADDR, which the test host
// reports), so its BARs are addressable without reading CPUID 0x80000008. Small guests' windows
// end far lower (68 GiB), inside even a 39-bit MAXPHYADDR.
inline constexpr uint64_t kMaxGuestPhysAddress = uint64_t{1} << 40;
inline constexpr uint16_t kPciConfigIoPort = 0xcf8;
inline constexpr uint16_t kPciConfigIoSize = 8;

// Legacy devices: ports and ISA IRQs (GSIs; KVM's default routing sends GSI n < 16 to the PIC
// and to IOAPIC pin n).
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint16_t kCom1Irq = 4;
inline constexpr uint16_t kI8042DataPort = 0x60;  // data 0x60, status/command 0x64

// ACPI hardware-reduced sleep registers (ACPI 6.4 §4.8.3.7), named in the FADT's
// SLEEP_CONTROL_REG and SLEEP_STATUS_REG (one byte each, system I/O space).
inline constexpr uint16_t kAcpiSleepControlPort = 0x600;
inline constexpr uint16_t kAcpiSleepStatusPort = 0x601;
// The SLP_TYPx value of \_S5 in the DSDT; a write of (kS5SleepType << 2) | SLP_EN (bit 5) to
// the sleep control register powers the VM off.
inline constexpr uint8_t kS5SleepType = 5;

// The ACPI Generic Event Device (\_SB.GED0, devices/acpi_ged.h): its event register at
// kAcpiGedAddress (MMIO, in the 32-bit gap, clear of the PCI windows, of ECAM even at its
// 256-bus maximum, and of the APICs), in a page of kAcpiGedSize bytes that the DSDT reserves as
// a motherboard resource; and its interrupt, IOAPIC pin kAcpiGedGsi, declared edge-triggered
// and active-high (an irqfd injects an edge). A pin above the ISA range: routed to the IOAPIC
// only, never to the PIC, and unused while PCI devices use MSI-X only (no _PRT).
inline constexpr uint64_t kAcpiGedAddress = 0xfea00000;
inline constexpr uint64_t kAcpiGedSize = 0x1000;
inline constexpr uint32_t kAcpiGedGsi = 16;

// Highest vCPU count Tern describes: xAPIC IDs are 8 bits and 0xff is the broadcast ID.
inline constexpr uint32_t kMaxVcpus = 254;

}  // namespace tern::x86_64

namespace tern::x86_64 {

// Guest RAM regions for `ram_bytes` of memory (a multiple of 4 KiB): one region from 0 when it
// fits below the 32-bit MMIO gap, otherwise [0, 3 GiB) plus the rest from 4 GiB up.
std::vector<RegionSpec> RamRegions(uint64_t ram_bytes);

// Where PCI lives in a guest with `ram_bytes` of RAM. ECAM and the 32-bit window are the fixed
// constants above; the 64-bit window starts at the first 1 GiB boundary at or above both 4 GiB
// and the end of RAM, and is kPciMmio64MaxSize long, cut short at kMaxGuestPhysAddress (size 0
// when RAM reaches that far).
struct PciLayout {
  uint64_t ecam_base = 0;
  uint64_t ecam_size = 0;  // 1 MiB per bus, from bus 0
  uint64_t mmio32_base = 0;
  uint64_t mmio32_size = 0;
  uint64_t mmio64_base = 0;
  uint64_t mmio64_size = 0;
};
PciLayout PciLayoutFor(uint64_t ram_bytes);

}  // namespace tern::x86_64
