// Per-vCPU CPUID construction (Intel SDM vol. 2A "CPUID"; AMD APM vol. 3 appendix E; KVM's
// Documentation/virt/kvm/x86/cpuid.rst for the 0x40000000 leaves).
#include "arch/x86_64/cpuid.h"

#include <bit>
#include <cstring>

namespace tern::x86_64 {
namespace {

constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheParams = 0x4;
constexpr uint32_t kLeafTopology = 0xb;
constexpr uint32_t kLeafTopologyV2 = 0x1f;
constexpr uint32_t kLeafKvmSignature = 0x40000000;
constexpr uint32_t kLeafAmdSizes = 0x80000008;
constexpr uint32_t kLeafAmdTopology = 0x8000001e;

constexpr uint32_t kEcxTscDeadline = 1u << 24;
constexpr uint32_t kEcxHypervisor = 1u << 31;
constexpr uint32_t kEdxHtt = 1u << 28;

// x2APIC topology level types (CPUID.0BH:ECX[15:8]).
constexpr uint32_t kLevelInvalid = 0;
constexpr uint32_t kLevelSmt = 1;
constexpr uint32_t kLevelCore = 2;

// Bits needed to number `count` items (the APIC ID shift of a topology level).
uint32_t IdBits(uint32_t count) { return count <= 1 ? 0 : std::bit_width(count - 1); }

void SetFeatures(kvm_cpuid_entry2& entry, uint32_t vcpu_id, uint32_t num_vcpus,
                 const CpuidOptions& options) {
  // EBX: [31:24] initial APIC ID, [23:16] addressable logical processors, [15:8] CLFLUSH size.
  uint32_t logical = num_vcpus > 1 ? (1u << IdBits(num_vcpus)) : 1;
  entry.ebx = (vcpu_id << 24) | (std::min(logical, 255u) << 16) | (entry.ebx & 0xffff);
  entry.ecx |= kEcxHypervisor;
  if (options.tsc_deadline_timer) entry.ecx |= kEcxTscDeadline;
  if (num_vcpus > 1) {
    entry.edx |= kEdxHtt;
  } else {
    entry.edx &= ~kEdxHtt;
  }
}

void SetCacheParams(kvm_cpuid_entry2& entry, uint32_t num_vcpus) {
  // EAX[31:26]: addressable core IDs in the package - 1; [25:14]: threads sharing this cache -1.
  uint32_t cores = (1u << IdBits(num_vcpus)) - 1;
  uint32_t cache_level = (entry.eax >> 5) & 0x7;
  uint32_t sharing = cache_level >= 3 ? cores : 0;
  entry.eax = (entry.eax & 0x3fff) | (sharing << 14) | (std::min(cores, 63u) << 26);
}

void SetTopology(kvm_cpuid_entry2& entry, uint32_t vcpu_id, uint32_t num_vcpus) {
  entry.edx = vcpu_id;  // x2APIC ID
  switch (entry.index) {
    case 0:  // SMT level: one thread per core.
      entry.eax = 0;
      entry.ebx = 1;
      entry.ecx = (kLevelSmt << 8) | entry.index;
      break;
    case 1:  // Core level: num_vcpus cores in the package.
      entry.eax = IdBits(num_vcpus);
      entry.ebx = num_vcpus;
      entry.ecx = (kLevelCore << 8) | entry.index;
      break;
    default:
      entry.eax = 0;
      entry.ebx = 0;
      entry.ecx = (kLevelInvalid << 8) | entry.index;
      break;
  }
}

void SetKvmSignature(kvm_cpuid_entry2& entry) {
  // "KVMKVMKVM\0\0\0" in EBX, ECX, EDX; EAX: the highest KVM leaf.
  std::memcpy(&entry.ebx, "KVMK", 4);
  std::memcpy(&entry.ecx, "VMKV", 4);
  std::memcpy(&entry.edx, "M\0\0\0", 4);
}

}  // namespace

kvm::CpuidEntries BuildCpuid(const kvm::CpuidEntries& supported, uint32_t vcpu_id,
                             uint32_t num_vcpus, const CpuidOptions& options) {
  kvm::CpuidEntries entries = supported;
  for (kvm_cpuid_entry2& entry : entries) {
    switch (entry.function) {
      case kLeafFeatures:
        SetFeatures(entry, vcpu_id, num_vcpus, options);
        break;
      case kLeafCacheParams:
        SetCacheParams(entry, num_vcpus);
        break;
      case kLeafTopology:
      case kLeafTopologyV2:
        SetTopology(entry, vcpu_id, num_vcpus);
        break;
      case kLeafKvmSignature:
        SetKvmSignature(entry);
        break;
      case kLeafAmdSizes:
        // ECX[15:12]: APIC ID bits for cores; [7:0]: cores in the package - 1.
        entry.ecx = (IdBits(num_vcpus) << 12) | (num_vcpus - 1);
        break;
      case kLeafAmdTopology:
        // EAX: extended APIC ID; EBX[7:0] core ID, [15:8] threads per core - 1; ECX: node 0.
        entry.eax = vcpu_id;
        entry.ebx = vcpu_id & 0xff;
        entry.ecx = 0;
        break;
      default:
        break;
    }
  }
  return entries;
}

}  // namespace tern::x86_64
