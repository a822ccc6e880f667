// The Intel MultiProcessor Specification 1.4 tables for x86-64 guests: the MP floating pointer
// structure and the MP configuration table describing the vCPUs, the ISA bus, the IOAPIC and the
// interrupt wiring. A guest booted with `acpi=off` (or a kernel without ACPI) finds its CPUs and
// IOAPIC through these.
#pragma once

#include <cstdint>

#include "base/guest_memory.h"
#include "base/result.h"

namespace tern::x86_64 {

// The APIC ID of the (single) IOAPIC in both the MP table and the MADT: the first ID after the
// vCPUs' (vCPU i has APIC ID i), so it never clashes with a CPU's; for 1 <= num_vcpus <=
// kMaxVcpus it is at most 254, never the broadcast ID 0xff.
constexpr uint8_t IoapicApicId(uint32_t num_vcpus) { return static_cast<uint8_t>(num_vcpus); }

// Writes the MP floating pointer structure (MP spec 1.4 §4.1) at kMpTableStart and, right after
// it, the MP configuration table (§4.2, §4.3): spec revision 1.4, OEM/product id "TERN", the
// local APIC at kLapicAddress, then one processor entry per vCPU (APIC ID i, enabled, the
// bootstrap-processor flag on vCPU 0 only), one ISA bus, one IOAPIC (ID IoapicApicId(num_vcpus),
// at kIoapicAddress, usable), I/O interrupt entries mapping ISA IRQ n to IOAPIC pin n for n in
// 0..15 (KVM's default GSI routing; no IRQ0-to-pin-2 override), and local interrupt entries
// (ExtINT on LINT0, NMI on LINT1 of every local APIC). Both checksums are set; there is no
// extended table (length and checksum 0). The floating pointer's feature bytes are 0: the
// configuration table is present and the IMCR is absent (virtual-wire mode).
//
// Errors: EINVAL if num_vcpus is 0 or above kMaxVcpus; ENOSPC if the tables would not end at or
// below kSmbiosStart; EFAULT if guest memory does not cover them.
// Thread safety: writes guest memory unsynchronized; call before any vCPU runs.
Status SetupMpTable(const GuestMemory& memory, uint32_t num_vcpus);

}  // namespace tern::x86_64
