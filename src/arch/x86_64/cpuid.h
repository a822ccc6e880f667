// The CPUID a vCPU sees: KVM_GET_SUPPORTED_CPUID filtered and completed with this vCPU's APIC
// ID, a one-socket topology (num_vcpus cores, one thread each) and KVM's paravirtual leaves.
#pragma once

#include <cstdint>

#include "kvm/kvm.h"

namespace tern::x86_64 {

// Options that depend on the host's KVM rather than on the vCPU.
struct CpuidOptions {
  bool tsc_deadline_timer = false;  // KVM_CAP_TSC_DEADLINE_TIMER: advertise CPUID.1:ECX[24]
};

// Returns the entries for vCPU `vcpu_id` (0 <= vcpu_id < num_vcpus <= kMaxVcpus; its APIC ID
// equals vcpu_id) built from `supported`. Sets: leaf 1 (initial APIC ID, logical count, HTT,
// hypervisor bit, TSC-deadline), leaf 4 cores-per-package, leaves 0xB/0x1F x2APIC topology,
// 0x80000008 core count, 0x8000001E extended APIC ID, and the KVM signature at 0x40000000.
// Pure function; thread-safe.
kvm::CpuidEntries BuildCpuid(const kvm::CpuidEntries& supported, uint32_t vcpu_id,
                             uint32_t num_vcpus, const CpuidOptions& options);

}  // namespace tern::x86_64
