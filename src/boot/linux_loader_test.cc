// Unit tests for the Linux boot protocol loader: setup header validation (truncated, corrupt,
// old), bzImage and ELF placement, initrd placement, the e820 map and boot_params fields.
#include "boot/linux_loader.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>

#include "arch/x86_64/layout.h"

namespace tern::boot {
namespace {

using namespace tern::x86_64;

constexpr size_t kSetupSects = 1;  // setup code: (1 + 1) * 512 bytes
constexpr size_t kSetupSize = (kSetupSects + 1) * 512;

GuestMemory MakeMemory(uint64_t bytes) {
  auto regions = RamRegions(bytes);
  auto memory = GuestMemory::Create(regions);
  EXPECT_TRUE(memory.ok());
  return std::move(memory).value();
}

// A minimal bzImage: a valid 2.15 setup header and `payload` bytes of protected-mode code.
std::vector<uint8_t> MakeBzImage(size_t payload = 0x3000) {
  std::vector<uint8_t> image(kSetupSize + payload);
  for (size_t i = kSetupSize; i < image.size(); ++i) image[i] = static_cast<uint8_t>(i * 7);
  setup_header h{};
  h.setup_sects = kSetupSects;
  h.boot_flag = 0xaa55;
  h.jump = 0x66eb;  // jmp over the header: header ends at 0x202 + 0x66 = 0x268
  h.header = 0x53726448;
  h.version = 0x020f;
  h.loadflags = LOADED_HIGH;
  h.xloadflags = XLF_KERNEL_64;
  h.relocatable_kernel = 1;
  h.kernel_alignment = 0x200000;
  h.pref_address = 0x1000000;
  h.init_size = 0x800000;
  h.cmdline_size = 2047;
  h.initrd_addr_max = 0x7fffffff;
  std::memcpy(image.data() + 0x1f1, &h, sizeof(h));
  return image;
}

setup_header& HeaderOf(std::vector<uint8_t>& image) {
  return *reinterpret_cast<setup_header*>(image.data() + 0x1f1);
}

TEST(SetupHeaderTest, AcceptsValidHeader) {
  auto image = MakeBzImage();
  auto header = ParseSetupHeader(image);
  ASSERT_TRUE(header.ok()) << header.error().ToString();
  EXPECT_EQ(header->version, 0x020f);
  EXPECT_EQ(header->pref_address, 0x1000000u);
}

TEST(SetupHeaderTest, RejectsTruncatedImages) {
  auto image = MakeBzImage();
  for (size_t size : {size_t{0}, size_t{0x1f1}, size_t{0x267}}) {
    EXPECT_FALSE(ParseSetupHeader(std::span(image.data(), size)).ok()) << size;
  }
  // The header is complete but the setup code claims more sectors than the file has.
  HeaderOf(image).setup_sects = 200;
  auto result = ParseSetupHeader(image);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message().find("truncated"), std::string::npos);
}

TEST(SetupHeaderTest, RejectsCorruptHeaders) {
  auto bad_flag = MakeBzImage();
  HeaderOf(bad_flag).boot_flag = 0x1234;
  EXPECT_FALSE(ParseSetupHeader(bad_flag).ok());
  auto bad_magic = MakeBzImage();
  HeaderOf(bad_magic).header = 0x12345678;
  EXPECT_FALSE(ParseSetupHeader(bad_magic).ok());
  auto old = MakeBzImage();
  HeaderOf(old).version = 0x0206;
  auto result = ParseSetupHeader(old);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message().find("2.6"), std::string::npos);
  auto no64 = MakeBzImage();
  HeaderOf(no64).xloadflags = 0;
  EXPECT_FALSE(ParseSetupHeader(no64).ok());
  std::vector<uint8_t> text(4096, 'x');
  EXPECT_FALSE(ParseSetupHeader(text).ok());
}

TEST(SetupHeaderTest, ZeroesBytesPastTheHeaderEnd) {
  auto image = MakeBzImage();
  HeaderOf(image).jump = 0x62eb;                    // protocol 2.12-style header ending at 0x264
  HeaderOf(image).kernel_info_offset = 0xdeadbeef;  // lies at 0x264: setup code, not header
  auto header = ParseSetupHeader(image);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->kernel_info_offset, 0u);
  EXPECT_EQ(header->init_size, 0x800000u);
}

TEST(LoadKernelTest, LoadsBzImageAtPrefAddress) {
  GuestMemory memory = MakeMemory(64 << 20);
  auto image = MakeBzImage();
  auto kernel = LoadKernel(memory, image);
  ASSERT_TRUE(kernel.ok()) << kernel.error().ToString();
  EXPECT_EQ(kernel->load_address, 0x1000000u);
  EXPECT_EQ(kernel->entry, 0x1000200u);
  EXPECT_EQ(kernel->end, 0x1000000u + 0x800000u);
  auto loaded = memory.Slice(0x1000000, image.size() - kSetupSize);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(std::memcmp(loaded->data(), image.data() + kSetupSize, loaded->size()), 0);
}

TEST(LoadKernelTest, FallsBackToAlignedLowAddressWhenPrefDoesNotFit) {
  GuestMemory memory = MakeMemory(16 << 20);  // 16 MiB + 8 MiB init_size does not fit
  auto kernel = LoadKernel(memory, MakeBzImage());
  ASSERT_TRUE(kernel.ok()) << kernel.error().ToString();
  EXPECT_EQ(kernel->load_address, 0x200000u);  // 1 MiB aligned up to kernel_alignment
}

TEST(LoadKernelTest, IgnoresPrefAddressThatWouldWrap) {
  GuestMemory memory = MakeMemory(64 << 20);
  auto image = MakeBzImage();
  HeaderOf(image).pref_address = 0xfffffffffff00000;  // + init_size wraps past 0
  auto kernel = LoadKernel(memory, image);
  ASSERT_TRUE(kernel.ok()) << kernel.error().ToString();
  EXPECT_EQ(kernel->load_address, 0x200000u);
}

TEST(LoadKernelTest, RefusesKernelLargerThanMemory) {
  GuestMemory memory = MakeMemory(16 << 20);
  auto image = MakeBzImage();
  HeaderOf(image).init_size = 64 << 20;
  auto kernel = LoadKernel(memory, image);
  ASSERT_FALSE(kernel.ok());
  EXPECT_EQ(kernel.error().errno_value(), ENOMEM);
  HeaderOf(image).init_size = 0x800000;
  HeaderOf(image).relocatable_kernel = 0;  // must load at 16 MiB, which does not fit
  EXPECT_FALSE(LoadKernel(memory, image).ok());
}

// A minimal ELF64 x86-64 executable with one PT_LOAD segment.
std::vector<uint8_t> MakeElf(uint64_t paddr, uint64_t filesz, uint64_t memsz, uint64_t entry) {
  std::vector<uint8_t> image(sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr) + filesz, 0xab);
  Elf64_Ehdr ehdr{};
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = ELFCLASS64;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_type = ET_EXEC;
  ehdr.e_machine = EM_X86_64;
  ehdr.e_entry = entry;
  ehdr.e_phoff = sizeof(Elf64_Ehdr);
  ehdr.e_phentsize = sizeof(Elf64_Phdr);
  ehdr.e_phnum = 1;
  Elf64_Phdr phdr{};
  phdr.p_type = PT_LOAD;
  phdr.p_offset = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);
  phdr.p_paddr = paddr;
  phdr.p_vaddr = 0xffffffff80000000 + paddr;  // linked in the kernel half, like vmlinux
  phdr.p_filesz = filesz;
  phdr.p_memsz = memsz;
  std::memcpy(image.data(), &ehdr, sizeof(ehdr));
  std::memcpy(image.data() + sizeof(ehdr), &phdr, sizeof(phdr));
  return image;
}

TEST(LoadKernelTest, LoadsElfSegmentsAndZeroesBss) {
  GuestMemory memory = MakeMemory(64 << 20);
  ASSERT_TRUE(memory.WriteObj<uint32_t>(0x1000000 + 0x1000, 0xffffffff).ok());
  auto kernel = LoadKernel(memory, MakeElf(0x1000000, 0x1000, 0x2000, 0x1000010));
  ASSERT_TRUE(kernel.ok()) << kernel.error().ToString();
  EXPECT_EQ(kernel->entry, 0x1000010u);
  EXPECT_EQ(kernel->end, 0x1002000u);
  EXPECT_EQ(*memory.ReadObj<uint8_t>(0x1000000), 0xab);
  EXPECT_EQ(*memory.ReadObj<uint32_t>(0x1001000), 0u);  // BSS cleared
  EXPECT_EQ(kernel->header.cmdline_size, 2047u);
}

TEST(LoadKernelTest, RejectsHostileElf) {
  GuestMemory memory = MakeMemory(64 << 20);
  // Segment beyond guest RAM.
  EXPECT_FALSE(LoadKernel(memory, MakeElf(0x10000000, 0x1000, 0x1000, 0x10000000)).ok());
  // Entry outside the loaded segments.
  EXPECT_FALSE(LoadKernel(memory, MakeElf(0x1000000, 0x1000, 0x1000, 0x5000)).ok());
  // File size larger than memory size.
  EXPECT_FALSE(LoadKernel(memory, MakeElf(0x1000000, 0x1000, 0x10, 0x1000000)).ok());
  // Program headers past the end of the file.
  auto image = MakeElf(0x1000000, 0x1000, 0x1000, 0x1000000);
  reinterpret_cast<Elf64_Ehdr*>(image.data())->e_phoff = 1 << 30;
  EXPECT_FALSE(LoadKernel(memory, image).ok());
  // Segment data past the end of the file.
  auto truncated = MakeElf(0x1000000, 0x1000, 0x1000, 0x1000000);
  truncated.resize(truncated.size() - 1);
  EXPECT_FALSE(LoadKernel(memory, truncated).ok());
  // A user-space program (static busybox): linked at low virtual addresses.
  auto program = MakeElf(0x400000, 0x1000, 0x1000, 0x400000);
  reinterpret_cast<Elf64_Phdr*>(program.data() + sizeof(Elf64_Ehdr))->p_vaddr = 0x400000;
  auto result = LoadKernel(memory, program);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message().find("not a Linux kernel"), std::string::npos);
  // A shared object.
  auto shared = MakeElf(0x1000000, 0x1000, 0x1000, 0x1000000);
  reinterpret_cast<Elf64_Ehdr*>(shared.data())->e_type = ET_DYN;
  EXPECT_FALSE(LoadKernel(memory, shared).ok());
  // Wrong machine.
  auto arm = MakeElf(0x1000000, 0x1000, 0x1000, 0x1000000);
  reinterpret_cast<Elf64_Ehdr*>(arm.data())->e_machine = EM_AARCH64;
  EXPECT_FALSE(LoadKernel(memory, arm).ok());
}

TEST(PlaceInitrdTest, PlacesBelowTopAboveKernel) {
  GuestMemory memory = MakeMemory(256 << 20);
  auto kernel = LoadKernel(memory, MakeBzImage());
  ASSERT_TRUE(kernel.ok());
  auto initrd = PlaceInitrd(memory, *kernel, 10'000'000);
  ASSERT_TRUE(initrd.ok());
  EXPECT_EQ(initrd->address % kPageSize, 0u);
  EXPECT_GE(initrd->address, kernel->end);
  EXPECT_LE(initrd->address + initrd->size, uint64_t{256} << 20);
  EXPECT_GT(initrd->address + initrd->size, (uint64_t{256} << 20) - kPageSize);
}

TEST(PlaceInitrdTest, RefusesInitrdLargerThanMemory) {
  GuestMemory memory = MakeMemory(64 << 20);
  auto kernel = LoadKernel(memory, MakeBzImage());
  ASSERT_TRUE(kernel.ok());
  EXPECT_EQ(PlaceInitrd(memory, *kernel, uint64_t{1} << 30).error().errno_value(), ENOMEM);
  // Fits in RAM but not above the kernel.
  EXPECT_FALSE(PlaceInitrd(memory, *kernel, (64 << 20) - 0x1000000).ok());
}

TEST(PlaceInitrdTest, HonoursInitrdAddrMax) {
  GuestMemory memory = MakeMemory(256 << 20);
  auto image = MakeBzImage();
  HeaderOf(image).initrd_addr_max = 0x3fffffe;  // top at 64 MiB - 1
  auto kernel = LoadKernel(memory, image);
  ASSERT_TRUE(kernel.ok());
  auto initrd = PlaceInitrd(memory, *kernel, 0x10000);
  ASSERT_TRUE(initrd.ok());
  EXPECT_LE(initrd->address + initrd->size, 0x3ffffffu);
}

TEST(E820Test, MapsLowRamHoleAndHighRam) {
  GuestMemory small = MakeMemory(256 << 20);
  auto map = BuildE820Map(small);
  ASSERT_EQ(map.size(), 5u);
  EXPECT_EQ(map[0].addr, 0u);
  EXPECT_EQ(map[0].size, kEbdaStart);
  EXPECT_EQ(map[0].type, 1u);
  EXPECT_EQ(map[1].type, 2u);  // EBDA reserved
  EXPECT_EQ(map[2].addr, kAcpiStart);
  EXPECT_EQ(map[2].type, 2u);
  EXPECT_EQ(map[3].addr, 0x100000u);
  EXPECT_EQ(map[3].addr + map[3].size, uint64_t{256} << 20);
  EXPECT_EQ(map[4].addr, kPciEcamStart);  // ECAM reserved
  EXPECT_EQ(map[4].type, 2u);
  // Nothing covers the 640 KiB - 896 KiB legacy hole.
  for (const auto& entry : map) {
    EXPECT_FALSE(entry.addr < 0xe0000 && entry.addr + entry.size > 0xa0000);
  }

  GuestMemory big = MakeMemory(uint64_t{4} << 30);
  auto big_map = BuildE820Map(big);
  ASSERT_EQ(big_map.size(), 6u);
  EXPECT_EQ(big_map[3].addr + big_map[3].size, kMmioGapStart);
  EXPECT_EQ(big_map[4].addr, kPciEcamStart);
  EXPECT_EQ(big_map[5].addr, kMmioGapEnd);
  EXPECT_EQ(big_map[5].size, uint64_t{1} << 30);
}

TEST(BootParamsTest, FillsZeroPageAndCommandLine) {
  GuestMemory memory = MakeMemory(256 << 20);
  auto kernel = LoadKernel(memory, MakeBzImage());
  ASSERT_TRUE(kernel.ok());
  BootParamsConfig config{"console=ttyS0 -- uname -r", {0x8000000, 12345}, 0xe0000};
  ASSERT_TRUE(WriteBootParams(memory, *kernel, config).ok());
  auto params = memory.ReadObj<boot_params>(kZeroPageStart);
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(params->hdr.boot_flag, 0xaa55);
  EXPECT_EQ(params->hdr.type_of_loader, 0xff);
  EXPECT_EQ(params->hdr.cmd_line_ptr, kCmdlineStart);
  EXPECT_EQ(params->hdr.ramdisk_image, 0x8000000u);
  EXPECT_EQ(params->hdr.ramdisk_size, 12345u);
  EXPECT_EQ(params->acpi_rsdp_addr, 0xe0000u);
  EXPECT_EQ(params->e820_entries, 5);
  EXPECT_EQ(params->e820_table[3].addr, 0x100000u);
  std::array<char, 26> cmdline;
  ASSERT_TRUE(
      memory.Read(kCmdlineStart, std::span(reinterpret_cast<uint8_t*>(cmdline.data()), 26)).ok());
  EXPECT_STREQ(cmdline.data(), "console=ttyS0 -- uname -r");
}

TEST(BootParamsTest, RefusesOverlongCommandLine) {
  GuestMemory memory = MakeMemory(256 << 20);
  auto kernel = LoadKernel(memory, MakeBzImage());
  ASSERT_TRUE(kernel.ok());
  BootParamsConfig ok_config{std::string(2047, 'a')};
  EXPECT_TRUE(WriteBootParams(memory, *kernel, ok_config).ok());
  BootParamsConfig config{std::string(2048, 'a')};
  auto status = WriteBootParams(memory, *kernel, config);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("2047"), std::string::npos);
}

}  // namespace
}  // namespace tern::boot
