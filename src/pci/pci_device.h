// The interface between a PCI function and the PCI root (bus 0) that hosts it: configuration
// space accesses, the BARs the function wants, accesses to those BARs, and notice of BAR moves.
// A device usually implements the configuration space with pci::ConfigSpace (config_space.h)
// and MSI-X with pci::Msix (msix.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"

namespace tern::pci {

// A memory BAR a function implements (PCI Local Bus 3.0 §6.2.5.1). Tern's functions have no
// I/O BARs.
struct BarRequest {
  uint8_t index = 0;      // 0..5; a 64-bit BAR uses registers index and index + 1 (index <= 4)
  uint64_t size = 0;      // bytes: a power of two, at least 4 KiB; at most 2 GiB unless 64-bit
  bool is_64bit = false;  // memory type 10b: may be placed anywhere in 64-bit address space
  bool prefetchable = false;
};

// One PCI function (Tern's PCI devices are single-function). Called by PciRoot, from vCPU
// threads: every method but the BAR accesses under PciRoot's configuration lock (one at a time
// per root); ReadBar/WriteBar concurrently from any vCPU thread, so implementations
// synchronize their BAR state themselves. Guest-controlled values are validated by the device.
class PciDevice {
 public:
  virtual ~PciDevice() = default;

  // A configuration space access (PCI 3.0 §6.1; PCIe extended space up to 4 KiB). PciRoot only
  // passes naturally aligned accesses of 1, 2 or 4 bytes with offset + size <= 4096, so an
  // access never crosses a dword. Reads fill all of `data`.
  virtual void ReadConfig(uint16_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint16_t offset, std::span<const uint8_t> data) = 0;

  // The function's memory BARs, fixed for its lifetime (the registers must already decode
  // them: size mask, type and prefetchable bits, as ConfigSpace::AddBar sets up).
  virtual std::vector<BarRequest> bars() const = 0;

  // An access to BAR `index` at byte `offset` inside it (offset + data.size() <= BAR size);
  // 1, 2, 4 or 8 bytes as the vCPU issued it. Reads fill all of `data`.
  virtual void ReadBar(uint8_t index, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteBar(uint8_t index, uint64_t offset, std::span<const uint8_t> data) = 0;

  // BAR `index` now lives at guest-physical `new_gpa` instead of `old_gpa` (0 on the first
  // call, which PciRoot::AddDevice makes after assigning the address). The device moves what it
  // registered by address, such as ioeventfds. Called under PciRoot's configuration lock. An
  // error fails AddDevice on the first call; on a guest move it is logged and the BAR moves.
  virtual Status BarMoved(uint8_t index, uint64_t old_gpa, uint64_t new_gpa) = 0;
};

}  // namespace tern::pci
