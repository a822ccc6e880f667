// The port-I/O and MMIO buses: devices claim non-overlapping address ranges and are called with
// the offset of an access inside their range. vCPU exits dispatch through Bus::Read/Write.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
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

// An address space of devices. Insert() happens while the VM is being built; afterwards the
// bus is only read, so Read()/Write() are safe from any number of threads.
class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Places `device` at [base, base + size). EEXIST error if it overlaps a range already taken,
  // EINVAL if size is 0 or the range wraps.
  Status Insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t size);

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
  const Range* Find(uint64_t address, uint64_t size) const;

  std::string name_;
  std::vector<Range> ranges_;  // sorted by base
};

}  // namespace tern
