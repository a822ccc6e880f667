// Loading a Linux kernel for the x86-64 64-bit boot protocol (Documentation/arch/x86/boot.rst):
// a bzImage (setup header checked, protected-mode code placed at pref_address or an aligned
// fallback) or an uncompressed ELF vmlinux (PT_LOAD segments at their physical addresses), the
// initrd, the command line, and boot_params ("zero page") with the e820 map.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/guest_memory.h"
#include "base/result.h"

namespace tern::boot {

// Where a kernel was loaded and what boot_params must start from.
struct LoadedKernel {
  uint64_t entry;         // guest-physical 64-bit entry point (RIP at boot)
  uint64_t load_address;  // first byte of the loaded kernel
  uint64_t end;           // first byte past the kernel's memory needs (init_size)
  setup_header header;    // the image's setup header (bzImage) or a synthesized one (ELF)
};

// Where the initrd was placed.
struct InitrdPlacement {
  uint64_t address;  // guest-physical, page aligned
  uint64_t size;     // bytes
};

// Parses and validates a bzImage's setup header (boot protocol >= 2.12 with XLF_KERNEL_64, as
// the 64-bit entry needs). Errors (EINVAL) for a truncated file, bad boot_flag/"HdrS" magic,
// old protocol versions, a setup size past the end of the file, or no 64-bit entry point.
Result<setup_header> ParseSetupHeader(std::span<const uint8_t> image);

// Loads a bzImage or an ELF64 x86-64 vmlinux (chosen by the file's magic) into guest memory.
// The kernel must fit below the end of the first RAM region; errors name what does not fit.
Result<LoadedKernel> LoadKernel(const GuestMemory& memory, std::span<const uint8_t> image);

// Chooses the initrd's address: the highest page-aligned spot below min(initrd_addr_max + 1,
// end of the first RAM region) that starts at or above `kernel.end`. ENOMEM error when
// `size` bytes do not fit there.
Result<InitrdPlacement> PlaceInitrd(const GuestMemory& memory, const LoadedKernel& kernel,
                                    uint64_t size);

// The BIOS-style e820 map of `memory` (Tern's x86-64 layout): usable RAM below the EBDA and
// from 1 MiB (and above 4 GiB), reserved EBDA, firmware-table and PCI ECAM areas, by address.
std::vector<boot_e820_entry> BuildE820Map(const GuestMemory& memory);

// Inputs to boot_params besides the kernel.
struct BootParamsConfig {
  std::string cmdline;
  InitrdPlacement initrd{0, 0};  // size 0 = no initrd
  uint64_t acpi_rsdp_addr = 0;   // 0 = none
};

// Writes the command line at kCmdlineStart and boot_params at kZeroPageStart. EINVAL error if
// the command line (without its NUL) is longer than the kernel's cmdline_size.
Status WriteBootParams(const GuestMemory& memory, const LoadedKernel& kernel,
                       const BootParamsConfig& config);

}  // namespace tern::boot
