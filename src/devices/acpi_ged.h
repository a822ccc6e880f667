// The event register of an ACPI Generic Event Device (GED): how the VMM asks a guest on Tern's
// hardware-reduced ACPI platform to shut down gracefully, by "pressing" an ACPI power button.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "base/result.h"
#include "devices/bus.h"
#include "devices/interrupt.h"

namespace tern {

// The register block behind the DSDT's \_SB.GED0 (_HID "ACPI0013", ACPI 6.4 §5.6.9,
// "Interrupt-signaled ACPI events"), inserted on the MMIO bus at x86_64::kAcpiGedAddress.
//
// One 32-bit event status register at offset 0 (kEventOffset), little-endian:
//   bit 0 (kPowerButtonEvent): the power button was pressed; bits 31:1 reserved, read 0.
// The register is read-to-clear: a read returns the pending events and clears the bits it
// returned, atomically, so an event latched after the read stays pending for the next one.
// Writes are ignored. The guest's \_SB.GED0._EVT method, run by Linux (drivers/acpi/evged.c)
// on each GED interrupt, reads the register with one 32-bit access and, when bit 0 is set,
// does Notify (\_SB.PWRB, 0x80); the power button driver reports KEY_POWER and systemd-logind
// powers the system off (through the sleep control register, see AcpiSleep).
//
// A guest access of n bytes at offset o returns the register bytes o .. o + n - 1 that lie in
// [0, kRegisterSize) and clears only the event bits of those bytes; bytes at other offsets read 0.
// So a narrower read of byte 0 consumes the power button event like a 32-bit read does. No
// access, of any size or offset, can fail.
//
// Thread safety: all methods may be called concurrently from any threads (an API thread calling
// PressPowerButton() while vCPUs read the register).
class AcpiGed : public BusDevice {
 public:
  // Size of the register block, in bytes. The bus range may be larger (the reserved page,
  // x86_64::kAcpiGedSize): the rest reads 0.
  static constexpr uint64_t kRegisterSize = 4;
  // Offset of the event status register.
  static constexpr uint64_t kEventOffset = 0;
  // Event status bits.
  static constexpr uint32_t kPowerButtonEvent = 1u << 0;

  // `interrupt`: the GED's interrupt line (in a VM, an irqfd on x86_64::kAcpiGedGsi); may be
  // null (events are latched but no interrupt is delivered).
  explicit AcpiGed(std::unique_ptr<Interrupt> interrupt);

  AcpiGed(const AcpiGed&) = delete;
  AcpiGed& operator=(const AcpiGed&) = delete;

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Presses the power button: latches kPowerButtonEvent, then triggers the interrupt once.
  // Presses before the guest reads the register coalesce into one event. A guest that has not
  // loaded its ACPI button driver (or ignores the key) does nothing: the caller should fall back
  // to a hard stop after a timeout. Errors: those of Interrupt::Trigger() (the event stays
  // latched and is reported with the next interrupt).
  Status PressPowerButton();

  // The events latched and not yet read by the guest (kPowerButtonEvent, ...); for tests and
  // diagnostics.
  uint32_t PendingEvents() const;

 private:
  const std::unique_ptr<Interrupt> interrupt_;
  std::atomic<uint32_t> pending_{0};
};

}  // namespace tern
