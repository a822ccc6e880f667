// ACPI table building blocks shared by every architecture (ACPI 6.4 §5.2): the Root System
// Description Pointer, the common system description table (SDT) header and its checksum, the
// Generic Address Structure, the FADT layout, the XSDT, and a bump allocator that places tables
// inside a fixed guest-physical window. Tables are packed structs (little-endian, as ACPI is)
// serialized to byte vectors; architecture code fills them and writes them into guest memory.
// Thread safety: the free functions are pure and safe from any thread; TableArea is not
// thread-safe.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "base/result.h"

namespace tern::acpi {

static_assert(
    std::endian::native == std::endian::little,
    "ACPI structures are little-endian; these packed structs assume a little-endian host");

// Tern's identity in every table header (ACPI 6.4 §5.2.6 Table 5.4) and in the RSDP. The char
// arrays hold exactly the field width plus a terminating NUL that is not copied.
inline constexpr char kOemId[7] = "TERN  ";         // OEMID, 6 bytes
inline constexpr char kOemTableId[9] = "TERNVMM ";  // OEM Table ID, 8 bytes
inline constexpr char kCreatorId[5] = "TERN";       // Creator ID, 4 bytes
inline constexpr uint32_t kOemRevision = 1;
inline constexpr uint32_t kCreatorRevision = 1;

// Returns the checksum byte for `bytes` (whose checksum field must currently hold 0): the value
// that makes all bytes sum to 0 modulo 256. This is the rule of ACPI 6.4 §5.2.5.3 (RSDP) and
// §5.2.6 (every SDT), and also of MP spec 1.4 §4.1/§4.2.
uint8_t Checksum(std::span<const uint8_t> bytes);

// System Description Table header, ACPI 6.4 §5.2.6 Table 5.4 (36 bytes). Every table but the
// RSDP starts with it.
struct [[gnu::packed]] SdtHeader {
  char signature[4];
  uint32_t length;  // bytes of the whole table, header included
  uint8_t revision;
  uint8_t checksum;  // makes the whole table sum to 0
  char oem_id[6];
  char oem_table_id[8];
  uint32_t oem_revision;
  char creator_id[4];
  uint32_t creator_revision;
};
static_assert(sizeof(SdtHeader) == 36);

// Root System Description Pointer, ACPI 6.4 §5.2.5.3 Table 5.3, revision 2 (36 bytes).
struct [[gnu::packed]] Rsdp {
  char signature[8];  // "RSD PTR "
  uint8_t checksum;   // covers the first 20 bytes (the ACPI 1.0 part)
  char oem_id[6];
  uint8_t revision;  // 2 for ACPI 2.0 and later
  uint32_t rsdt_address;
  uint32_t length;  // 36
  uint64_t xsdt_address;
  uint8_t extended_checksum;  // covers all 36 bytes
  uint8_t reserved[3];
};
static_assert(sizeof(Rsdp) == 36);
inline constexpr size_t kRsdpV1Length = 20;  // bytes covered by Rsdp::checksum

// Generic Address Structure, ACPI 6.4 §5.2.3.2 Table 5.1 (12 bytes).
struct [[gnu::packed]] GenericAddress {
  uint8_t address_space_id;
  uint8_t register_bit_width;
  uint8_t register_bit_offset;
  uint8_t access_size;
  uint64_t address;
};
static_assert(sizeof(GenericAddress) == 12);

inline constexpr uint8_t kAddressSpaceSystemMemory = 0;
inline constexpr uint8_t kAddressSpaceSystemIo = 1;
inline constexpr uint8_t kAccessSizeByte = 1;

// A one-byte register at an I/O port: system I/O space, 8 bits wide at bit 0, byte access.
GenericAddress IoPortByteRegister(uint16_t port);

// Fixed ACPI Description Table, ACPI 6.4 §5.2.9 Table 5.9: FADT major revision 6, minor 4
// (276 bytes). Field names follow the spec's.
struct [[gnu::packed]] Fadt {
  SdtHeader header;  // signature "FACP"
  uint32_t firmware_ctrl;
  uint32_t dsdt;
  uint8_t reserved0;
  uint8_t preferred_pm_profile;
  uint16_t sci_int;
  uint32_t smi_cmd;
  uint8_t acpi_enable;
  uint8_t acpi_disable;
  uint8_t s4bios_req;
  uint8_t pstate_cnt;
  uint32_t pm1a_evt_blk;
  uint32_t pm1b_evt_blk;
  uint32_t pm1a_cnt_blk;
  uint32_t pm1b_cnt_blk;
  uint32_t pm2_cnt_blk;
  uint32_t pm_tmr_blk;
  uint32_t gpe0_blk;
  uint32_t gpe1_blk;
  uint8_t pm1_evt_len;
  uint8_t pm1_cnt_len;
  uint8_t pm2_cnt_len;
  uint8_t pm_tmr_len;
  uint8_t gpe0_blk_len;
  uint8_t gpe1_blk_len;
  uint8_t gpe1_base;
  uint8_t cst_cnt;
  uint16_t p_lvl2_lat;
  uint16_t p_lvl3_lat;
  uint16_t flush_size;
  uint16_t flush_stride;
  uint8_t duty_offset;
  uint8_t duty_width;
  uint8_t day_alrm;
  uint8_t mon_alrm;
  uint8_t century;
  uint16_t iapc_boot_arch;
  uint8_t reserved1;
  uint32_t flags;
  GenericAddress reset_reg;
  uint8_t reset_value;
  uint16_t arm_boot_arch;
  uint8_t fadt_minor_version;
  uint64_t x_firmware_ctrl;
  uint64_t x_dsdt;
  GenericAddress x_pm1a_evt_blk;
  GenericAddress x_pm1b_evt_blk;
  GenericAddress x_pm1a_cnt_blk;
  GenericAddress x_pm1b_cnt_blk;
  GenericAddress x_pm2_cnt_blk;
  GenericAddress x_pm_tmr_blk;
  GenericAddress x_gpe0_blk;
  GenericAddress x_gpe1_blk;
  GenericAddress sleep_control_reg;
  GenericAddress sleep_status_reg;
  char hypervisor_vendor_identity[8];
};
static_assert(sizeof(Fadt) == 276);
static_assert(offsetof(Fadt, iapc_boot_arch) == 109);
static_assert(offsetof(Fadt, flags) == 112);
static_assert(offsetof(Fadt, fadt_minor_version) == 131);
static_assert(offsetof(Fadt, x_dsdt) == 140);
static_assert(offsetof(Fadt, sleep_control_reg) == 244);
static_assert(offsetof(Fadt, sleep_status_reg) == 256);
static_assert(offsetof(Fadt, hypervisor_vendor_identity) == 268);

inline constexpr uint8_t kFadtRevision = 6;
inline constexpr uint8_t kFadtMinorVersion = 4;

// FADT Flags, ACPI 6.4 §5.2.9.1 Table 5.10 (the subset Tern uses).
inline constexpr uint32_t kFadtPwrButton = 1u << 4;       // power button is a control-method device
inline constexpr uint32_t kFadtSlpButton = 1u << 5;       // sleep button likewise (or absent)
inline constexpr uint32_t kFadtResetRegSup = 1u << 10;    // RESET_REG is valid
inline constexpr uint32_t kFadtHwReducedAcpi = 1u << 20;  // no fixed hardware, no SCI, no PM1

// IA-PC Boot Architecture Flags, ACPI 6.4 §5.2.9.3 Table 5.11.
inline constexpr uint16_t kIapcLegacyDevices = 1u << 0;
inline constexpr uint16_t kIapc8042 = 1u << 1;
inline constexpr uint16_t kIapcVgaNotPresent = 1u << 2;
inline constexpr uint16_t kIapcMsiNotSupported = 1u << 3;
inline constexpr uint16_t kIapcPcieAspmControls = 1u << 4;
inline constexpr uint16_t kIapcCmosRtcNotPresent = 1u << 5;

// Table revisions Tern emits (ACPI 6.4): XSDT 1 (§5.2.8), DSDT 2 (§5.2.11.1: 64-bit AML
// integers), MADT 5 (§5.2.12).
inline constexpr uint8_t kXsdtRevision = 1;
inline constexpr uint8_t kDsdtRevision = 2;
inline constexpr uint8_t kMadtRevision = 5;

// Appends the bytes of a trivially copyable value (a packed table struct) to `out`.
template <typename T>
void AppendBytes(std::vector<uint8_t>& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* begin = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), begin, begin + sizeof(T));
}

// An SdtHeader with `signature` (4 characters, e.g. "APIC"), `revision` and Tern's OEM and
// creator ids; length and checksum are 0 until SealSdt fills them in.
SdtHeader MakeSdtHeader(const char (&signature)[5], uint8_t revision);

// Makes a table's header consistent with its bytes: sets Length to table.size() and Checksum so
// that the whole table sums to 0 (ACPI 6.4 §5.2.6). `table` must start with an SdtHeader.
// Errors: EINVAL if table is shorter than an SdtHeader or longer than UINT32_MAX bytes.
Status SealSdt(std::span<uint8_t> table);

// A complete, sealed table: a header from MakeSdtHeader(signature, revision) followed by `body`.
// Errors: as SealSdt.
Result<std::vector<uint8_t>> BuildSdt(const char (&signature)[5], uint8_t revision,
                                      std::span<const uint8_t> body);

// Serializes a fixed-size table struct whose first member is an SdtHeader and seals it.
template <typename T>
Result<std::vector<uint8_t>> SerializeSdt(const T& table) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) >= sizeof(SdtHeader));
  std::vector<uint8_t> bytes;
  AppendBytes(bytes, table);
  TERN_RETURN_IF_ERROR(SealSdt(bytes));
  return bytes;
}

// A revision-2 RSDP pointing at the XSDT at `xsdt_address` (no RSDT), with both checksums set
// (ACPI 6.4 §5.2.5.3).
Rsdp MakeRsdp(uint64_t xsdt_address);

// The Extended System Description Table (ACPI 6.4 §5.2.8): a header followed by the 64-bit
// guest-physical addresses of the other tables, in the given order. Errors: as SealSdt.
Result<std::vector<uint8_t>> BuildXsdt(std::span<const uint64_t> table_addresses);

// Hands out non-overlapping, aligned blocks of the guest-physical window [begin, end), lowest
// first, so that firmware tables can be placed before they are written. Not thread-safe.
class TableArea {
 public:
  TableArea(uint64_t begin, uint64_t end) : next_(begin), end_(end) {}

  // The address of a new block of `size` bytes at the next multiple of `alignment` (a power of
  // two). Errors: EINVAL for a bad alignment; ENOSPC if the block would end past `end`.
  Result<uint64_t> Allocate(uint64_t size, uint64_t alignment);

 private:
  uint64_t next_;
  uint64_t end_;
};

}  // namespace tern::acpi
