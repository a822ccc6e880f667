// The ACPI hardware-reduced sleep registers: how a guest's ACPI power-off (S5) request reaches
// the VMM.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/bus.h"

namespace tern {

// SLEEP_CONTROL_REG and SLEEP_STATUS_REG of an ACPI hardware-reduced platform (ACPI 6.4
// §4.8.3.7), one byte each, inserted on the port-I/O bus over kRangeSize bytes at
// x86_64::kAcpiSleepControlPort: offset 0 is the control register, offset 1 the status
// register (the FADT names both).
//
// Control register: bits 4:2 SLP_TYPx, bit 5 SLP_EN (write-only), other bits reserved. Writing a
// value with SLP_EN set and SLP_TYPx == x86_64::kS5SleepType (the \_S5 package of the DSDT)
// requests soft-off and calls the power-off callback; other writes (other sleep states, SLP_EN
// clear) are ignored. Reads return 0.
// Status register: reads 0 (WAK_STS, bit 7, clear: the machine never sleeps); writes (write 1
// to clear) are ignored.
//
// A guest access of n bytes at offset o acts as n one-byte accesses at o, o + 1, ...; bytes
// past the range read 0 and ignore writes. No access can fail.
//
// Thread safety: the device holds no mutable state; Read()/Write() may run concurrently.
class AcpiSleep : public BusDevice {
 public:
  // Size of the register block, in bytes.
  static constexpr uint64_t kRangeSize = 2;
  static constexpr uint64_t kControlOffset = 0;
  static constexpr uint64_t kStatusOffset = 1;

  // `power_off`: called for each S5 request, on the vCPU thread doing the access; it must be
  // safe to call from several threads at once. May be empty (requests are ignored).
  explicit AcpiSleep(std::function<void()> power_off);

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const std::function<void()> power_off_;
};

}  // namespace tern
