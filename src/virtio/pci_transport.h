// The virtio-pci modern transport (virtio 1.2 §4.1): a PCI function that exposes a VirtioDevice
// through the common, notify, ISR, device-specific and PCI-configuration-access capabilities,
// runs the device status machine and feature negotiation (§2.1, §3.1), holds the virtqueue
// registers, routes queue notifications to ioeventfds and interrupts to MSI-X vectors.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "pci/config_space.h"
#include "pci/msix.h"
#include "pci/pci_device.h"
#include "virtio/queue.h"
#include "virtio/virtio_device.h"

namespace tern::virtio {

// Layout of BAR 0 (64-bit memory BAR, kBarSize bytes). Each structure is at a 4 KiB-aligned
// offset, as virtio 1.2 §4.1.4.1 recommends.
inline constexpr uint64_t kCommonCfgOffset = 0x0000;
inline constexpr uint64_t kCommonCfgSize = 0x3c;  // struct virtio_pci_common_cfg, §4.1.4.3
inline constexpr uint64_t kIsrOffset = 0x1000;
inline constexpr uint64_t kDeviceCfgOffset = 0x2000;
inline constexpr uint64_t kDeviceCfgSize = 0x1000;
inline constexpr uint64_t kNotifyOffset = 0x3000;
inline constexpr uint32_t kNotifyOffMultiplier = 4;  // bytes between queue notify addresses
inline constexpr uint64_t kMsixTableOffset = 0x4000;
inline constexpr uint64_t kMsixPbaOffset = 0x6000;
inline constexpr uint64_t kBarSize = 0x8000;
inline constexpr uint16_t kMaxQueues = 256;  // notify area / MSI-X table room (vectors = queues+1)

// device_status bits (virtio 1.2 §2.1).
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusDeviceNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

inline constexpr uint16_t kNoVector = 0xffff;  // VIRTIO_MSI_NO_VECTOR

// Registers (or with `deassign`, removes) `event` as a KVM ioeventfd for 2-byte guest writes
// to guest-physical `address` (KVM_IOEVENTFD). Thread-safe.
using IoEventRegistrar =
    std::function<Status(const EventFd& event, uint64_t address, bool deassign)>;

// PCI function 0x1af4:0x1040+type (virtio 1.2 §4.1.2), revision 1, MSI-X with one vector per
// queue plus one for configuration changes, no INTx. The device's queues are processed on
// `loop`'s thread; register accesses arrive on vCPU threads.
//
// DEVICE_NEEDS_RESET (§2.1.2) is set when the device reports an unrecoverable error
// (NotifyNeedsReset()), when its activation fails, or when the driver enables a queue whose
// size or ring addresses are invalid; it reads back in device_status until the driver resets
// the device (writes 0).
//
// Guest-controlled values are validated: queue registers are ignored once the queue is
// enabled or the device is DRIVER_OK; FEATURES_OK is refused unless the driver's features are a
// subset of the device's and include VIRTIO_F_VERSION_1; MSI-X vector numbers out of range read
// back as NO_VECTOR; accesses that do not match a register's size are ignored (reads: zero).
// Thread-safe.
class VirtioPciDevice : public pci::PciDevice, public VirtioInterrupt {
 public:
  // `memory` and `loop` must outlive the device. `msi` sends the function's MSI-X vectors.
  // Errors: EINVAL when the device has no queues or more than kMaxQueues, or a queue size that
  // is not a power of two.
  static Result<std::shared_ptr<VirtioPciDevice>> Create(std::shared_ptr<VirtioDevice> device,
                                                         const GuestMemory& memory, EventLoop& loop,
                                                         std::shared_ptr<pci::MsiDelivery> msi,
                                                         IoEventRegistrar registrar);
  ~VirtioPciDevice() override;

  // Number of MSI-X vectors the function has (queues + 1).
  static uint16_t VectorCount(const VirtioDevice& device);

  // pci::PciDevice.
  void ReadConfig(uint16_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint16_t offset, std::span<const uint8_t> data) override;
  std::vector<pci::BarRequest> bars() const override;
  void ReadBar(uint8_t index, uint64_t offset, std::span<uint8_t> data) override;
  void WriteBar(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override;
  Status BarMoved(uint8_t index, uint64_t old_gpa, uint64_t new_gpa) override;

  // VirtioInterrupt: sets the ISR bit and signals the queue's (or the config) MSI-X vector.
  // Called on the device thread; none of them takes the register lock, so a device may call
  // them while a vCPU thread holds it waiting in VirtioDevice::Reset() for the device thread.
  Status NotifyQueue(uint16_t queue_index) override;
  Status NotifyConfig() override;
  // Sets DEVICE_NEEDS_RESET and sends a configuration change notification. Errors: the MSI-X
  // delivery's (DEVICE_NEEDS_RESET is set regardless).
  Status NotifyNeedsReset() override;

  // Stops the device's processing (the VM is shutting down). Idempotent.
  void Shutdown();

  // The device_status register (virtio 1.2 §2.1). Thread-safe.
  uint8_t device_status() const;

  // The function's state for a snapshot, taken with the VM paused after
  // VirtioDevice::Quiesce(): configuration space, MSI-X table, common configuration registers,
  // virtqueues and VirtioDevice::SaveState().
  nlohmann::json SaveState() const;
  // Takes back SaveState() on a function freshly created for the same device configuration, on
  // a VM whose vCPUs do not run: re-activates the device if the driver had (DRIVER_OK), then
  // kicks every ready queue and sends its used buffer notification, so that neither a buffer
  // made available nor an interrupt raised around the snapshot is lost (a spurious one is
  // harmless, §2.7.10). The caller then places the BARs (PciRoot::UpdateAllBars()).
  // Errors: EINVAL naming what in `state` is malformed or belongs to another device type.
  Status RestoreState(const nlohmann::json& state);
  // The virtio device behind the function.
  VirtioDevice& device() const { return *device_; }

 private:
  VirtioPciDevice(std::shared_ptr<VirtioDevice> device, const GuestMemory& memory, EventLoop& loop,
                  IoEventRegistrar registrar);
  Status Init(std::shared_ptr<pci::MsiDelivery> msi);
  Status AddVirtioCapabilities();

  uint64_t ReadCommon(uint64_t offset, size_t size);
  void WriteCommon(uint64_t offset, size_t size, uint64_t value);
  void WriteQueueRegister(uint64_t offset, size_t size, uint64_t value);
  uint8_t StatusRegister() const;  // status_ and DEVICE_NEEDS_RESET; with mutex_ held
  void WriteStatus(uint8_t status);
  void EnableQueue();
  void ActivateDevice();
  void ResetLocked();
  Status RegisterIoEvents(uint64_t bar_gpa, bool deassign);
  uint16_t ValidVector(uint16_t vector) const;
  Status SignalVector(uint16_t vector);
  uint32_t PciCfgWindow(uint16_t offset, size_t size, bool& hit) const;

  const std::shared_ptr<VirtioDevice> device_;
  const GuestMemory& memory_;
  EventLoop& loop_;
  const IoEventRegistrar registrar_;
  pci::ConfigSpace config_;
  std::unique_ptr<pci::Msix> msix_;
  uint16_t msix_capability_ = 0;
  uint16_t pci_cfg_capability_ = 0;
  std::vector<EventFd> queue_events_;

  mutable std::mutex mutex_;  // the common configuration registers below
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint8_t status_ = 0;  // without DEVICE_NEEDS_RESET: that is needs_reset_
  uint16_t queue_select_ = 0;
  std::vector<Queue> queues_;
  bool active_ = false;
  uint64_t bar_gpa_ = 0;

  // Used by NotifyQueue/NotifyConfig/NotifyNeedsReset on the device thread without the mutex.
  std::atomic<bool> needs_reset_{false};  // DEVICE_NEEDS_RESET; cleared by a driver reset
  std::atomic<uint8_t> isr_{0};
  std::atomic<uint8_t> config_generation_{0};
  std::atomic<uint16_t> config_vector_{kNoVector};
  std::unique_ptr<std::atomic<uint16_t>[]> queue_vectors_;
};

}  // namespace tern::virtio
