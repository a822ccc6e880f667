// The transport-independent side of a virtio device (virtio 1.2 §2 "Basic Facilities of a
// Virtio Device"): device type, feature bits, device-specific configuration space, and the
// queues it processes once the driver sets DRIVER_OK. A transport (virtio-pci, virtio 1.2
// §4.1) owns the status machine, feature negotiation and queue registers, and calls these.
#pragma once

#include <atomic>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string_view>
#include <vector>

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "virtio/queue.h"

namespace tern::virtio {

// Device types (virtio 1.2 §5).
inline constexpr uint32_t kDeviceTypeNet = 1;
inline constexpr uint32_t kDeviceTypeBlock = 2;
inline constexpr uint32_t kDeviceTypeConsole = 3;
inline constexpr uint32_t kDeviceTypeEntropy = 4;

// Reserved feature bits (virtio 1.2 §6).
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;  // VIRTIO_F_INDIRECT_DESC
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;      // VIRTIO_F_EVENT_IDX
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;      // VIRTIO_F_VERSION_1
// The reserved features every device here offers: Queue implements both ring features.
inline constexpr uint64_t kCommonFeatures =
    kFeatureVersion1 | kFeatureIndirectDesc | kFeatureEventIdx;

// How a device tells the driver about used buffers and configuration changes. The transport
// implements it (virtio-pci: MSI-X vector of the queue / config_msix_vector, else ISR bits).
// Thread-safe.
class VirtioInterrupt {
 public:
  virtual ~VirtioInterrupt() = default;
  // "Used Buffer Notification" for queue `queue_index` (virtio 1.2 §2.3).
  virtual Status NotifyQueue(uint16_t queue_index) = 0;
  // "Configuration Change Notification" (virtio 1.2 §2.3).
  virtual Status NotifyConfig() = 0;
  // The device hit an error it cannot recover from, e.g. a malformed ring: the transport sets
  // DEVICE_NEEDS_RESET in device_status until the driver resets the device, and sends a
  // configuration change notification (virtio 1.2 §2.1.2). Called on the device's event loop
  // thread, possibly while a vCPU thread waits in VirtioDevice::Reset() for that thread: it
  // must not wait for the vCPU side.
  virtual Status NotifyNeedsReset() = 0;
};

// After Queue::AddUsed(): sends queue `queue_index`'s used buffer notification if the driver
// wants one now (Queue::NeedsNotification(), §2.7.10). Errors of either.
inline Status NotifyIfNeeded(Queue& queue, uint16_t queue_index, const GuestMemory& memory,
                             VirtioInterrupt& interrupt) {
  TERN_ASSIGN_OR_RETURN(bool needed, queue.NeedsNotification(memory));
  return needed ? interrupt.NotifyQueue(queue_index) : Ok();
}

// A device statistic (VirtioDevice::Metrics()): incremented on the device's event loop thread,
// read on any thread. Relaxed atomics: a reader needs each value whole, not ordered with
// anything else, and an increment costs no fence.
class RelaxedCounter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Load() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// What a device does when its queues became unusable (a malformed ring, a failed notification):
// logs `error` for `device` ("virtio-blk") and asks the transport for DEVICE_NEEDS_RESET
// (VirtioInterrupt::NotifyNeedsReset()). The caller stops processing its queues until
// VirtioDevice::Reset(). Call once per failure, on the device's event loop thread.
void FailDevice(std::string_view device, const Error& error, VirtioInterrupt& interrupt);

// What a device gets when the driver sets DRIVER_OK (virtio 1.2 §3.1.1 step 8). Pointers stay
// valid until Reset() returns.
struct ActivateContext {
  const GuestMemory* memory = nullptr;
  uint64_t driver_features = 0;  // the negotiated features (a subset of device_features())
  // One per queue the device declared (queue_max_sizes()); index = virtqueue index. Queues the
  // driver did not enable have ready() == false and must not be used.
  std::vector<Queue>* queues = nullptr;
  // queue_events[i] is signalled (ioeventfd) whenever the driver notifies queue i.
  std::span<const EventFd> queue_events;
  VirtioInterrupt* interrupt = nullptr;
  EventLoop* loop = nullptr;  // the device thread; add queue_events and backend fds here
};

// For VirtioDevice::Activate(): EINVAL, naming `device`, unless `context` has all its pointers
// set and `queue_count` queues, each with its queue event.
Status CheckActivateContext(std::string_view device, const ActivateContext& context,
                            size_t queue_count);

class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  virtual uint32_t device_type() const = 0;      // kDeviceType*
  virtual uint64_t device_features() const = 0;  // must include kFeatureVersion1
  // Maximum size of each virtqueue (powers of two, <= 32768); the count is the number of
  // queues the device has.
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;

  // Device-specific configuration space (virtio 1.2 §5.x.4). `offset` + data.size() may run
  // past the structure: reads then return zeros there and writes are ignored. Called on vCPU
  // threads, concurrently with the device's own thread: implementations synchronize.
  virtual void ReadConfig(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint64_t offset, std::span<const uint8_t> data) = 0;

  // The driver set DRIVER_OK: start processing the queues. An error makes the transport set
  // DEVICE_NEEDS_RESET. Called on a vCPU thread, once per activation.
  virtual Status Activate(const ActivateContext& context) = 0;
  // The driver reset the device (wrote 0 to device_status), or the VM is stopping. When it
  // returns no device thread touches guest memory, the queues or the interrupt, and the
  // device is ready for a new Activate(). Called on a vCPU thread; a no-op when not active.
  virtual void Reset() = 0;

  // Snapshots (called with the VM paused: no vCPU runs, the device loop dispatches nothing).
  //
  // Completes the requests in flight (a disk's I/O, say) so that the used rings account for
  // every chain the device popped. Called on the API thread; implementations that own work on
  // their event loop run it there with EventLoop::RunSync(). Default: nothing is in flight.
  virtual Status Quiesce() { return Ok(); }
  // Device state beyond what the transport and the virtqueues hold (the balloon's target, a
  // chain the device keeps), or null when there is none.
  virtual nlohmann::json SaveState() const { return nullptr; }
  // Takes back SaveState() on a freshly created device of the same configuration, before the
  // transport re-activates it. EINVAL for a state this device cannot take.
  virtual Status RestoreState(const nlohmann::json& state) {
    if (!state.is_null()) return Error("this virtio device has no snapshot state", EINVAL);
    return Ok();
  }

  // What the device did since it was created, as {"counter": value} (the names and units its
  // counters struct documents), for GET /metrics. Default: an empty object (nothing counted).
  // Thread-safe: called on the API thread while the device runs, and never blocks it.
  virtual nlohmann::json Metrics() const { return nlohmann::json::object(); }
};

}  // namespace tern::virtio
