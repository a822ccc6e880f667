// virtio-console (virtio 1.2 §5.3) with a single port and no VIRTIO_CONSOLE_F_MULTIPORT: the
// guest's hvc0. Bytes the guest transmits go to a host descriptor; bytes read from another host
// descriptor are delivered to the guest.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "virtio/virtio_device.h"

namespace tern::virtio {

// Queues (§5.3.2): 0 receiveq0 (device to driver), 1 transmitq0 (driver to device). The
// configuration space (struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr) reads
// as zeros and ignores writes: none of the features that give it meaning is offered.
//
// Output: each transmitq0 buffer is written fully to the output descriptor, in order, on the
// event loop; EAGAIN is waited out with poll(2) (so a stalled output stalls the loop, as with
// the serial port), and bytes whose write fails otherwise (EPIPE, EIO, ...) are dropped.
//
// Input: while the input descriptor is readable and the driver has posted receiveq0 buffers,
// one read(2) fills one buffer at a time. With no buffer posted the device stops watching the
// input until the driver posts one. At end of input (or a read error) input stops for good. An
// input descriptor epoll(7) cannot watch (a regular file, /dev/null) means no input.
//
// A malformed queue stops the device until the driver resets it (FailDevice(): logged, and
// DEVICE_NEEDS_RESET).
//
// Thread safety: as VirtioDevice. All processing, and the state changes of Activate() and
// Reset(), happen on the event loop thread.
class Console : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint16_t kReceiveQueue = 0;   // receiveq0
  static constexpr uint16_t kTransmitQueue = 1;  // transmitq0

  // `input_fd`: host-to-guest bytes, or -1 for none. `output_fd`: guest-to-host bytes, or -1 to
  // discard them. Neither is owned; both must outlive the device. The VMM should ignore SIGPIPE
  // if the output may be a pipe or socket.
  Console(int input_fd, int output_fd) : input_fd_(input_fd), output_fd_(output_fd) {}
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;
  // Resets an active device: destroy it before the objects its ActivateContext points to.
  ~Console() override { Reset(); }

  uint32_t device_type() const override { return kDeviceTypeConsole; }
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  Status Activate(const ActivateContext& context) override;
  void Reset() override;

 private:
  Status Start();  // Activate() on the loop thread
  void OnReceiveQueue();
  void OnInput();
  void OnTransmitQueue();
  // Each returns an error only for a malformed queue.
  Status Receive();
  Status Transmit();
  Status SetInputWatched(bool watched);
  // Stops all processing (loop thread).
  void Unwatch();
  // Unwatch() and FailDevice().
  void Fail(const Error& error);

  const int input_fd_;
  const int output_fd_;

  // Loop thread only (and Activate()/Reset() through EventLoop::RunSync()).
  ActivateContext context_;
  bool active_ = false;
  bool input_watched_ = false;
  bool input_ended_ = false;
  std::optional<DescriptorChain> rx_chain_;  // popped, waiting for input
};

}  // namespace tern::virtio
