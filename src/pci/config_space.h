// A reusable type-0 PCI configuration space (PCI Local Bus 3.0 §6.1, §6.2) that a PCI function
// embeds: identification, command/status, memory BARs with sizing semantics, a capability list
// (§6.7) and read-as-zero PCIe extended space (PCIe 4.0 §7.2.2) up to 4 KiB. Guest writes
// change only the bits a register defines as writable; everything else is read-only.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "pci/pci_device.h"

namespace tern::pci {

inline constexpr size_t kConfigSpaceSize = 256;           // conventional space, bytes
inline constexpr size_t kExtendedConfigSpaceSize = 4096;  // with PCIe extended space
inline constexpr uint8_t kNumBars = 6;

// Type-0 header registers, PCI 3.0 §6.1 Figure 6-1 (byte offsets).
inline constexpr uint16_t kVendorIdOffset = 0x00;
inline constexpr uint16_t kDeviceIdOffset = 0x02;
inline constexpr uint16_t kCommandOffset = 0x04;
inline constexpr uint16_t kStatusOffset = 0x06;
inline constexpr uint16_t kRevisionIdOffset = 0x08;
inline constexpr uint16_t kClassCodeOffset = 0x09;  // 3 bytes: prog-if, subclass, base class
inline constexpr uint16_t kCacheLineSizeOffset = 0x0c;
inline constexpr uint16_t kHeaderTypeOffset = 0x0e;
inline constexpr uint16_t kBar0Offset = 0x10;  // BAR n at kBar0Offset + 4 * n
inline constexpr uint16_t kSubsystemVendorIdOffset = 0x2c;
inline constexpr uint16_t kSubsystemIdOffset = 0x2e;
inline constexpr uint16_t kCapabilitiesPointerOffset = 0x34;
inline constexpr uint16_t kInterruptLineOffset = 0x3c;
inline constexpr uint16_t kInterruptPinOffset = 0x3d;

// Command register bits, PCI 3.0 §6.2.2.
inline constexpr uint16_t kCommandMemorySpace = 1u << 1;
inline constexpr uint16_t kCommandBusMaster = 1u << 2;
inline constexpr uint16_t kCommandInterruptDisable = 1u << 10;
// Status register bits, PCI 3.0 §6.2.3.
inline constexpr uint16_t kStatusCapabilitiesList = 1u << 4;

// Memory BAR low bits, PCI 3.0 §6.2.5.1.
inline constexpr uint32_t kBarMemoryType64 = 0b10 << 1;
inline constexpr uint32_t kBarPrefetchable = 1u << 3;
inline constexpr uint32_t kBarMemoryAddressMask = ~uint32_t{0xf};

// Capability IDs, PCI Code and ID Assignment Specification 1.11 §2.
inline constexpr uint8_t kCapabilityIdVendorSpecific = 0x09;
inline constexpr uint8_t kCapabilityIdMsix = 0x11;
// Where the capability list starts: the first byte after the type-0 header.
inline constexpr uint16_t kFirstCapabilityOffset = 0x40;

// The config offset of BAR register `index` (0..5).
inline constexpr uint16_t BarOffset(uint8_t index) { return kBar0Offset + 4 * index; }

// PCI registers, BAR contents and MSI-X structures are little-endian (PCI 3.0 §6.1): the value of
// `data` (up to 8 bytes), and `value` written over all of `data`.
uint64_t LoadLe(std::span<const uint8_t> data);
void StoreLe(std::span<uint8_t> data, uint64_t value);

// Checks a BAR request against PCI 3.0 §6.2.5.1 as Tern implements it. Errors (EINVAL): index
// > 5, a 64-bit BAR at index 5, a size that is not a power of two >= 4 KiB, or a 32-bit BAR
// over 2 GiB.
Status ValidateBar(const BarRequest& bar);

// Identification registers (PCI 3.0 §6.2.1).
struct PciIdentity {
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t subsystem_vendor_id = 0;
  uint16_t subsystem_id = 0;
  uint8_t revision_id = 0;
  uint32_t class_code = 0;  // 24 bits: base class << 16 | subclass << 8 | programming interface
};

// Header type 0, single function; interrupt pin 0 (no INTx: MSI-X only); command 0 at reset
// (memory decoding and bus mastering off). Writable by the guest: command bits Memory Space,
// Bus Master and Interrupt Disable; Cache Line Size; Interrupt Line; the address bits of the
// BARs added with AddBar (bits below the BAR's size read as zero, so writing all-ones reads back
// the size mask, §6.2.5.1); the capability bytes marked writable. Offsets 0x100..0xfff read as
// zero (no PCIe extended capabilities); accesses past 4 KiB read zero and are ignored.
// Thread-safe: every method takes an internal lock.
class ConfigSpace {
 public:
  explicit ConfigSpace(const PciIdentity& identity);
  ConfigSpace(const ConfigSpace&) = delete;
  ConfigSpace& operator=(const ConfigSpace&) = delete;

  // Implements memory BAR `bar.index` (before the guest runs). Errors (EINVAL): those of
  // ValidateBar, or registers already used by another BAR.
  Status AddBar(const BarRequest& bar);
  // The BARs added, in index order (what PciDevice::bars() returns).
  std::vector<BarRequest> bars() const;

  // Appends a capability (PCI 3.0 §6.7) with ID `id` whose bytes after the ID and Next Pointer
  // are `body`; `writable_mask` (same length as body) has a 1 for every bit the guest may
  // write. The capability starts at the next dword-aligned offset from 0x40, is chained to the
  // previous one, and sets the status register's Capabilities List bit. Returns its config
  // offset (of the ID byte). Errors: EINVAL if the mask length differs; ENOSPC if it does not
  // fit below 256.
  Result<uint16_t> AddCapability(uint8_t id, std::span<const uint8_t> body,
                                 std::span<const uint8_t> writable_mask);

  // A guest access at `offset`; any size and alignment (bytes outside the space read zero).
  void Read(uint16_t offset, std::span<uint8_t> data) const;
  // Applies a guest write through the writable masks. Returns the config offset of the
  // capability whose bytes the write touched (at most one for an aligned dword access), so the
  // owning device can act on it (e.g. MSI-X Message Control); nullopt otherwise.
  std::optional<uint16_t> Write(uint16_t offset, std::span<const uint8_t> data);

  // Little-endian register reads for the owning device (same rules as Read).
  uint8_t Read8(uint16_t offset) const;
  uint16_t Read16(uint16_t offset) const;
  uint32_t Read32(uint16_t offset) const;

  uint16_t command() const { return Read16(kCommandOffset); }
  // The address BAR `index` holds now (both registers of a 64-bit BAR, flag bits cleared); 0
  // for an index with no BAR.
  uint64_t BarAddress(uint8_t index) const;

  // The 256 bytes of conventional space, for a snapshot.
  std::vector<uint8_t> SaveState() const;
  // Takes back what SaveState() returned, through the same per-bit writable masks as a guest
  // write (read-only registers keep this function's values). EINVAL unless `bytes` is 256
  // bytes long.
  Status RestoreState(std::span<const uint8_t> bytes);

 private:
  uint32_t ReadLe(uint16_t offset, size_t size) const;  // size 1..4

  mutable std::mutex mutex_;
  std::array<uint8_t, kConfigSpaceSize> bytes_{};
  std::array<uint8_t, kConfigSpaceSize> writable_{};  // per-bit guest write mask
  std::vector<BarRequest> bars_;                      // sorted by index
  struct Capability {
    uint16_t offset;
    uint16_t length;  // including ID and Next Pointer
  };
  std::vector<Capability> capabilities_;
};

}  // namespace tern::pci
