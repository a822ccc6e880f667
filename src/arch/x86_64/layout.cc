// Placement of guest RAM around the x86 32-bit MMIO gap.
#include "arch/x86_64/layout.h"

namespace tern::x86_64 {

std::vector<RegionSpec> RamRegions(uint64_t ram_bytes) {
  if (ram_bytes <= kMmioGapStart) return {{0, ram_bytes}};
  return {{0, kMmioGapStart}, {kMmioGapEnd, ram_bytes - kMmioGapStart}};
}

}  // namespace tern::x86_64
