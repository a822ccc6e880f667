// Helpers shared by the virtio devices (virtio_device.h).
#include "virtio/virtio_device.h"

#include <spdlog/spdlog.h>

#include <string>

namespace tern::virtio {

void FailDevice(std::string_view device, const Error& error, VirtioInterrupt& interrupt) {
  spdlog::error("{}: {}; the device stops until the driver resets it", device, error.ToString());
  if (Status status = interrupt.NotifyNeedsReset(); !status.ok()) {
    spdlog::error("{}: DEVICE_NEEDS_RESET not delivered: {}", device, status.error().ToString());
  }
}

Status CheckActivateContext(std::string_view device, const ActivateContext& context,
                            size_t queue_count) {
  if (context.memory == nullptr || context.queues == nullptr || context.interrupt == nullptr ||
      context.loop == nullptr || context.queues->size() != queue_count ||
      context.queue_events.size() != queue_count) {
    return Error(std::string(device) + ": expects " + std::to_string(queue_count) + " queues",
                 EINVAL);
  }
  return Ok();
}

}  // namespace tern::virtio
