// The SMBIOS tables of an x86-64 guest (DMTF DSP0134 3.x): a 64-bit entry point at kSmbiosStart
// and the structure table after it, with BIOS Information (type 0), System Information (type 1)
// and End-of-Table (type 127). Linux finds them by scanning 0xf0000-0xfffff for "_SM3_" and shows
// them in /sys/class/dmi/id (sys_vendor, product_name, product_serial, product_uuid, ...), where
// cloud-init's ds-identify looks to tell which cloud it runs on.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/guest_memory.h"
#include "base/result.h"

namespace tern::x86_64 {

// Type 1 System Information (DSP0134 §7.2). Strings are printable ASCII, at most
// kSmbiosMaxStringLength bytes; an empty one is recorded as absent (string number 0).
struct SmbiosSystemInfo {
  std::string manufacturer = "Tern";  // /sys/class/dmi/id/sys_vendor
  std::string product_name = "tern-vmm";
  std::string version;
  std::string serial_number;
  // RFC 4122 text order (as the guest prints it); all zero: "not present" (§7.2.1).
  std::array<uint8_t, 16> uuid{};
  std::string sku_number;
  std::string family;
};

inline constexpr size_t kSmbiosMaxStringLength = 64;  // bytes (Tern's limit, not the spec's)

// Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (hex digits, either case) into RFC 4122 order.
// EINVAL for anything else.
Result<std::array<uint8_t, 16>> ParseSmbiosUuid(std::string_view text);

// Checks that every string of `info` is printable ASCII of at most kSmbiosMaxStringLength bytes;
// EINVAL naming the field otherwise.
Status ValidateSmbiosSystemInfo(const SmbiosSystemInfo& info);

// Writes the SMBIOS 3.0 entry point (§5.2.2: "_SM3_", checksum, table address and maximum size)
// at kSmbiosStart and the structure table right after it: type 0 (vendor "Tern", no BIOS
// characteristics supported, a virtual machine per §7.1.2.2), type 1 from `info` (the UUID in
// SMBIOS 2.6+ byte order: the first three fields little-endian, §7.2.1; wake-up type "power
// switch") and type 127. Handles are 0, 1 and 2.
//
// Errors: what ValidateSmbiosSystemInfo returns; ENOSPC if the tables would not end at or below
// kFirmwareEnd; EFAULT if guest memory does not cover them. Nothing outside [kSmbiosStart,
// kFirmwareEnd) is written. Thread safety: writes guest memory unsynchronized; call before any
// vCPU runs.
Status SetupSmbios(const GuestMemory& memory, const SmbiosSystemInfo& info);

}  // namespace tern::x86_64
