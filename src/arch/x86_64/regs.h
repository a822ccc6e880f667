// Boot-time CPU state for entering Linux through the 64-bit boot protocol (boot.rst "64-bit
// BOOT PROTOCOL"): identity-mapped page tables, a GDT with flat __BOOT_CS (0x10) and
// __BOOT_DS (0x18), long mode in CR0/CR4/EFER, RSI = boot_params; plus FPU, MSRs and LAPIC
// LINT pins for every vCPU.
#pragma once

#include <cstdint>

#include "base/guest_memory.h"
#include "kvm/kvm.h"

namespace tern::x86_64 {

// Writes PML4/PDPT/4 PDs at kPml4Start.. identity-mapping the first 4 GiB with 2 MiB pages.
Status SetupPageTables(const GuestMemory& memory);

// Writes the boot GDT at kGdtStart (null, null, code 0x10, data 0x18, TSS 0x20) and an empty
// IDT at kIdtStart.
Status SetupGdt(const GuestMemory& memory);

// The boot vCPU's special registers: long mode with paging on the tables above, segments from
// the GDT. `sregs` is the vCPU's current state (its other fields are kept).
kvm_sregs BootSregs(const kvm_sregs& sregs);

// The boot vCPU's general registers: RIP = `entry`, RSI = boot_params, RSP/RBP = boot stack.
kvm_regs BootRegs(uint64_t entry);

// Sets the x87/SSE control words, the boot MSRs (SYSENTER/SYSCALL at 0, TSC 0,
// MISC_ENABLE fast strings, MTRR default type write-back) and the LAPIC LINT0 = ExtINT,
// LINT1 = NMI, as a BIOS leaves them. For every vCPU before its first KVM_RUN.
Status SetupVcpuCommon(const kvm::Vcpu& vcpu);

}  // namespace tern::x86_64
