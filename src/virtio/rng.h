// virtio-rng, the entropy device (virtio 1.2 §5.4): the driver posts device-writable buffers
// on its one queue (requestq) and the device fills them with random bytes from the host
// kernel's CRNG (getrandom(2)).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "virtio/virtio_device.h"

namespace tern::virtio {

// Fills each request with min(its writable length, kMaxBytesPerRequest) random bytes; the
// device-readable buffers of a request, if any, are ignored. No configuration space, no device
// features beyond VIRTIO_F_VERSION_1, INDIRECT_DESC and EVENT_IDX.
//
// Requests are served on the event loop passed to Activate(). getrandom(2) is called with
// GRND_NONBLOCK; only while the host's CRNG is not initialized yet (early in host boot) does it
// fall back to a blocking getrandom(2), stalling the event loop until the CRNG is ready. A
// malformed queue stops the device until the driver resets it (FailDevice(): logged, and
// DEVICE_NEEDS_RESET).
//
// Thread safety: as VirtioDevice.
class Rng : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  // Most bytes written per request: a guest cannot make one request monopolize the loop.
  static constexpr uint32_t kMaxBytesPerRequest = 64 * 1024;

  Rng() = default;
  Rng(const Rng&) = delete;
  Rng& operator=(const Rng&) = delete;
  // Resets an active device: destroy it before the objects its ActivateContext points to.
  ~Rng() override { Reset(); }

  uint32_t device_type() const override { return kDeviceTypeEntropy; }
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  Status Activate(const ActivateContext& context) override;
  void Reset() override;

 private:
  void OnQueueNotify();
  // Serves the available requests (ProcessAvailable()'s bound, then again later) and notifies
  // the driver. An error means the queue is bad.
  Status ServeRequests();
  // Fills the writable buffers of `chain`; returns the byte count.
  Result<uint32_t> Fill(const DescriptorChain& chain);

  ActivateContext context_;
  bool active_ = false;
};

}  // namespace tern::virtio
