// The ACPI tables of an x86-64 guest: RSDP, XSDT, a hardware-reduced FADT, MADT, DSDT and (with
// PCI) MCFG, written into the BIOS area [kAcpiStart, kMpTableStart) so that Linux finds its
// CPUs, IOAPIC, serial port, ACPI power-off (S5), power button and PCI host bridge through them.
#pragma once

#include <cstdint>
#include <optional>

#include "arch/x86_64/layout.h"
#include "base/guest_memory.h"
#include "base/result.h"

namespace tern::x86_64 {

// Writes the ACPI tables for `num_vcpus` vCPUs and returns the RSDP's guest-physical address,
// which is kAcpiStart (so a guest scanning 0xe0000-0xfffff finds it too; the boot loader puts it
// in boot_params.acpi_rsdp_addr). Every table is 16-byte aligned and lies in
// [kAcpiStart, kMpTableStart); all carry OEM id "TERN  ", OEM table id "TERNVMM " and correct
// lengths and checksums (ACPI 6.4 §5.2):
//   - RSDP revision 2 (§5.2.5.3) with both checksums, pointing at the XSDT (no RSDT);
//   - XSDT (§5.2.8) listing the FADT, the MADT and (with PCI) the MCFG;
//   - FADT 6.4 (§5.2.9) for a hardware-reduced platform: HW_REDUCED_ACPI, PWR_BUTTON and
//     SLP_BUTTON (control-method buttons), no reset register, IA-PC boot flags "VGA not present"
//     and "CMOS RTC not present" (8042 clear: Linux resets through port 0x64 regardless), X_DSDT,
//     SLEEP_CONTROL_REG / SLEEP_STATUS_REG as byte registers at I/O ports kAcpiSleepControlPort
//     and kAcpiSleepStatusPort (§4.8.3.7), hypervisor vendor "TERNVMM ";
//   - MADT (§5.2.12) with the local APIC at kLapicAddress, flags 0 (no PCAT_COMPAT: Linux uses
//     no 8259 on a hardware-reduced platform), one enabled Processor Local APIC per vCPU (ACPI
//     processor UID i, APIC ID i), one I/O APIC (ID IoapicApicId(num_vcpus), kIoapicAddress,
//     GSI base 0) and a Local APIC NMI on LINT1 of all processors; no interrupt source
//     overrides, since ISA IRQ n is GSI n with ISA polarity and trigger, as KVM routes it;
//   - DSDT (§5.2.11.1) with Name (\_S5, Package () {kS5SleepType, 0, 0, 0}) and in \_SB:
//     - the COM1 device COM1 (PNP0501, I/O kCom1Port..+7, IRQ kCom1Irq): on a hardware-reduced
//       platform Linux sets up no ISA IRQs of its own, so the serial port's interrupt is only
//       usable through this _CRS;
//     - the Generic Event Device GED0 (ACPI0013, §5.6.9) of devices/acpi_ged.h: _CRS
//       Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {kAcpiGedGsi}, the event
//       register as field GDAT (DWordAcc) of a SystemMemory OperationRegion at kAcpiGedAddress,
//       and _EVT, which reads GDAT once and does Notify (\_SB.PWRB, 0x80) when bit 0 (power
//       button) is set;
//     - the control-method power button PWRB (PNP0C0C, §4.8.2.2.1.2);
//     - MRES, a motherboard resource device (PNP0C02) whose _CRS reserves the GED register page
//       [kAcpiGedAddress, +kAcpiGedSize) and, with PCI, the ECAM range.
//   With `pci` (a PciLayout from PciLayoutFor), also:
//   - MCFG (PCI Firmware 3.0 §4.1.2) with one allocation: ECAM at pci->ecam_base for segment 0,
//     buses 0 .. ecam_size / 1 MiB - 1;
//   - in the DSDT, \_SB.PCI0, the host bridge of segment 0 (ACPI 6.4 §6.1.5, PCI Firmware 3.0
//     §4.1.5): _HID PNP0A08 (PCI Express), _CID PNP0A03, _ADR 0, _SEG 0, _UID 0, _BBN 0, and a
//     _CRS with the bus range, the mechanism #1 ports 0xcf8..0xcff (consumed), the I/O window
//     0x1000..0xffff, the 32-bit memory window and, when not empty, the 64-bit memory window
//     (§6.4.3.5 Word/DWord/QWord Address Space Descriptors); no _PRT: devices use MSI-X only;
//   - the ECAM range in \_SB.MRES's _CRS, which Linux requires before it uses MMCONFIG
//     (arch/x86/pci/mmconfig-shared.c).
//
// Errors: EINVAL if num_vcpus is 0 or above kMaxVcpus or a PCI window is malformed; ENOSPC if the
// tables would not fit below kMpTableStart; EFAULT if guest memory does not cover them. Nothing
// outside [kAcpiStart, kMpTableStart) is written. Thread safety: writes guest memory
// unsynchronized; call before any vCPU runs.
Result<uint64_t> SetupAcpiTables(const GuestMemory& memory, uint32_t num_vcpus,
                                 const std::optional<PciLayout>& pci = std::nullopt);

}  // namespace tern::x86_64
