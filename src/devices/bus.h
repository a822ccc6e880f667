// The port-I/O and MMIO buses: devices claim non-overlapping address ranges and are called with
// the offset of an access inside their range. vCPU exits dispatch through Bus::Read/Write.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace tern {

// A device on a bus. `offset` is relative to the base of the range the device was inserted at;
// `data` is the access (1, 2, 4 or 8 bytes for port I/O and MMIO from a vCPU). Read() must fill
// all of `data`. Called from vCPU threads concurrently: implementations synchronize themselves.
class BusDevice {
 public:
  virtual ~BusDevice() = default;
  virtual void Read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

// An address space of devices. Thread-safe: Read()/Write() from any number of vCPU threads take a
// shared lock only to find the device, then call it unlocked, so a device may Insert()/Remove()
// ranges (a PCI BAR moving) from inside an access. A device removed while an access to it is in
// flight still sees that access.
class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Places `device` at [base, base + size). EEXIST error if it overlaps a range already taken,
  // EINVAL if size is 0 or the range wraps.
  Status Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size);
  // Removes the range that starts at `base`. ENOENT error if no range starts there.
  Status Remove(uint64_t base);

  // Dispatches an access to the device whose range holds all of [address, address + size).
  // Returns false when no device does (a read then yields all-ones bytes, like an open bus).
  bool Read(uint64_t address, std::span<uint8_t> data) const;
  bool Write(uint64_t address, std::span<const uint8_t> data) const;

 private:
  struct Range {
    uint64_t base;
    uint64_t size;
    std::shared_ptr<BusDevice> device;
  };
  // The device whose range holds [address, address + size) and the offset of address in it, or
  // a null device.
  std::pair<std::shared_ptr<BusDevice>, uint64_t> Find(uint64_t address, uint64_t size) const;

  const std::string name_;
  mutable std::shared_mutex mutex_;
  std::vector<Range> ranges_;  // sorted by base; guarded by mutex_
};

}  // namespace tern
