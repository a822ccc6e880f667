// Placement of guest RAM around the x86 32-bit MMIO gap, and of the PCI windows.
#include "arch/x86_64/layout.h"

#include <algorithm>

namespace tern::x86_64 {

std::vector<RegionSpec> RamRegions(uint64_t ram_bytes) {
  if (ram_bytes <= kMmioGapStart) return {{0, ram_bytes}};
  return {{0, kMmioGapStart}, {kMmioGapEnd, ram_bytes - kMmioGapStart}};
}

PciLayout PciLayoutFor(uint64_t ram_bytes) {
  const RegionSpec last = RamRegions(ram_bytes).back();
  const uint64_t ram_end = std::max(kMmioGapEnd, last.guest_base + last.size);
  const uint64_t mmio64_base = (ram_end + kPciMmio64Alignment - 1) & ~(kPciMmio64Alignment - 1);
  const uint64_t mmio64_end =
      std::max(mmio64_base, std::min(mmio64_base + kPciMmio64MaxSize, kMaxGuestPhysAddress));
  return PciLayout{.ecam_base = kPciEcamStart,
                   .ecam_size = kPciEcamSize,
                   .mmio32_base = kPciMmio32Start,
                   .mmio32_size = kPciMmio32Size,
                   .mmio64_base = mmio64_base,
                   .mmio64_size = mmio64_end - mmio64_base};
}

}  // namespace tern::x86_64
