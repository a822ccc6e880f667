// PCI segment 0, bus 0: the host bridge at device 0, up to 31 more single-function devices, the
// two configuration access mechanisms that reach them (port I/O mechanism #1 at 0xcf8, PCI 3.0
// §3.2.2.3.2; ECAM, PCIe 4.0 §7.2.2) and the placement of device BARs on the MMIO bus.
//
// BARs: AddDevice gives each BAR a naturally aligned address (64-bit BARs in the 64-bit window
// when they fit, otherwise and for 32-bit BARs in the 32-bit window), writes it into the
// device's BAR registers and calls BarMoved(index, 0, address). A BAR is on the MMIO bus while
// the device's command register has Memory Space Enable set and its address lies inside a
// window. When the guest rewrites BAR registers, the new address takes effect when Memory Space
// Enable is set (Linux clears it while sizing and reprogramming BARs): the MMIO bus range moves
// and BarMoved(index, old, new) is called. A write of all-ones (sizing) never moves anything.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "devices/bus.h"
#include "pci/config_space.h"
#include "pci/pci_device.h"

namespace tern::pci {

// A guest-physical address range [base, base + size).
struct AddressWindow {
  uint64_t base = 0;
  uint64_t size = 0;
};

inline constexpr uint8_t kNumDevices = 32;                   // device numbers per bus
inline constexpr uint64_t kEcamBusSize = uint64_t{1} << 20;  // ECAM bytes per bus

// Host bridge identity: the "virtual PCIe host" ID Cloud Hypervisor uses (not a real Intel part,
// so Linux applies no chipset quirk), class 0x060000 (bridge, host bridge).
inline constexpr uint16_t kHostBridgeVendorId = 0x8086;
inline constexpr uint16_t kHostBridgeDeviceId = 0x0d57;
inline constexpr uint32_t kHostBridgeClassCode = 0x060000;

// Thread-safe: configuration accesses (from vCPU threads through PciConfigIo/PciConfigMmio)
// and AddDevice are serialized by one lock, under which devices' config methods and BarMoved
// run and the MMIO bus is updated. Create it with std::make_shared: PciConfigIo and PciConfigMmio
// share ownership of it.
class PciRoot {
 public:
  // `mmio_bus` (which must outlive the root) receives the BARs; BARs are allocated from the
  // two windows (mmio64 may be empty).
  PciRoot(Bus& mmio_bus, AddressWindow mmio32, AddressWindow mmio64);
  PciRoot(const PciRoot&) = delete;
  PciRoot& operator=(const PciRoot&) = delete;

  // Puts `device` in the lowest free slot (1..31), assigns and registers its BARs as described
  // above, and returns its device number. Errors: ENOSPC when the bus is full or a window has
  // no room for a BAR; EINVAL for an invalid BAR request; the device's BarMoved error. On error
  // the slot stays free (BAR space already handed out is not reused).
  Result<uint8_t> AddDevice(std::shared_ptr<PciDevice> device);

  // A configuration access to bus `bus`, device `device`, function `function`, register
  // `offset` (0..4095). Only naturally aligned 1/2/4-byte accesses that do not cross 4 KiB
  // reach a device; others, and absent buses, devices and functions, read all-ones and ignore
  // writes (PCI 3.0 §6.1: a Vendor ID of 0xffff means no function).
  void ReadConfig(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                  std::span<uint8_t> data);
  void WriteConfig(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                   std::span<const uint8_t> data);

  // After devices' configuration spaces were restored from a snapshot: places every BAR as its
  // registers and its device's command register say (BarMoved, MMIO bus), as a guest
  // configuration write would.
  void UpdateAllBars();

 private:
  struct Slot {
    std::shared_ptr<PciDevice> device;  // null: empty slot
    std::vector<BarRequest> bars;
    std::vector<uint64_t> addresses;  // per entry of `bars`: the address BarMoved last reported
    std::vector<std::optional<uint64_t>> registered;  // per entry of `bars`: MMIO bus base
  };

  Result<uint64_t> Allocate(const BarRequest& bar);
  // The function an access reaches, or null (absent, or an access PciDevice does not take).
  PciDevice* Function(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset, size_t size);
  bool InWindow(uint64_t address, uint64_t size) const;
  uint64_t ReadBarAddress(PciDevice& device, const BarRequest& bar) const;
  // Brings BarMoved and the MMIO bus in line with the slot's BAR registers and command.
  void UpdateBars(Slot& slot);

  Bus& mmio_bus_;
  const AddressWindow mmio32_;
  const AddressWindow mmio64_;
  std::mutex mutex_;
  uint64_t next32_;
  uint64_t next64_;
  std::array<Slot, kNumDevices> slots_;
};

// Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2) for the port-I/O bus at kConfigIoPort,
// kConfigIoSize ports: CONFIG_ADDRESS is the dword at 0xcf8 (bit 31 enable, bus 23:16, device
// 15:11, function 10:8, register 7:2); CONFIG_DATA is 0xcfc..0xcff, accessed as a byte, word or
// dword at 0xcfc + n for register + n. Other accesses to 0xcf8..0xcfb read all-ones and are
// ignored; data accesses with the enable bit clear read all-ones. Thread-safe.
class PciConfigIo : public BusDevice {
 public:
  static constexpr uint16_t kConfigIoPort = 0xcf8;
  static constexpr uint64_t kConfigIoSize = 8;

  explicit PciConfigIo(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {}
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const std::shared_ptr<PciRoot> root_;
  std::atomic<uint32_t> config_address_{0};
};

// ECAM (PCIe 4.0 §7.2.2) for the MMIO bus: offset = bus << 20 | device << 15 | function << 12 |
// register; insert it with size num_buses * kEcamBusSize. Thread-safe.
class PciConfigMmio : public BusDevice {
 public:
  explicit PciConfigMmio(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {}
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  const std::shared_ptr<PciRoot> root_;
};

}  // namespace tern::pci
