// Decoding of writes to the ACPI hardware-reduced sleep control register (ACPI 6.4 §4.8.3.7).
#include "devices/acpi_sleep.h"

#include <algorithm>

#include "arch/x86_64/layout.h"

namespace tern {
namespace {

constexpr uint8_t kSleepTypeShift = 2;
constexpr uint8_t kSleepTypeMask = 0x07;  // after the shift: bits 4:2
constexpr uint8_t kSleepEnable = 0x20;    // SLP_EN, bit 5

bool IsSoftOffRequest(uint8_t value) {
  uint8_t sleep_type = (value >> kSleepTypeShift) & kSleepTypeMask;
  return (value & kSleepEnable) != 0 && sleep_type == x86_64::kS5SleepType;
}

}  // namespace

AcpiSleep::AcpiSleep(std::function<void()> power_off) : power_off_(std::move(power_off)) {}

void AcpiSleep::Read(uint64_t /*offset*/, std::span<uint8_t> data) {
  // Control reads as 0, status reads as 0 (WAK_STS clear), anything else reads 0.
  std::fill(data.begin(), data.end(), 0);
}

void AcpiSleep::Write(uint64_t offset, std::span<const uint8_t> data) {
  // Only the byte landing on the control register matters; status writes are ignored.
  if (offset > kControlOffset || data.empty()) return;
  if (IsSoftOffRequest(data[0]) && power_off_) power_off_();
}

}  // namespace tern
