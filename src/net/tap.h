// The host side of a virtual NIC: a Linux TAP interface opened through /dev/net/tun with
// IFF_VNET_HDR, so that every frame crossing the descriptor carries the virtio-net header
// (struct virtio_net_hdr_v1, virtio 1.2 §5.1.6) and checksum/segmentation offloads pass between
// the guest and the host kernel untouched. Also MAC address parsing for the command line.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/result.h"

namespace tern::net {

// An Ethernet MAC address, in transmission order.
using MacAddress = std::array<uint8_t, 6>;

// Parses "52:54:00:12:34:56": six two-digit hexadecimal bytes (either case) separated by ':'.
// EINVAL error, naming the text, for anything else, for a multicast or broadcast address (bit 0
// of the first byte set: a NIC's own address must be unicast) and for 00:00:00:00:00:00.
Result<MacAddress> ParseMacAddress(std::string_view text);

// Bytes of the header in front of every frame a Backend passes: struct virtio_net_hdr_v1 (which
// virtio 1.x always uses, with num_buffers, whatever VIRTIO_NET_F_MRG_RXBUF says).
inline constexpr size_t kVnetHeaderSize = 12;

// Where a virtio-net device sends its guest's frames and gets frames for it. Each frame is
// kVnetHeaderSize header bytes followed by the Ethernet frame (no FCS). The methods are called
// from one thread at a time (the device's event loop).
class Backend {
 public:
  virtual ~Backend() = default;

  // A non-blocking descriptor for epoll: readable when a frame waits to be received, writable
  // when Send() may succeed.
  virtual int fd() const = 0;

  // Receives one frame into `iov` (at least kVnetHeaderSize bytes in all) and returns its length
  // in bytes; 0 when no frame is waiting. A frame that does not fit is cut to what `iov` holds
  // and its rest discarded; the result is then at least the capacity of `iov` (the full length
  // or the bytes stored: TAP drivers of different kernels differ). Errors: the failing call.
  virtual Result<size_t> Receive(std::span<const iovec> iov) = 0;

  // Sends one frame gathered from `iov`; false when the backend cannot take it now (EAGAIN: try
  // again once fd() is writable). Errors (the frame is not sent): the failing system call, e.g.
  // EINVAL for a header the host kernel rejects, EIO while the TAP interface is down.
  virtual Result<bool> Send(std::span<const iovec> iov) = 0;

  // Makes the host deliver only frames the guest can take: `tun_flags` is a set of TUN_F_CSUM,
  // TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO (<linux/if_tun.h>); 0 means plain frames
  // with complete checksums. Errors: the failing system call (EINVAL for an unsupported set).
  virtual Status SetOffload(unsigned tun_flags) = 0;
};

// A TAP interface attached with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte vnet header
// (TUNSETVNETHDRSZ). Frames the guest sends leave through the interface into the host's network
// stack; frames the host routes to the interface are received. The interface itself (addresses,
// up/down, bridge) is configured outside Tern. Move-only; the descriptor is non-blocking and
// close-on-exec. Not thread-safe (see Backend).
class Tap : public Backend {
 public:
  // Opens /dev/net/tun and attaches to the TAP interface `name`, creating it if absent (a
  // non-persistent interface then disappears when the Tap is destroyed). Errors name the
  // interface and the failing call: EINVAL for an empty name or one of IFNAMSIZ (16) bytes or
  // more, or an existing interface of another kind (TUN, multi-queue); EPERM without
  // CAP_NET_ADMIN (or ownership of a persistent TAP); EBUSY when another descriptor holds it;
  // ENOENT when the tun driver is missing.
  static Result<std::unique_ptr<Tap>> Open(std::string_view name);

  // The interface name as the kernel reports it.
  const std::string& name() const { return name_; }

  int fd() const override { return fd_.get(); }
  Result<size_t> Receive(std::span<const iovec> iov) override;
  Result<bool> Send(std::span<const iovec> iov) override;
  Status SetOffload(unsigned tun_flags) override;

 private:
  Tap(Fd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}

  // "TAP <name>: <call>" with errno, for a failed system call.
  Error SystemError(std::string_view call) const;

  Fd fd_;
  std::string name_;
};

}  // namespace tern::net
