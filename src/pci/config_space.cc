// A type-0 PCI configuration space with per-bit write masks (PCI Local Bus 3.0 §6.1, §6.2, §6.7).
#include "pci/config_space.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <string>

namespace tern::pci {
namespace {

constexpr uint16_t kCommandWritable =
    kCommandMemorySpace | kCommandBusMaster | kCommandInterruptDisable;
constexpr uint64_t kMinBarSize = 4096;
constexpr uint64_t kMax32BitBarSize = uint64_t{1} << 31;

template <size_t N>
void Store(std::array<uint8_t, N>& bytes, uint16_t offset, uint64_t value, size_t size) {
  StoreLe(std::span(bytes).subspan(offset, size), value);
}

}  // namespace

uint64_t LoadLe(std::span<const uint8_t> data) {
  uint64_t value = 0;
  for (size_t i = 0; i < data.size(); ++i) value |= uint64_t{data[i]} << (8 * i);
  return value;
}

void StoreLe(std::span<uint8_t> data, uint64_t value) {
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(value >> (8 * i));
}

Status ValidateBar(const BarRequest& bar) {
  const std::string name = "BAR " + std::to_string(bar.index);
  if (bar.index >= kNumBars || (bar.is_64bit && bar.index + 1 >= kNumBars)) {
    return Error(name + ": no such BAR register", EINVAL);
  }
  if (bar.size < kMinBarSize || !std::has_single_bit(bar.size) ||
      (!bar.is_64bit && bar.size > kMax32BitBarSize)) {
    return Error(name + ": size " + std::to_string(bar.size) + " is not a valid BAR size", EINVAL);
  }
  return Ok();
}

ConfigSpace::ConfigSpace(const PciIdentity& identity) {
  Store(bytes_, kVendorIdOffset, identity.vendor_id, 2);
  Store(bytes_, kDeviceIdOffset, identity.device_id, 2);
  Store(bytes_, kRevisionIdOffset, identity.revision_id, 1);
  Store(bytes_, kClassCodeOffset, identity.class_code, 3);
  Store(bytes_, kSubsystemVendorIdOffset, identity.subsystem_vendor_id, 2);
  Store(bytes_, kSubsystemIdOffset, identity.subsystem_id, 2);
  Store(writable_, kCommandOffset, kCommandWritable, 2);
  Store(writable_, kCacheLineSizeOffset, 0xff, 1);
  Store(writable_, kInterruptLineOffset, 0xff, 1);
}

Status ConfigSpace::AddBar(const BarRequest& bar) {
  TERN_RETURN_IF_ERROR(ValidateBar(bar));
  std::lock_guard lock(mutex_);
  for (const BarRequest& other : bars_) {
    const int other_end = other.index + (other.is_64bit ? 2 : 1);
    const int end = bar.index + (bar.is_64bit ? 2 : 1);
    if (bar.index < other_end && other.index < end) {
      return Error("BAR " + std::to_string(bar.index) + ": registers already used", EINVAL);
    }
  }
  const uint64_t address_mask = ~(bar.size - 1);
  const uint32_t flags =
      (bar.is_64bit ? kBarMemoryType64 : 0) | (bar.prefetchable ? kBarPrefetchable : 0);
  Store(bytes_, BarOffset(bar.index), flags, 4);
  Store(writable_, BarOffset(bar.index), address_mask & kBarMemoryAddressMask, 4);
  if (bar.is_64bit) Store(writable_, BarOffset(bar.index + 1), address_mask >> 32, 4);
  bars_.insert(
      std::upper_bound(bars_.begin(), bars_.end(), bar,
                       [](const BarRequest& a, const BarRequest& b) { return a.index < b.index; }),
      bar);
  return Ok();
}

std::vector<BarRequest> ConfigSpace::bars() const {
  std::lock_guard lock(mutex_);
  return bars_;
}

Result<uint16_t> ConfigSpace::AddCapability(uint8_t id, std::span<const uint8_t> body,
                                            std::span<const uint8_t> writable_mask) {
  if (writable_mask.size() != body.size()) {
    return Error("capability write mask and body differ in length", EINVAL);
  }
  std::lock_guard lock(mutex_);
  size_t offset = kFirstCapabilityOffset;
  if (!capabilities_.empty()) {
    const Capability& last = capabilities_.back();
    offset = (last.offset + last.length + 3u) & ~size_t{3};
  }
  const size_t length = 2 + body.size();
  if (offset + length > kConfigSpaceSize) {
    return Error("capability of " + std::to_string(length) + " bytes does not fit", ENOSPC);
  }
  const auto cap = static_cast<uint16_t>(offset);
  bytes_[cap] = id;
  bytes_[cap + 1] = 0;  // Next Pointer: end of list
  std::copy(body.begin(), body.end(), bytes_.begin() + cap + 2);
  std::copy(writable_mask.begin(), writable_mask.end(), writable_.begin() + cap + 2);
  if (capabilities_.empty()) {
    bytes_[kCapabilitiesPointerOffset] = static_cast<uint8_t>(cap);
    bytes_[kStatusOffset] |= kStatusCapabilitiesList;
  } else {
    bytes_[capabilities_.back().offset + 1] = static_cast<uint8_t>(cap);
  }
  capabilities_.push_back({cap, static_cast<uint16_t>(length)});
  return cap;
}

void ConfigSpace::Read(uint16_t offset, std::span<uint8_t> data) const {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = size_t{offset} + i;
    data[i] = at < kConfigSpaceSize ? bytes_[at] : 0;
  }
}

std::optional<uint16_t> ConfigSpace::Write(uint16_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  std::optional<uint16_t> touched;
  for (size_t i = 0; i < data.size(); ++i) {
    const size_t at = size_t{offset} + i;
    if (at >= kConfigSpaceSize) break;
    bytes_[at] = static_cast<uint8_t>((bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]));
    for (const Capability& cap : capabilities_) {
      if (!touched && at >= cap.offset && at < size_t{cap.offset} + cap.length) {
        touched = cap.offset;
      }
    }
  }
  return touched;
}

uint32_t ConfigSpace::ReadLe(uint16_t offset, size_t size) const {
  uint8_t bytes[4] = {};
  Read(offset, std::span(bytes, size));
  return static_cast<uint32_t>(LoadLe(std::span(bytes, size)));
}

uint8_t ConfigSpace::Read8(uint16_t offset) const {
  return static_cast<uint8_t>(ReadLe(offset, 1));
}
uint16_t ConfigSpace::Read16(uint16_t offset) const {
  return static_cast<uint16_t>(ReadLe(offset, 2));
}
uint32_t ConfigSpace::Read32(uint16_t offset) const { return ReadLe(offset, 4); }

uint64_t ConfigSpace::BarAddress(uint8_t index) const {
  for (const BarRequest& bar : bars()) {
    if (bar.index != index) continue;
    uint64_t address = Read32(BarOffset(index)) & kBarMemoryAddressMask;
    if (bar.is_64bit) address |= uint64_t{Read32(BarOffset(index + 1))} << 32;
    return address;
  }
  return 0;
}

std::vector<uint8_t> ConfigSpace::SaveState() const {
  std::lock_guard lock(mutex_);
  return std::vector<uint8_t>(bytes_.begin(), bytes_.end());
}

Status ConfigSpace::RestoreState(std::span<const uint8_t> bytes) {
  if (bytes.size() != kConfigSpaceSize) {
    return Error("PCI configuration space state must be " + std::to_string(kConfigSpaceSize) +
                     " bytes, not " + std::to_string(bytes.size()),
                 EINVAL);
  }
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < kConfigSpaceSize; ++i) {
    bytes_[i] = static_cast<uint8_t>((bytes_[i] & ~writable_[i]) | (bytes[i] & writable_[i]));
  }
  return Ok();
}

}  // namespace tern::pci
