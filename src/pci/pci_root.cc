// Bus 0 of PCI segment 0: the host bridge, device slots, configuration access (mechanism #1 and
// ECAM) and BAR placement on the MMIO bus.
#include "pci/pci_root.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace tern::pci {
namespace {

constexpr uint32_t kConfigAddressEnable = 1u << 31;
constexpr uint32_t kConfigAddressMask = kConfigAddressEnable | 0x00fffffc;  // bits 30:24, 1:0 zero
constexpr uint16_t kBarRegistersEnd = kBar0Offset + 4 * kNumBars;

// Device 0: the host bridge, a plain type-0 function with no BARs and no capabilities.
class HostBridge : public PciDevice {
 public:
  HostBridge()
      : config_(PciIdentity{.vendor_id = kHostBridgeVendorId,
                            .device_id = kHostBridgeDeviceId,
                            .class_code = kHostBridgeClassCode}) {}
  void ReadConfig(uint16_t offset, std::span<uint8_t> data) override { config_.Read(offset, data); }
  void WriteConfig(uint16_t offset, std::span<const uint8_t> data) override {
    config_.Write(offset, data);
  }
  std::vector<BarRequest> bars() const override { return {}; }
  void ReadBar(uint8_t, uint64_t, std::span<uint8_t> data) override {
    std::memset(data.data(), 0xff, data.size());
  }
  void WriteBar(uint8_t, uint64_t, std::span<const uint8_t>) override {}
  Status BarMoved(uint8_t, uint64_t, uint64_t) override { return Ok(); }

 private:
  ConfigSpace config_;
};

// One BAR of a device on the MMIO bus.
class BarRegion : public BusDevice {
 public:
  BarRegion(std::shared_ptr<PciDevice> device, uint8_t index)
      : device_(std::move(device)), index_(index) {}
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    device_->ReadBar(index_, offset, data);
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    device_->WriteBar(index_, offset, data);
  }

 private:
  const std::shared_ptr<PciDevice> device_;
  const uint8_t index_;
};

// Whether a configuration access can reach a function: 1, 2 or 4 bytes, naturally aligned,
// inside the 4 KiB space.
bool ValidConfigAccess(uint16_t offset, size_t size) {
  return (size == 1 || size == 2 || size == 4) && offset % size == 0 &&
         offset + size <= kExtendedConfigSpaceSize;
}

bool Overlaps(uint16_t offset, size_t size, uint16_t begin, uint16_t end) {
  return offset < end && begin < offset + size;
}

uint32_t ReadConfig32(PciDevice& device, uint16_t offset) {
  uint8_t bytes[4];
  device.ReadConfig(offset, bytes);
  return static_cast<uint32_t>(LoadLe(bytes));
}

void WriteConfig32(PciDevice& device, uint16_t offset, uint32_t value) {
  uint8_t bytes[4];
  StoreLe(bytes, value);
  device.WriteConfig(offset, bytes);
}

}  // namespace

PciRoot::PciRoot(Bus& mmio_bus, AddressWindow mmio32, AddressWindow mmio64)
    : mmio_bus_(mmio_bus),
      mmio32_(mmio32),
      mmio64_(mmio64),
      next32_(mmio32.base),
      next64_(mmio64.base) {
  slots_[0].device = std::make_shared<HostBridge>();
}

Result<uint64_t> PciRoot::Allocate(const BarRequest& bar) {
  auto take = [&](const AddressWindow& window, uint64_t& next) -> std::optional<uint64_t> {
    const uint64_t start = (next + bar.size - 1) & ~(bar.size - 1);
    const uint64_t end = window.base + window.size;
    if (start < next || start > end || bar.size > end - start) return std::nullopt;
    next = start + bar.size;
    return start;
  };
  std::optional<uint64_t> address;
  if (bar.is_64bit) address = take(mmio64_, next64_);
  if (!address) address = take(mmio32_, next32_);
  if (!address) {
    return Error("PCI: no room for a BAR of " + std::to_string(bar.size) + " bytes", ENOSPC);
  }
  return *address;
}

Result<uint8_t> PciRoot::AddDevice(std::shared_ptr<PciDevice> device) {
  std::lock_guard lock(mutex_);
  auto free = std::find_if(slots_.begin() + 1, slots_.end(),
                           [](const Slot& slot) { return slot.device == nullptr; });
  if (free == slots_.end()) return Error("PCI: bus 0 has no free device slot", ENOSPC);
  Slot slot;
  slot.device = std::move(device);
  slot.bars = slot.device->bars();
  for (const BarRequest& bar : slot.bars) {
    TERN_RETURN_IF_ERROR(ValidateBar(bar));
    TERN_ASSIGN_OR_RETURN(uint64_t address, Allocate(bar));
    WriteConfig32(*slot.device, BarOffset(bar.index), static_cast<uint32_t>(address));
    if (bar.is_64bit) {
      WriteConfig32(*slot.device, BarOffset(bar.index + 1), static_cast<uint32_t>(address >> 32));
    }
    slot.addresses.push_back(address);
    slot.registered.push_back(std::nullopt);
  }
  for (size_t i = 0; i < slot.bars.size(); ++i) {
    TERN_RETURN_IF_ERROR(slot.device->BarMoved(slot.bars[i].index, 0, slot.addresses[i]));
  }
  *free = std::move(slot);
  UpdateBars(*free);
  return static_cast<uint8_t>(free - slots_.begin());
}

PciDevice* PciRoot::Function(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                             size_t size) {
  if (bus != 0 || device >= kNumDevices || function != 0 || !ValidConfigAccess(offset, size)) {
    return nullptr;
  }
  return slots_[device].device.get();
}

void PciRoot::ReadConfig(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                         std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  PciDevice* target = Function(bus, device, function, offset, data.size());
  if (target == nullptr) {
    std::memset(data.data(), 0xff, data.size());
    return;
  }
  target->ReadConfig(offset, data);
}

void PciRoot::WriteConfig(uint8_t bus, uint8_t device, uint8_t function, uint16_t offset,
                          std::span<const uint8_t> data) {
  std::lock_guard lock(mutex_);
  PciDevice* target = Function(bus, device, function, offset, data.size());
  if (target == nullptr) return;
  target->WriteConfig(offset, data);
  const bool command = Overlaps(offset, data.size(), kCommandOffset, kCommandOffset + 2);
  const bool bars = Overlaps(offset, data.size(), kBar0Offset, kBarRegistersEnd);
  // All-ones into a BAR register is the guest sizing it: the address it reads back is a mask.
  const bool sizing =
      bars && std::all_of(data.begin(), data.end(), [](uint8_t byte) { return byte == 0xff; });
  if ((command || bars) && !sizing) UpdateBars(slots_[device]);
}

void PciRoot::UpdateAllBars() {
  std::lock_guard lock(mutex_);
  for (Slot& slot : slots_) {
    if (slot.device) UpdateBars(slot);
  }
}

bool PciRoot::InWindow(uint64_t address, uint64_t size) const {
  auto inside = [&](const AddressWindow& window) {
    return address >= window.base && size <= window.size &&
           address - window.base <= window.size - size;
  };
  return inside(mmio32_) || inside(mmio64_);
}

uint64_t PciRoot::ReadBarAddress(PciDevice& device, const BarRequest& bar) const {
  uint64_t address = ReadConfig32(device, BarOffset(bar.index)) & kBarMemoryAddressMask;
  if (bar.is_64bit) address |= uint64_t{ReadConfig32(device, BarOffset(bar.index + 1))} << 32;
  return address;
}

void PciRoot::UpdateBars(Slot& slot) {
  uint8_t command[2];
  slot.device->ReadConfig(kCommandOffset, command);
  const bool memory_enabled = LoadLe(command) & kCommandMemorySpace;
  for (size_t i = 0; i < slot.bars.size(); ++i) {
    const BarRequest& bar = slot.bars[i];
    const uint64_t address = ReadBarAddress(*slot.device, bar);
    const bool decodes = memory_enabled && InWindow(address, bar.size);
    if (decodes && address != slot.addresses[i]) {
      Status moved = slot.device->BarMoved(bar.index, slot.addresses[i], address);
      if (!moved.ok()) {
        spdlog::warn("PCI BAR {} moving to {:#x}: {}", bar.index, address,
                     moved.error().ToString());
      }
      slot.addresses[i] = address;
    }
    const std::optional<uint64_t> wanted = decodes ? std::optional(address) : std::nullopt;
    if (slot.registered[i] == wanted) continue;
    if (slot.registered[i]) (void)mmio_bus_.Remove(*slot.registered[i]);
    slot.registered[i] = std::nullopt;
    if (!wanted) continue;
    Status inserted =
        mmio_bus_.Insert(std::make_shared<BarRegion>(slot.device, bar.index), address, bar.size);
    if (inserted.ok()) {
      slot.registered[i] = address;
    } else {
      spdlog::debug("PCI BAR {} at {:#x} not mapped: {}", bar.index, address,
                    inserted.error().ToString());
    }
  }
}

void PciConfigIo::Read(uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0xff, data.size());
  const uint32_t address = config_address_.load();
  if (offset == 0 && data.size() == 4) {
    StoreLe(data, address);
  } else if (offset >= 4 && offset + data.size() <= kConfigIoSize &&
             (address & kConfigAddressEnable)) {
    root_->ReadConfig(static_cast<uint8_t>(address >> 16), (address >> 11) & 0x1f,
                      (address >> 8) & 0x7, static_cast<uint16_t>((address & 0xfc) + offset - 4),
                      data);
  }
}

void PciConfigIo::Write(uint64_t offset, std::span<const uint8_t> data) {
  const uint32_t address = config_address_.load();
  if (offset == 0 && data.size() == 4) {
    config_address_.store(static_cast<uint32_t>(LoadLe(data)) & kConfigAddressMask);
  } else if (offset >= 4 && offset + data.size() <= kConfigIoSize &&
             (address & kConfigAddressEnable)) {
    root_->WriteConfig(static_cast<uint8_t>(address >> 16), (address >> 11) & 0x1f,
                       (address >> 8) & 0x7, static_cast<uint16_t>((address & 0xfc) + offset - 4),
                       data);
  }
}

// ECAM offset fields, PCIe 4.0 §7.2.2 Table 7-1.
void PciConfigMmio::Read(uint64_t offset, std::span<uint8_t> data) {
  if (offset >= kEcamBusSize * 256) {
    std::memset(data.data(), 0xff, data.size());
    return;
  }
  root_->ReadConfig(static_cast<uint8_t>(offset >> 20), (offset >> 15) & 0x1f, (offset >> 12) & 0x7,
                    offset & 0xfff, data);
}

void PciConfigMmio::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kEcamBusSize * 256) return;
  root_->WriteConfig(static_cast<uint8_t>(offset >> 20), (offset >> 15) & 0x1f,
                     (offset >> 12) & 0x7, offset & 0xfff, data);
}

}  // namespace tern::pci
