// MP spec 1.4 floating pointer and configuration table, built as packed structs and written
// into guest memory at kMpTableStart.
#include "arch/x86_64/mptable.h"

#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "arch/x86_64/layout.h"

namespace tern::x86_64 {
namespace {

static_assert(std::endian::native == std::endian::little);

// MP Floating Pointer Structure, MP spec 1.4 §4.1 Figure 4-2 (16 bytes).
struct [[gnu::packed]] MpfIntel {
  char signature[4];  // "_MP_"
  uint32_t physptr;   // configuration table address
  uint8_t length;     // in 16-byte paragraphs: 1
  uint8_t specification;
  uint8_t checksum;
  uint8_t feature1;  // 0: a configuration table is present
  uint8_t feature2;  // bit 7 IMCRP: 0, virtual-wire mode
  uint8_t feature3;
  uint8_t feature4;
  uint8_t feature5;
};
static_assert(sizeof(MpfIntel) == 16);

// MP Configuration Table Header, MP spec 1.4 §4.2 Figure 4-3 (44 bytes).
struct [[gnu::packed]] MpcTable {
  char signature[4];  // "PCMP"
  uint16_t length;    // base table length: header plus entries
  uint8_t spec;
  uint8_t checksum;
  char oem[8];
  char productid[12];
  uint32_t oemptr;
  uint16_t oemsize;
  uint16_t oemcount;  // number of base table entries
  uint32_t lapic;     // local APIC address
  uint16_t ext_table_length;
  uint8_t ext_table_checksum;
  uint8_t reserved;
};
static_assert(sizeof(MpcTable) == 44);

// Processor Entry, MP spec 1.4 §4.3.1 Figure 4-4 (20 bytes).
struct [[gnu::packed]] MpcCpu {
  uint8_t type;  // 0
  uint8_t apicid;
  uint8_t apicver;
  uint8_t cpuflag;       // bit 0 EN, bit 1 BP
  uint32_t cpufeature;   // CPU signature: stepping | model << 4 | family << 8
  uint32_t featureflag;  // CPUID.1:EDX
  uint32_t reserved[2];
};
static_assert(sizeof(MpcCpu) == 20);

// Bus Entry, MP spec 1.4 §4.3.2 Figure 4-5 (8 bytes).
struct [[gnu::packed]] MpcBus {
  uint8_t type;  // 1
  uint8_t busid;
  char bustype[6];
};
static_assert(sizeof(MpcBus) == 8);

// I/O APIC Entry, MP spec 1.4 §4.3.3 Figure 4-6 (8 bytes).
struct [[gnu::packed]] MpcIoapic {
  uint8_t type;  // 2
  uint8_t apicid;
  uint8_t apicver;
  uint8_t flags;  // bit 0 EN
  uint32_t apicaddr;
};
static_assert(sizeof(MpcIoapic) == 8);

// I/O Interrupt Assignment Entry, MP spec 1.4 §4.3.4 Figure 4-7 (8 bytes).
struct [[gnu::packed]] MpcIntsrc {
  uint8_t type;  // 3
  uint8_t irqtype;
  uint16_t irqflag;  // polarity bits 0-1, trigger bits 2-3; 0 = conforms to the bus
  uint8_t srcbus;
  uint8_t srcbusirq;
  uint8_t dstapic;
  uint8_t dstirq;
};
static_assert(sizeof(MpcIntsrc) == 8);

// Local Interrupt Assignment Entry, MP spec 1.4 §4.3.5 Figure 4-8 (8 bytes).
struct [[gnu::packed]] MpcLintsrc {
  uint8_t type;  // 4
  uint8_t irqtype;
  uint16_t irqflag;
  uint8_t srcbusid;
  uint8_t srcbusirq;
  uint8_t destapic;  // 0xff: every local APIC
  uint8_t destapiclint;
};
static_assert(sizeof(MpcLintsrc) == 8);

constexpr uint8_t kMpSpecRev14 = 4;
constexpr uint8_t kEntryProcessor = 0;
constexpr uint8_t kEntryBus = 1;
constexpr uint8_t kEntryIoapic = 2;
constexpr uint8_t kEntryIntsrc = 3;
constexpr uint8_t kEntryLintsrc = 4;
constexpr uint8_t kCpuEnabled = 0x01;
constexpr uint8_t kCpuBootProcessor = 0x02;
constexpr uint8_t kIoapicUsable = 0x01;
constexpr uint8_t kIrqTypeInt = 0;
constexpr uint8_t kIrqTypeNmi = 1;
constexpr uint8_t kIrqTypeExtInt = 3;
constexpr uint8_t kAllLocalApics = 0xff;

constexpr uint8_t kIsaBusId = 0;
constexpr uint8_t kNumIsaIrqs = 16;
// Versions KVM's in-kernel LAPIC and IOAPIC report (integrated xAPIC 0x14; IOAPIC 0x11).
constexpr uint8_t kLapicVersion = 0x14;
constexpr uint8_t kIoapicVersion = 0x11;
// A P6-family signature (family 6, model 0, stepping 0) and CPUID.1:EDX FPU | APIC, which every
// KVM vCPU has. Guests take the real values from CPUID; these only need to be plausible.
constexpr uint32_t kCpuSignature = 6u << 8;
constexpr uint32_t kCpuFeatureFlags = (1u << 0) | (1u << 9);

template <typename T>
void Append(std::vector<uint8_t>& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* begin = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), begin, begin + sizeof(T));
}

// The byte that makes `bytes` (with a zero checksum field) sum to 0 (MP spec 1.4 §4.1, §4.2).
uint8_t Checksum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t byte : bytes) sum = static_cast<uint8_t>(sum + byte);
  return static_cast<uint8_t>(0 - sum);
}

// Processor entries for vCPUs 0..num_vcpus-1; returns the number of entries appended.
uint16_t AppendProcessors(std::vector<uint8_t>& out, uint32_t num_vcpus) {
  for (uint32_t i = 0; i < num_vcpus; ++i) {
    MpcCpu cpu{};
    cpu.type = kEntryProcessor;
    cpu.apicid = static_cast<uint8_t>(i);
    cpu.apicver = kLapicVersion;
    cpu.cpuflag = kCpuEnabled | (i == 0 ? kCpuBootProcessor : 0);
    cpu.cpufeature = kCpuSignature;
    cpu.featureflag = kCpuFeatureFlags;
    Append(out, cpu);
  }
  return static_cast<uint16_t>(num_vcpus);
}

// The ISA bus and the IOAPIC; returns the number of entries appended.
uint16_t AppendBusAndIoapic(std::vector<uint8_t>& out, uint8_t ioapic_id) {
  MpcBus bus{.type = kEntryBus, .busid = kIsaBusId, .bustype = {'I', 'S', 'A', ' ', ' ', ' '}};
  Append(out, bus);
  MpcIoapic ioapic{.type = kEntryIoapic,
                   .apicid = ioapic_id,
                   .apicver = kIoapicVersion,
                   .flags = kIoapicUsable,
                   .apicaddr = static_cast<uint32_t>(kIoapicAddress)};
  Append(out, ioapic);
  return 2;
}

// ISA IRQ n -> IOAPIC pin n, bus-default polarity and trigger (ISA: active high, edge).
uint16_t AppendIsaInterrupts(std::vector<uint8_t>& out, uint8_t ioapic_id) {
  for (uint8_t irq = 0; irq < kNumIsaIrqs; ++irq) {
    Append(out, MpcIntsrc{.type = kEntryIntsrc,
                          .irqtype = kIrqTypeInt,
                          .irqflag = 0,
                          .srcbus = kIsaBusId,
                          .srcbusirq = irq,
                          .dstapic = ioapic_id,
                          .dstirq = irq});
  }
  return kNumIsaIrqs;
}

// ExtINT on LINT0 and NMI on LINT1 of every local APIC (as in MP spec 1.4 §5.2's defaults).
uint16_t AppendLocalInterrupts(std::vector<uint8_t>& out) {
  for (auto [type, lint] : {std::pair<uint8_t, uint8_t>{kIrqTypeExtInt, 0}, {kIrqTypeNmi, 1}}) {
    Append(out, MpcLintsrc{.type = kEntryLintsrc,
                           .irqtype = type,
                           .irqflag = 0,
                           .srcbusid = kIsaBusId,
                           .srcbusirq = 0,
                           .destapic = kAllLocalApics,
                           .destapiclint = lint});
  }
  return 2;
}

MpcTable MakeHeader(uint16_t length, uint16_t entry_count) {
  MpcTable header{};
  std::memcpy(header.signature, "PCMP", 4);
  header.length = length;
  header.spec = kMpSpecRev14;
  std::memcpy(header.oem, "TERN    ", sizeof(header.oem));
  std::memcpy(header.productid, "TERN        ", sizeof(header.productid));
  header.oemcount = entry_count;
  header.lapic = static_cast<uint32_t>(kLapicAddress);
  return header;
}

// The configuration table: header, then entries; base-table checksum set.
std::vector<uint8_t> BuildConfigTable(uint32_t num_vcpus) {
  const uint8_t ioapic_id = IoapicApicId(num_vcpus);
  std::vector<uint8_t> entries;
  uint16_t count = AppendProcessors(entries, num_vcpus);
  count += AppendBusAndIoapic(entries, ioapic_id);
  count += AppendIsaInterrupts(entries, ioapic_id);
  count += AppendLocalInterrupts(entries);
  std::vector<uint8_t> table;
  Append(table, MakeHeader(static_cast<uint16_t>(sizeof(MpcTable) + entries.size()), count));
  table.insert(table.end(), entries.begin(), entries.end());
  table[offsetof(MpcTable, checksum)] = Checksum(table);
  return table;
}

MpfIntel MakeFloatingPointer(uint32_t config_table_address) {
  MpfIntel mpf{};
  std::memcpy(mpf.signature, "_MP_", 4);
  mpf.physptr = config_table_address;
  mpf.length = 1;
  mpf.specification = kMpSpecRev14;
  mpf.checksum = Checksum(std::span(reinterpret_cast<const uint8_t*>(&mpf), sizeof(mpf)));
  return mpf;
}

Status CheckVcpuCount(uint32_t num_vcpus) {
  if (num_vcpus == 0 || num_vcpus > kMaxVcpus) {
    return Error("MP table: vCPU count " + std::to_string(num_vcpus) + " is not in 1.." +
                     std::to_string(kMaxVcpus),
                 EINVAL);
  }
  return Ok();
}

}  // namespace

Status SetupMpTable(const GuestMemory& memory, uint32_t num_vcpus) {
  TERN_RETURN_IF_ERROR(CheckVcpuCount(num_vcpus));
  const uint64_t config_address = kMpTableStart + sizeof(MpfIntel);
  std::vector<uint8_t> config = BuildConfigTable(num_vcpus);
  if (config.size() > kSmbiosStart - config_address) {
    return Error("MP table of " + std::to_string(sizeof(MpfIntel) + config.size()) +
                     " bytes does not fit below the SMBIOS tables",
                 ENOSPC);
  }
  MpfIntel mpf = MakeFloatingPointer(static_cast<uint32_t>(config_address));
  Status status = memory.WriteObj(kMpTableStart, mpf);
  if (status.ok()) status = memory.Write(config_address, config);
  if (!status.ok()) return status.error().WithContext("writing the MP table");
  return Ok();
}

}  // namespace tern::x86_64
