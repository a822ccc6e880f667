// The state KVM keeps for a VM and for each of its vCPUs, as values a snapshot saves and
// restores: reading it from KVM (Save*), writing it back into a fresh VM in the order KVM needs
// (Restore*), and (de)serializing it as JSON (stored as CBOR; each kernel struct is a binary of
// its raw bytes, the kernel's x86-64 ABI). Also the host CPU identity a snapshot records, since
// its CPUID, MSRs and XSAVE layout only restore on the same kind of CPU.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/result.h"
#include "kvm/kvm.h"

namespace tern::x86_64 {

// Limits VcpuStateFromJson enforces on hostile input (KVM itself takes at most 256 CPUID
// entries; KVM_GET_MSR_INDEX_LIST lists a few hundred MSRs at most).
constexpr size_t kMaxSavedCpuidEntries = 256;
constexpr size_t kMaxSavedMsrs = 1024;
constexpr size_t kMaxSavedXsaveBytes = 1 << 20;

// Everything KVM keeps for one vCPU. A value; copyable.
struct VcpuState {
  kvm::CpuidEntries cpuid;        // what KVM_SET_CPUID2 set
  kvm_regs regs{};                // general-purpose registers, RIP, RFLAGS
  kvm_sregs sregs{};              // segments, descriptor tables, control registers, EFER, APIC base
  std::vector<uint8_t> xsave;     // KVM_GET_XSAVE(2) area: x87/SSE/AVX/...; >= 4096 bytes
  kvm_xcrs xcrs{};                // XCR0
  kvm_lapic_state lapic{};        // the local APIC's registers
  kvm_mp_state mp_state{};        // runnable, halted, waiting for INIT/SIPI, ...
  kvm_vcpu_events vcpu_events{};  // pending exception/interrupt/NMI/SMI
  kvm_debugregs debugregs{};      // DR0-3, DR6, DR7
  std::vector<kvm_msr_entry> msrs;  // in KVM_GET_MSR_INDEX_LIST order, those KVM could read
  uint32_t tsc_khz = 0;             // the guest's TSC frequency; 0 = unknown
};

// Reads `vcpu`'s state. `cpuid` is what was set on it with KVM_SET_CPUID2 (recorded as is).
// MSRs: every index of KVM_GET_MSR_INDEX_LIST; those KVM refuses to read are left out (each
// failing index is skipped, the ones after it are still read). The vCPU must be parked outside
// KVM_RUN (the caller guarantees it); reads in Firecracker's order: MP state first (reading it
// processes pending INIT/SIPI), vCPU events last. Errors name the ioctl, after "saving vCPU N".
Result<VcpuState> SaveVcpuState(const kvm::Kvm& kvm, const kvm::Vcpu& vcpu,
                                const kvm::CpuidEntries& cpuid);

// Writes `state` into `vcpu`, a vCPU not yet run of a VM with the in-kernel irqchip and its
// guest memory already registered (the kvmclock and async-PF MSRs point into it). Order:
// CPUID (KVM checks XCR0, XSAVE and MSRs against it), TSC frequency (if the snapshot's is more
// than 250 ppm from this vCPU's: KVM_SET_TSC_KHZ, an error where KVM cannot), MP state, regs,
// sregs (sets the APIC base), XSAVE, XCRs, debug registers, LAPIC (after sregs; before the MSRs,
// as KVM arms the TSC-deadline timer only with the LAPIC configured), MSRs (all must be taken;
// IA32_TSC_DEADLINE after IA32_TSC), vCPU events last (KVM_SET_REGS/SREGS drop pending events).
// Errors name the step's ioctl, after "restoring vCPU N".
Status RestoreVcpuState(const kvm::Vcpu& vcpu, const VcpuState& state);

// The in-kernel devices' state of a VM (KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2).
struct VmState {
  kvm_irqchip pic_master{};  // chip_id KVM_IRQCHIP_PIC_MASTER
  kvm_irqchip pic_slave{};   // chip_id KVM_IRQCHIP_PIC_SLAVE
  kvm_irqchip ioapic{};      // chip_id KVM_IRQCHIP_IOAPIC
  kvm_pit_state2 pit{};
  kvm_clock_data clock{};  // kvmclock as KVM_GET_CLOCK read it (flags included)
};

// Reads the PICs, IOAPIC, PIT and kvmclock of `vm` (its vCPUs parked).
Result<VmState> SaveVmState(const kvm::Vm& vm);

// Writes `state` into `vm` (with irqchip and PIT created): PICs, IOAPIC, PIT, then kvmclock.
// KVM_SET_CLOCK gets the saved clock with no flags: TSC_STABLE and HOST_TSC are outputs that
// kernels before 5.16 refuse back, and REALTIME would advance the guest's clock by the wall time
// since the snapshot; the guest's clock resumes where it stopped, as with QEMU. Errors name the
// step's ioctl, after "restoring VM state".
Status RestoreVmState(const kvm::Vm& vm, const VmState& state);

// JSON of a VcpuState: {"cpuid": [{"function", "index", "flags", "eax", "ebx", "ecx", "edx"}],
// "regs", "sregs", "xsave", "xcrs", "lapic", "mp_state", "vcpu_events", "debugregs": binary,
// "msrs": [{"index", "data"}], "tsc_khz": integer}.
nlohmann::json ToJson(const VcpuState& state);

// Parses ToJson's output. Every key must be present with the right type and nothing else;
// binaries must have their struct's size (xsave: 4096..kMaxSavedXsaveBytes, a multiple of 4);
// at most kMaxSavedCpuidEntries and kMaxSavedMsrs entries. Any violation is an EINVAL error
// naming the field; never throws.
Result<VcpuState> VcpuStateFromJson(const nlohmann::json& json);

// JSON of a VmState: {"pic_master", "pic_slave", "ioapic", "pit", "clock": binary}.
nlohmann::json ToJson(const VmState& state);

// Parses ToJson's output, strictly as VcpuStateFromJson does; each irqchip's chip_id must be
// the one its key names.
Result<VmState> VmStateFromJson(const nlohmann::json& json);

// What a snapshot records of the CPU it was taken on.
struct CpuIdentity {
  std::string vendor;     // CPUID leaf 0 vendor string: "GenuineIntel", "AuthenticAMD", ...
  uint32_t family = 0;    // display family (base + extended family when base is 0xF)
  uint32_t model = 0;     // display model (extended model included for families 6 and 0xF)
  uint32_t stepping = 0;  // CPUID.1:EAX[3:0]
};

// This host's CPU identity from CPUID leaves 0 and 1. Thread-safe.
CpuIdentity HostCpuIdentity();

// {"vendor": string, "family", "model", "stepping": integer}.
nlohmann::json ToJson(const CpuIdentity& identity);

// Parses ToJson's output strictly (vendor 1..12 characters); an EINVAL error naming the field.
Result<CpuIdentity> CpuIdentityFromJson(const nlohmann::json& json);

// Ok if `snapshot` and `host` are the same vendor, family, model and stepping; else an EINVAL
// error "snapshot was taken on <vendor> family F model M stepping S; this host is <...>".
Status CheckSameCpu(const CpuIdentity& snapshot, const CpuIdentity& host);

}  // namespace tern::x86_64
