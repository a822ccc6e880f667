// The ACPI Generic Event Device's read-to-clear event register and its power button event.
#include "devices/acpi_ged.h"

#include <algorithm>
#include <utility>

namespace tern {

AcpiGed::AcpiGed(std::unique_ptr<Interrupt> interrupt) : interrupt_(std::move(interrupt)) {}

void AcpiGed::Read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= kRegisterSize) return;
  // Bytes [offset, offset + covered) of the register; offset < 4, so nothing overflows.
  const uint64_t covered = std::min<uint64_t>(data.size(), kRegisterSize - offset);
  uint32_t mask = 0;
  for (uint64_t i = 0; i < covered; ++i) mask |= uint32_t{0xff} << (8 * (offset + i));
  const uint32_t events = pending_.fetch_and(~mask, std::memory_order_acq_rel) & mask;
  for (uint64_t i = 0; i < covered; ++i)
    data[i] = static_cast<uint8_t>(events >> (8 * (offset + i)));
}

void AcpiGed::Write(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {
  // The register is read-only (read-to-clear); writes are ignored.
}

Status AcpiGed::PressPowerButton() {
  // Latch first, so that the guest's _EVT, run because of this interrupt, sees the event.
  pending_.fetch_or(kPowerButtonEvent, std::memory_order_acq_rel);
  if (!interrupt_) return Ok();
  Status status = interrupt_->Trigger();
  if (!status.ok()) return status.error().WithContext("ACPI GED power button interrupt");
  return Ok();
}

uint32_t AcpiGed::PendingEvents() const { return pending_.load(std::memory_order_acquire); }

}  // namespace tern
