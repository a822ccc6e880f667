// Unit tests for per-vCPU CPUID: APIC IDs, topology leaves and the KVM signature.
#include "arch/x86_64/cpuid.h"

#include <gtest/gtest.h>

#include <cstring>

namespace tern::x86_64 {
namespace {

kvm_cpuid_entry2 Entry(uint32_t function, uint32_t index = 0) {
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.index = index;
  return entry;
}

// What KVM_GET_SUPPORTED_CPUID might report, reduced to the leaves BuildCpuid edits.
kvm::CpuidEntries Supported() {
  kvm::CpuidEntries entries = {
      Entry(1),      Entry(4, 0),       Entry(4, 3),       Entry(0xb, 0),     Entry(0xb, 1),
      Entry(0xb, 2), Entry(0x40000000), Entry(0x40000001), Entry(0x80000008), Entry(0x8000001e)};
  entries[0].ebx = 0x0800;          // CLFLUSH line size 8
  entries[2].eax = (3 << 5) | 0x3;  // L3 cache descriptor
  entries[6].eax = 0x40000001;
  entries[7].eax = 0x1 | (1 << 3);  // KVM_FEATURE_CLOCKSOURCE | CLOCKSOURCE2
  return entries;
}

const kvm_cpuid_entry2& Find(const kvm::CpuidEntries& entries, uint32_t function,
                             uint32_t index = 0) {
  for (const auto& entry : entries) {
    if (entry.function == function && entry.index == index) return entry;
  }
  ADD_FAILURE() << "no leaf " << std::hex << function;
  return entries.front();
}

TEST(CpuidTest, SetsApicIdAndCountsPerVcpu) {
  for (uint32_t n : {1u, 2u, 4u, 32u}) {
    for (uint32_t id = 0; id < n; ++id) {
      auto entries = BuildCpuid(Supported(), id, n, {.tsc_deadline_timer = true});
      const auto& leaf1 = Find(entries, 1);
      EXPECT_EQ(leaf1.ebx >> 24, id);
      EXPECT_EQ(leaf1.ebx & 0xffff, 0x0800u);  // untouched
      EXPECT_GE((leaf1.ebx >> 16) & 0xff, n);
      EXPECT_TRUE(leaf1.ecx & (1u << 31));             // hypervisor
      EXPECT_TRUE(leaf1.ecx & (1u << 24));             // TSC deadline
      EXPECT_EQ(bool(leaf1.edx & (1u << 28)), n > 1);  // HTT
      EXPECT_EQ(Find(entries, 0xb, 0).edx, id);
      EXPECT_EQ(Find(entries, 0xb, 1).edx, id);
      EXPECT_EQ(Find(entries, 0xb, 1).ebx, n);
      EXPECT_EQ(Find(entries, 0xb, 0).ebx, 1u);
      EXPECT_EQ((Find(entries, 0xb, 1).ecx >> 8) & 0xff, 2u);  // core level
      EXPECT_EQ((Find(entries, 0xb, 2).ecx >> 8) & 0xff, 0u);  // end of levels
      // The core-level shift covers every APIC ID.
      EXPECT_GE(1u << Find(entries, 0xb, 1).eax, n);
      EXPECT_EQ(Find(entries, 0x80000008).ecx & 0xff, n - 1);
      EXPECT_EQ(Find(entries, 0x8000001e).eax, id);
      EXPECT_GE(((Find(entries, 4, 0).eax >> 26) & 0x3f) + 1, n);
    }
  }
}

TEST(CpuidTest, KeepsKvmParavirtLeaves) {
  auto entries = BuildCpuid(Supported(), 0, 1, {});
  const auto& signature = Find(entries, 0x40000000);
  char name[13] = {};
  std::memcpy(name, &signature.ebx, 4);
  std::memcpy(name + 4, &signature.ecx, 4);
  std::memcpy(name + 8, &signature.edx, 4);
  EXPECT_STREQ(name, "KVMKVMKVM");
  EXPECT_EQ(signature.eax, 0x40000001u);
  EXPECT_EQ(Find(entries, 0x40000001).eax & 1, 1u);  // kvmclock stays advertised
  EXPECT_FALSE(Find(entries, 1).ecx & (1u << 24));   // no TSC deadline unless KVM has it
}

}  // namespace
}  // namespace tern::x86_64
