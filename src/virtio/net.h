// virtio-net (virtio 1.2 §5.1): an Ethernet NIC whose frames go to and come from a host
// backend, normally a TAP interface (net::Tap). One queue pair, no control queue. Checksum and
// segmentation offloads are negotiated in both directions and the virtio-net header passes
// between guest buffers and the TAP untouched; all frame I/O runs on the device's event loop,
// never on a vCPU thread.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "net/tap.h"
#include "virtio/virtio_device.h"

namespace tern::virtio {

// Feature bits (virtio 1.2 §5.1.3).
inline constexpr uint64_t kNetFeatureCsum = 1ull << 0;       // VIRTIO_NET_F_CSUM
inline constexpr uint64_t kNetFeatureGuestCsum = 1ull << 1;  // VIRTIO_NET_F_GUEST_CSUM
inline constexpr uint64_t kNetFeatureMac = 1ull << 5;        // VIRTIO_NET_F_MAC
inline constexpr uint64_t kNetFeatureGuestTso4 = 1ull << 7;  // VIRTIO_NET_F_GUEST_TSO4
inline constexpr uint64_t kNetFeatureGuestTso6 = 1ull << 8;  // VIRTIO_NET_F_GUEST_TSO6
inline constexpr uint64_t kNetFeatureGuestEcn = 1ull << 9;   // VIRTIO_NET_F_GUEST_ECN
inline constexpr uint64_t kNetFeatureGuestUfo = 1ull << 10;  // VIRTIO_NET_F_GUEST_UFO
inline constexpr uint64_t kNetFeatureHostTso4 = 1ull << 11;  // VIRTIO_NET_F_HOST_TSO4
inline constexpr uint64_t kNetFeatureHostTso6 = 1ull << 12;  // VIRTIO_NET_F_HOST_TSO6
inline constexpr uint64_t kNetFeatureHostEcn = 1ull << 13;   // VIRTIO_NET_F_HOST_ECN
inline constexpr uint64_t kNetFeatureMrgRxbuf = 1ull << 15;  // VIRTIO_NET_F_MRG_RXBUF
inline constexpr uint64_t kNetFeatureStatus = 1ull << 16;    // VIRTIO_NET_F_STATUS

inline constexpr uint16_t kNetStatusLinkUp = 1;  // VIRTIO_NET_S_LINK_UP (§5.1.4)

// Byte offset of num_buffers in struct virtio_net_hdr_v1 (§5.1.6), little-endian 16 bits.
inline constexpr size_t kNetHeaderNumBuffersOffset = 10;

// What a virtio-net device did since it was created, named like Firecracker's net metrics.
// Bytes are frame bytes without the virtio_net_hdr_v1; a GSO frame counts as one packet.
struct NetCounters {
  uint64_t rx_packets_count = 0;  // frames handed to the driver
  uint64_t rx_bytes_count = 0;
  // Frames read from the backend and dropped: larger than the buffers the driver posted (or
  // shorter than the header).
  uint64_t rx_dropped_frames = 0;
  uint64_t tx_packets_count = 0;  // frames the backend took
  uint64_t tx_bytes_count = 0;
  // Transmit chains dropped without reaching the backend: outside guest RAM, or a size or
  // buffer count out of bounds.
  uint64_t tx_malformed_frames = 0;
  uint64_t tap_write_fails = 0;  // frames the backend refused (an error other than "full")
};

// The device (virtio 1.2 §5.1).
//
// Features offered (§5.1.3): VIRTIO_NET_F_CSUM, GUEST_CSUM, GUEST_TSO4, GUEST_TSO6, GUEST_ECN,
// GUEST_UFO, HOST_TSO4, HOST_TSO6, HOST_ECN, MRG_RXBUF, STATUS, MAC (only when a MAC address is
// given; otherwise the driver picks one), plus VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX and
// VIRTIO_F_INDIRECT_DESC. The guest's receive offloads (GUEST_*) become the backend's
// SetOffload() flags at activation, following the feature dependencies of §5.1.3.1 (TSO only
// with checksum offload, ECN only with TSO).
//
// Configuration space (§5.1.4, read-only): mac (bytes 0-5), status = VIRTIO_NET_S_LINK_UP
// (bytes 6-7), max_virtqueue_pairs = 1 (bytes 8-9). Driver writes are ignored.
//
// Transmit (transmitq1): each chain's device-readable buffers, virtio_net_hdr_v1 and frame, are
// written to the backend as one frame. A chain of fewer than kHeaderSize or more than
// kMaxFrameSize bytes, with more than kMaxBuffers buffers, or that the backend rejects is
// dropped (returned with length 0). When the backend is full the chain is kept and retried once
// the backend's descriptor is writable; the queue is drained per wake-up, up to kTxBatch frames.
//
// Receive (receiveq1): frames are read from the backend straight into guest buffers. Without
// MRG_RXBUF a frame fills one chain; with it a frame spans as many chains as it needs and
// num_buffers in its header says how many (§5.1.6.4). With MRG_RXBUF the device reads only once
// it holds buffers for the largest frame the backend may deliver (kMaxFrameSize with GUEST_TSO4,
// GUEST_TSO6 or GUEST_UFO, else kMinRxFrameSize), or as many buffers as the queue has entries.
// A frame larger than the buffers is dropped and the buffers are used for the next one. Chains
// with device-readable buffers or under kHeaderSize writable bytes are returned with length 0.
// When the driver has posted no usable buffers the backend is not watched for input until the
// driver notifies the receive queue; frames wait in the backend meanwhile.
//
// Used buffer notifications: one per queue per batch, when the driver wants it (§2.7.10).
//
// A malformed ring (Queue::Pop/AddUsed errors) or a failed notification stops the device until
// Reset(): it no longer processes either queue, logs the error and asks the transport for
// DEVICE_NEEDS_RESET.
//
// Thread safety: as VirtioDevice. The configuration is immutable, so ReadConfig() needs no lock;
// queue state is touched only on the event loop thread between Activate() and Reset().
// Counters() and Metrics() may run on any thread.
class NetDevice final : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;  // receiveq1
  static constexpr uint16_t kTxQueue = 1;  // transmitq1
  static constexpr uint16_t kQueueSize = 256;

  static constexpr size_t kHeaderSize = net::kVnetHeaderSize;
  // Header plus the largest GSO frame: 65535-byte IP packet, 14-byte Ethernet and 4-byte VLAN
  // headers, rounded up the way §5.1.6.3.1 does (65562 bytes).
  static constexpr size_t kMaxFrameSize = 65562;
  // Header plus a full-size frame without GSO (§5.1.6.3.1: 1526 bytes).
  static constexpr size_t kMinRxFrameSize = 1526;
  // Most buffers one frame's chains may have in all: IOV_MAX for readv/writev, less the byte
  // receive adds to tell a frame that filled the guest's buffers from one that did not fit.
  static constexpr size_t kMaxBuffers = 1023;
  // Frames handled per wake-up before other events get their turn.
  static constexpr int kTxBatch = 256;
  static constexpr int kRxBatch = 64;

  // A device on the TAP interface `tap_name` (see net::Tap::Open for the errors), with the MAC
  // address `mac` offered to the driver (VIRTIO_NET_F_MAC) if given.
  static Result<std::unique_ptr<NetDevice>> Create(std::string_view tap_name,
                                                   std::optional<net::MacAddress> mac);

  // A device on `backend` (not null), e.g. a TAP or a test double.
  NetDevice(std::unique_ptr<net::Backend> backend, std::optional<net::MacAddress> mac);
  ~NetDevice() override;

  uint32_t device_type() const override { return kDeviceTypeNet; }
  uint64_t device_features() const override { return features_; }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  // Errors: EINVAL unless both queues are enabled; the backend's SetOffload() error; the event
  // loop's Add() error.
  Status Activate(const ActivateContext& context) override;
  void Reset() override;
  // Counters() as JSON, with the same names.
  nlohmann::json Metrics() const override;

  // What the device did since it was created. Thread-safe.
  NetCounters Counters() const;

 private:
  // A receive chain popped from receiveq1 and not used yet.
  struct RxChain {
    uint16_t head;
    std::vector<iovec> iov;  // its writable buffers
    size_t capacity;         // bytes in iov
  };

  // NetCounters, as the loop thread increments them.
  struct AtomicCounters {
    RelaxedCounter rx_packets_count;
    RelaxedCounter rx_bytes_count;
    RelaxedCounter rx_dropped_frames;
    RelaxedCounter tx_packets_count;
    RelaxedCounter tx_bytes_count;
    RelaxedCounter tx_malformed_frames;
    RelaxedCounter tap_write_fails;
  };

  // What Activate() was given, plus settings derived from the negotiated features.
  struct Active {
    const GuestMemory* memory;
    Queue* rx;
    Queue* tx;
    const EventFd* rx_event;
    const EventFd* tx_event;
    VirtioInterrupt* interrupt;
    EventLoop* loop;
    bool mergeable;        // VIRTIO_NET_F_MRG_RXBUF
    size_t rx_frame_size;  // bytes a received frame may need
  };

  // Event handlers (loop thread).
  void OnRxNotify();
  void OnTxNotify();
  void OnBackendReady();

  void ProcessTx();
  // Sends tx_pending_. Returns false if the backend is full; otherwise the chain is used.
  Result<bool> TransmitPending();
  void ProcessRx();
  // Pops receive chains until a frame can be read. Returns false when the driver has to post
  // more buffers first, or after a bounded number of pops (then the receive queue event is
  // signalled to come back). Sets `used` if it returned unusable chains to the driver.
  Result<bool> FillRxChains(bool& used);
  bool RxChainsSuffice() const;
  // Hands the first chains holding a received frame of `length` bytes to the driver.
  Status CompleteRx(size_t length);

  // Watches the backend descriptor for what the device waits for now (input unless rx_paused_,
  // output while tx_pending_).
  Status UpdateBackendWatch();
  // Stops watching all descriptors (loop thread).
  void Unwatch();
  // Stops the device until Reset() and reports DEVICE_NEEDS_RESET (FailDevice()).
  void Fail(const Error& error);

  const std::unique_ptr<net::Backend> backend_;
  const uint64_t features_;
  const std::array<uint8_t, 10> config_;

  // Set by Activate() on the vCPU thread before any handler is registered; cleared by Reset().
  std::optional<Active> active_;

  // Loop thread state.
  bool broken_ = false;
  uint32_t backend_events_ = 0;  // epoll events the backend descriptor is watched for; 0: none
  bool rx_paused_ = false;       // waiting for the driver to notify receiveq1
  std::deque<RxChain> rx_chains_;
  size_t rx_capacity_ = 0;                     // bytes in rx_chains_
  size_t rx_buffers_ = 0;                      // iovecs in rx_chains_
  std::vector<iovec> rx_iov_;                  // scratch: the iovecs a frame is read into
  uint8_t rx_overflow_ = 0;                    // their last byte: a frame reaching it did not fit
  std::optional<DescriptorChain> tx_pending_;  // popped, not yet taken by the backend
  bool tx_error_logged_ = false;
  bool rx_error_logged_ = false;

  AtomicCounters counters_;  // incremented on the loop thread, read on any
};

}  // namespace tern::virtio
