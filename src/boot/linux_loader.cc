// Linux x86 boot protocol: bzImage and ELF vmlinux loading, initrd placement, boot_params.
#include "boot/linux_loader.h"

#include <elf.h>

#include <algorithm>
#include <cstring>

#include "arch/x86_64/layout.h"

namespace tern::boot {
namespace {

using namespace tern::x86_64;

constexpr size_t kSetupHeaderOffset = 0x1f1;
constexpr uint16_t kBootFlagMagic = 0xaa55;
constexpr uint32_t kHdrsMagic = 0x53726448;       // "HdrS"
constexpr uint16_t kMinProtocolVersion = 0x020c;  // 2.12: xloadflags, 64-bit entry
constexpr uint64_t kEntry64Offset = 0x200;        // 64-bit entry from the protected-mode start
constexpr uint8_t kLoaderTypeUndefined = 0xff;
constexpr uint32_t kElfCmdlineSize = 2047;  // COMMAND_LINE_SIZE (2048) minus the NUL
constexpr uint32_t kDefaultInitrdAddrMax = 0x7fffffff;
constexpr uint32_t kDefaultKernelAlignment = 0x1000000;
// Linux x86-64 links itself in the upper half of the canonical address space; a user program
// (a static busybox, say) links below it.
constexpr uint64_t kKernelHalfStart = 0xffff800000000000;
constexpr uint32_t kE820Ram = 1;       // ACPI 6.4 §15.1 AddressRangeMemory
constexpr uint32_t kE820Reserved = 2;  // AddressRangeReserved

uint64_t AlignUp(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

uint64_t FirstRegionEnd(const GuestMemory& memory) {
  const MemoryRegion& first = memory.regions().front();
  return first.guest_base + first.size;
}

std::string Mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// Bytes the kernel occupies from its load address while it decompresses and runs.
uint64_t KernelFootprint(const setup_header& header, uint64_t protected_mode_size) {
  return std::max<uint64_t>(header.init_size, protected_mode_size);
}

Result<uint64_t> ChooseLoadAddress(const GuestMemory& memory, const setup_header& header,
                                   uint64_t footprint) {
  uint64_t limit = FirstRegionEnd(memory);
  uint64_t preferred = header.pref_address;
  bool fits = footprint <= limit && preferred <= limit - footprint;  // no wrap-around
  if (preferred >= kHighRamStart && fits) return preferred;
  if (header.relocatable_kernel) {
    uint64_t alignment = std::max<uint64_t>(header.kernel_alignment, kPageSize);
    uint64_t fallback = AlignUp(kHighRamStart, alignment);
    if (fallback + footprint <= limit) return fallback;
  }
  return Error("guest memory is too small for the kernel: it needs " + Mib(footprint) + " from " +
                   Mib(preferred) + " and RAM ends at " + Mib(limit),
               ENOMEM);
}

Result<LoadedKernel> LoadBzImage(const GuestMemory& memory, std::span<const uint8_t> image) {
  TERN_ASSIGN_OR_RETURN(setup_header header, ParseSetupHeader(image));
  uint64_t setup_size = (uint64_t{header.setup_sects ? header.setup_sects : 4u} + 1) * 512;
  std::span<const uint8_t> protected_mode = image.subspan(setup_size);
  uint64_t footprint = KernelFootprint(header, protected_mode.size());
  TERN_ASSIGN_OR_RETURN(uint64_t load_address, ChooseLoadAddress(memory, header, footprint));
  TERN_RETURN_IF_ERROR(memory.Write(load_address, protected_mode));
  return LoadedKernel{load_address + kEntry64Offset, load_address, load_address + footprint,
                      header};
}

// A setup header for a kernel that has none (ELF vmlinux): what boot_params needs.
setup_header SynthesizedHeader() {
  setup_header header{};
  header.boot_flag = kBootFlagMagic;
  header.header = kHdrsMagic;
  header.version = kMinProtocolVersion;
  header.loadflags = LOADED_HIGH;
  header.kernel_alignment = kDefaultKernelAlignment;
  header.initrd_addr_max = kDefaultInitrdAddrMax;
  header.cmdline_size = kElfCmdlineSize;
  return header;
}

Result<Elf64_Ehdr> ParseElfHeader(std::span<const uint8_t> image) {
  Elf64_Ehdr ehdr;
  if (image.size() < sizeof(ehdr)) return Error("kernel ELF header is truncated", EINVAL);
  std::memcpy(&ehdr, image.data(), sizeof(ehdr));
  if (ehdr.e_ident[EI_CLASS] != ELFCLASS64 || ehdr.e_ident[EI_DATA] != ELFDATA2LSB ||
      ehdr.e_machine != EM_X86_64) {
    return Error("kernel ELF is not a little-endian x86-64 ELF64 file", EINVAL);
  }
  if (ehdr.e_phentsize != sizeof(Elf64_Phdr) || ehdr.e_phnum == 0 || ehdr.e_phoff > image.size() ||
      uint64_t{ehdr.e_phnum} * sizeof(Elf64_Phdr) > image.size() - ehdr.e_phoff) {
    return Error("kernel ELF program headers are missing or truncated", EINVAL);
  }
  return ehdr;
}

Status LoadElfSegment(const GuestMemory& memory, std::span<const uint8_t> image,
                      const Elf64_Phdr& phdr) {
  if (phdr.p_offset > image.size() || phdr.p_filesz > image.size() - phdr.p_offset ||
      phdr.p_filesz > phdr.p_memsz) {
    return Error("kernel ELF segment lies outside the file", EINVAL);
  }
  auto dest = memory.Slice(phdr.p_paddr, phdr.p_memsz);
  if (!dest.ok()) {
    return Error("kernel ELF segment at " + Mib(phdr.p_paddr) + " does not fit in guest RAM",
                 ENOMEM);
  }
  std::memcpy(dest->data(), image.data() + phdr.p_offset, phdr.p_filesz);
  std::memset(dest->data() + phdr.p_filesz, 0, phdr.p_memsz - phdr.p_filesz);
  return Ok();
}

Result<LoadedKernel> LoadElf(const GuestMemory& memory, std::span<const uint8_t> image) {
  TERN_ASSIGN_OR_RETURN(Elf64_Ehdr ehdr, ParseElfHeader(image));
  if (ehdr.e_type != ET_EXEC) return Error("kernel ELF is not an executable (ET_EXEC)", EINVAL);
  std::vector<Elf64_Phdr> segments;
  for (int i = 0; i < ehdr.e_phnum; ++i) {
    Elf64_Phdr phdr;
    std::memcpy(&phdr, image.data() + ehdr.e_phoff + i * sizeof(phdr), sizeof(phdr));
    if (phdr.p_type == PT_LOAD) segments.push_back(phdr);
  }
  bool kernel_linked = std::any_of(segments.begin(), segments.end(), [](const Elf64_Phdr& p) {
    return p.p_vaddr >= kKernelHalfStart;
  });
  if (!kernel_linked) {
    return Error("ELF file is not a Linux kernel: no segment is linked at a kernel address",
                 EINVAL);
  }
  LoadedKernel kernel{ehdr.e_entry, UINT64_MAX, 0, SynthesizedHeader()};
  for (const Elf64_Phdr& phdr : segments) {
    TERN_RETURN_IF_ERROR(LoadElfSegment(memory, image, phdr));
    kernel.load_address = std::min(kernel.load_address, phdr.p_paddr);
    kernel.end = std::max(kernel.end, phdr.p_paddr + phdr.p_memsz);
  }
  if (kernel.end == 0) return Error("kernel ELF has no loadable segment", EINVAL);
  if (kernel.entry < kernel.load_address || kernel.entry >= kernel.end) {
    return Error("kernel ELF entry point is outside its loaded segments", EINVAL);
  }
  return kernel;
}

void AddE820(std::vector<boot_e820_entry>& map, uint64_t start, uint64_t end, uint32_t type) {
  if (end > start) map.push_back({start, end - start, type});
}

}  // namespace

Result<setup_header> ParseSetupHeader(std::span<const uint8_t> image) {
  if (image.size() < kSetupHeaderOffset + sizeof(setup_header)) {
    return Error("kernel image is too small to be a bzImage", EINVAL);
  }
  setup_header header;
  std::memcpy(&header, image.data() + kSetupHeaderOffset, sizeof(header));
  if (header.boot_flag != kBootFlagMagic || header.header != kHdrsMagic) {
    return Error("kernel image is not a bzImage (no 0xAA55 boot flag and \"HdrS\" magic)", EINVAL);
  }
  if (header.version < kMinProtocolVersion) {
    return Error("kernel boot protocol " + std::to_string(header.version >> 8) + "." +
                     std::to_string(header.version & 0xff) + " is older than the required 2.12",
                 EINVAL);
  }
  if (!(header.xloadflags & XLF_KERNEL_64) || !(header.loadflags & LOADED_HIGH)) {
    return Error("kernel has no 64-bit entry point (XLF_KERNEL_64)", EINVAL);
  }
  uint64_t setup_size = (uint64_t{header.setup_sects ? header.setup_sects : 4u} + 1) * 512;
  if (setup_size >= image.size()) {
    return Error("kernel image is truncated: setup code runs past the end of the file", EINVAL);
  }
  // The header's own end (boot.rst: 0x202 + the jump instruction's offset byte); bytes past it
  // belong to the setup code of older protocol versions, not to the header.
  size_t header_end = 0x202 + (header.jump >> 8);
  if (header_end < kSetupHeaderOffset + sizeof(header)) {
    std::memset(reinterpret_cast<uint8_t*>(&header) + (header_end - kSetupHeaderOffset), 0,
                kSetupHeaderOffset + sizeof(header) - header_end);
  }
  return header;
}

Result<LoadedKernel> LoadKernel(const GuestMemory& memory, std::span<const uint8_t> image) {
  if (image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0) {
    return LoadElf(memory, image);
  }
  return LoadBzImage(memory, image);
}

Result<InitrdPlacement> PlaceInitrd(const GuestMemory& memory, const LoadedKernel& kernel,
                                    uint64_t size) {
  uint64_t max =
      kernel.header.initrd_addr_max ? kernel.header.initrd_addr_max : kDefaultInitrdAddrMax;
  uint64_t top = std::min(max + 1, FirstRegionEnd(memory));
  uint64_t floor = AlignUp(kernel.end, kPageSize);
  if (size > top || (top - size) / kPageSize * kPageSize < floor) {
    return Error("initrd of " + Mib(size) + " does not fit in guest RAM between the kernel end (" +
                     Mib(floor) + ") and " + Mib(top),
                 ENOMEM);
  }
  return InitrdPlacement{(top - size) / kPageSize * kPageSize, size};
}

std::vector<boot_e820_entry> BuildE820Map(const GuestMemory& memory) {
  std::vector<boot_e820_entry> map;
  uint64_t low_end = FirstRegionEnd(memory);
  AddE820(map, 0, std::min(kEbdaStart, low_end), kE820Ram);
  AddE820(map, kEbdaStart, std::min(kLowRamEnd, low_end), kE820Reserved);
  AddE820(map, kAcpiStart, std::min(kFirmwareEnd, low_end), kE820Reserved);
  AddE820(map, kHighRamStart, low_end, kE820Ram);
  // Linux uses ECAM (MMCONFIG) from early boot only if the e820 map reserves it.
  AddE820(map, kPciEcamStart, kPciEcamStart + kPciEcamSize, kE820Reserved);
  for (size_t i = 1; i < memory.regions().size(); ++i) {
    const MemoryRegion& region = memory.regions()[i];
    AddE820(map, region.guest_base, region.guest_base + region.size, kE820Ram);
  }
  return map;
}

Status WriteBootParams(const GuestMemory& memory, const LoadedKernel& kernel,
                       const BootParamsConfig& config) {
  uint64_t max_cmdline = std::min<uint64_t>(kernel.header.cmdline_size, kCmdlineMaxSize - 1);
  if (config.cmdline.size() > max_cmdline) {
    return Error("kernel command line is " + std::to_string(config.cmdline.size()) +
                     " bytes; this kernel accepts at most " + std::to_string(max_cmdline),
                 EINVAL);
  }
  std::span<const uint8_t> cmdline(reinterpret_cast<const uint8_t*>(config.cmdline.c_str()),
                                   config.cmdline.size() + 1);
  TERN_RETURN_IF_ERROR(memory.Write(kCmdlineStart, cmdline));

  boot_params params{};
  params.hdr = kernel.header;
  params.hdr.type_of_loader = kLoaderTypeUndefined;
  params.hdr.cmd_line_ptr = static_cast<uint32_t>(kCmdlineStart);
  params.hdr.ramdisk_image = static_cast<uint32_t>(config.initrd.address);
  params.hdr.ramdisk_size = static_cast<uint32_t>(config.initrd.size);
  params.ext_ramdisk_image = static_cast<uint32_t>(config.initrd.address >> 32);
  params.ext_ramdisk_size = static_cast<uint32_t>(config.initrd.size >> 32);
  params.acpi_rsdp_addr = config.acpi_rsdp_addr;
  std::vector<boot_e820_entry> e820 = BuildE820Map(memory);
  if (e820.size() > E820_MAX_ENTRIES_ZEROPAGE) return Error("e820 map too long", EINVAL);
  params.e820_entries = static_cast<uint8_t>(e820.size());
  std::copy(e820.begin(), e820.end(), params.e820_table);
  return memory.WriteObj(kZeroPageStart, params);
}

}  // namespace tern::boot
