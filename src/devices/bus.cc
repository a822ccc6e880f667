// Address-range dispatch for the port-I/O and MMIO buses.
#include "devices/bus.h"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace tern {

Status Bus::Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size) {
  if (size == 0 || base + size < base) {
    return Error(name_ + ": empty or wrapping device range", EINVAL);
  }
  std::unique_lock lock(mutex_);
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), base,
                             [](const Range& r, uint64_t b) { return r.base < b; });
  bool overlaps_next = it != ranges_.end() && it->base < base + size;
  bool overlaps_prev = it != ranges_.begin() && std::prev(it)->base + std::prev(it)->size > base;
  if (overlaps_next || overlaps_prev) {
    return Error(name_ + ": device range overlaps another device", EEXIST);
  }
  ranges_.insert(it, Range{base, size, std::move(device)});
  return Ok();
}

Status Bus::Remove(uint64_t base) {
  std::unique_lock lock(mutex_);
  auto it = std::lower_bound(ranges_.begin(), ranges_.end(), base,
                             [](const Range& r, uint64_t b) { return r.base < b; });
  if (it == ranges_.end() || it->base != base) {
    return Error(name_ + ": no device range starts at the given base", ENOENT);
  }
  ranges_.erase(it);
  return Ok();
}

std::pair<std::shared_ptr<BusDevice>, uint64_t> Bus::Find(uint64_t address, uint64_t size) const {
  std::shared_lock lock(mutex_);
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), address,
                             [](uint64_t a, const Range& r) { return a < r.base; });
  if (it == ranges_.begin()) return {nullptr, 0};
  const Range& range = *std::prev(it);
  uint64_t offset = address - range.base;
  if (offset >= range.size || size > range.size - offset) return {nullptr, 0};
  return {range.device, offset};
}

bool Bus::Read(uint64_t address, std::span<uint8_t> data) const {
  auto [device, offset] = Find(address, data.size());
  if (device == nullptr) {
    std::memset(data.data(), 0xff, data.size());
    return false;
  }
  device->Read(offset, data);
  return true;
}

bool Bus::Write(uint64_t address, std::span<const uint8_t> data) const {
  auto [device, offset] = Find(address, data.size());
  if (device == nullptr) return false;
  device->Write(offset, data);
  return true;
}

}  // namespace tern
