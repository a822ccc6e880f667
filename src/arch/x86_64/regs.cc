// Long-mode entry state, page tables, GDT, FPU, boot MSRs and LAPIC LINT setup.
#include "arch/x86_64/regs.h"

#include <array>
#include <cstring>

#include "arch/x86_64/layout.h"

namespace tern::x86_64 {
namespace {

constexpr uint64_t kPteP = 1u << 0;       // present
constexpr uint64_t kPteRw = 1u << 1;      // writable
constexpr uint64_t kPtePs = 1u << 7;      // 2 MiB page (in a PD entry)
constexpr uint64_t kPageDirectories = 4;  // 4 x 1 GiB
constexpr uint64_t kEntriesPerTable = 512;

constexpr uint64_t kCr0Pe = 1u << 0;
constexpr uint64_t kCr0Et = 1u << 4;
constexpr uint64_t kCr0Pg = 1u << 31;
constexpr uint64_t kCr4Pae = 1u << 5;
constexpr uint64_t kEferLme = 1u << 8;
constexpr uint64_t kEferLma = 1u << 10;

// GDT selectors of the 64-bit boot protocol.
constexpr uint16_t kBootCs = 0x10;
constexpr uint16_t kBootDs = 0x18;
constexpr uint16_t kBootTss = 0x20;

// Descriptor access/flags words: G/L/D bits in [15:12], access byte in [7:0].
constexpr uint16_t kCode64Flags = 0xa09b;  // G, L; present, code, execute/read, accessed
constexpr uint16_t kDataFlags = 0xc093;    // G, D/B; present, data, read/write, accessed
constexpr uint16_t kTssFlags = 0x808b;     // G; present, busy 64-bit TSS

// MSR indices (Intel SDM vol. 4).
constexpr uint32_t kMsrIa32Tsc = 0x10;
constexpr uint32_t kMsrIa32SysenterCs = 0x174;
constexpr uint32_t kMsrIa32SysenterEsp = 0x175;
constexpr uint32_t kMsrIa32SysenterEip = 0x176;
constexpr uint32_t kMsrIa32MiscEnable = 0x1a0;
constexpr uint32_t kMsrMtrrDefType = 0x2ff;
constexpr uint32_t kMsrStar = 0xc0000081;
constexpr uint32_t kMsrLstar = 0xc0000082;
constexpr uint32_t kMsrCstar = 0xc0000083;
constexpr uint32_t kMsrSyscallMask = 0xc0000084;
constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
constexpr uint64_t kMiscEnableFastString = 1;
constexpr uint64_t kMtrrEnableWriteBack = (1u << 11) | 6;

// LAPIC local vector table registers and delivery modes (SDM vol. 3A §11.5.1).
constexpr size_t kApicLvtLint0 = 0x350;
constexpr size_t kApicLvtLint1 = 0x360;
constexpr uint32_t kDeliveryModeNmi = 4;
constexpr uint32_t kDeliveryModeExtInt = 7;

constexpr uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t{base} & 0xff000000) << 32) | ((uint64_t{flags} & 0xf0ff) << 40) |
         ((uint64_t{limit} & 0xf0000) << 32) | ((uint64_t{base} & 0xffffff) << 16) |
         (uint64_t{limit} & 0xffff);
}

constexpr std::array<uint64_t, 5> kGdt = {0, 0, GdtEntry(kCode64Flags, 0, 0xfffff),
                                          GdtEntry(kDataFlags, 0, 0xfffff),
                                          GdtEntry(kTssFlags, 0, 0xfffff)};

// The kvm_segment a GDT entry describes when loaded with `selector`.
kvm_segment SegmentFromGdt(uint16_t selector) {
  uint64_t entry = kGdt[selector / 8];
  kvm_segment segment{};
  segment.base = ((entry >> 16) & 0xffffff) | (((entry >> 56) & 0xff) << 24);
  uint32_t limit = (entry & 0xffff) | (((entry >> 48) & 0xf) << 16);
  segment.g = (entry >> 55) & 1;
  segment.limit = segment.g ? (limit << 12) | 0xfff : limit;
  segment.selector = selector;
  segment.type = (entry >> 40) & 0xf;
  segment.s = (entry >> 44) & 1;
  segment.dpl = (entry >> 45) & 3;
  segment.present = (entry >> 47) & 1;
  segment.avl = (entry >> 52) & 1;
  segment.l = (entry >> 53) & 1;
  segment.db = (entry >> 54) & 1;
  segment.unusable = segment.present ? 0 : 1;
  return segment;
}

void SetLvtDeliveryMode(kvm_lapic_state& lapic, size_t offset, uint32_t mode) {
  uint32_t value;
  std::memcpy(&value, &lapic.regs[offset], sizeof(value));
  value = (value & ~0x700u) | (mode << 8);
  std::memcpy(&lapic.regs[offset], &value, sizeof(value));
}

}  // namespace

Status SetupPageTables(const GuestMemory& memory) {
  TERN_RETURN_IF_ERROR(memory.WriteObj<uint64_t>(kPml4Start, kPdptStart | kPteP | kPteRw));
  for (uint64_t pd = 0; pd < kPageDirectories; ++pd) {
    uint64_t pd_address = kPdStart + pd * kPageSize;
    TERN_RETURN_IF_ERROR(
        memory.WriteObj<uint64_t>(kPdptStart + pd * 8, pd_address | kPteP | kPteRw));
    std::array<uint64_t, kEntriesPerTable> entries;
    for (uint64_t i = 0; i < kEntriesPerTable; ++i) {
      entries[i] = ((pd * kEntriesPerTable + i) << 21) | kPteP | kPteRw | kPtePs;
    }
    TERN_RETURN_IF_ERROR(memory.WriteObj(pd_address, entries));
  }
  return Ok();
}

Status SetupGdt(const GuestMemory& memory) {
  TERN_RETURN_IF_ERROR(memory.WriteObj(kGdtStart, kGdt));
  return memory.WriteObj<uint64_t>(kIdtStart, 0);
}

kvm_sregs BootSregs(const kvm_sregs& current) {
  kvm_sregs sregs = current;
  sregs.gdt.base = kGdtStart;
  sregs.gdt.limit = sizeof(kGdt) - 1;
  sregs.idt.base = kIdtStart;
  sregs.idt.limit = sizeof(uint64_t) - 1;
  sregs.cs = SegmentFromGdt(kBootCs);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = SegmentFromGdt(kBootDs);
  sregs.tr = SegmentFromGdt(kBootTss);
  sregs.cr3 = kPml4Start;
  sregs.cr4 |= kCr4Pae;
  sregs.cr0 |= kCr0Pe | kCr0Et | kCr0Pg;
  sregs.efer |= kEferLme | kEferLma;
  return sregs;
}

kvm_regs BootRegs(uint64_t entry) {
  kvm_regs regs{};
  regs.rflags = 0x2;  // bit 1 is reserved and always set
  regs.rip = entry;
  regs.rsp = kBootStackPointer;
  regs.rbp = kBootStackPointer;
  regs.rsi = kZeroPageStart;
  return regs;
}

Status SetupVcpuCommon(const kvm::Vcpu& vcpu) {
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;     // x87 default control word (FNINIT)
  fpu.mxcsr = 0x1f80;  // SSE: all exceptions masked
  TERN_RETURN_IF_ERROR(vcpu.SetFpu(fpu));

  const kvm_msr_entry msrs[] = {
      {kMsrIa32SysenterCs, 0, 0},
      {kMsrIa32SysenterEsp, 0, 0},
      {kMsrIa32SysenterEip, 0, 0},
      {kMsrStar, 0, 0},
      {kMsrCstar, 0, 0},
      {kMsrKernelGsBase, 0, 0},
      {kMsrSyscallMask, 0, 0},
      {kMsrLstar, 0, 0},
      {kMsrIa32Tsc, 0, 0},
      {kMsrIa32MiscEnable, 0, kMiscEnableFastString},
      {kMsrMtrrDefType, 0, kMtrrEnableWriteBack},
  };
  TERN_RETURN_IF_ERROR(vcpu.SetMsrs(msrs));

  TERN_ASSIGN_OR_RETURN(kvm_lapic_state lapic, vcpu.GetLapic());
  SetLvtDeliveryMode(lapic, kApicLvtLint0, kDeliveryModeExtInt);
  SetLvtDeliveryMode(lapic, kApicLvtLint1, kDeliveryModeNmi);
  return vcpu.SetLapic(lapic);
}

}  // namespace tern::x86_64
