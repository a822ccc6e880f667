// virtio-vsock (virtio 1.2 §5.10): AF_VSOCK stream sockets between the guest and host programs,
// with Firecracker's "hybrid vsock" host side: the host end of every connection is an AF_UNIX
// stream socket. Host programs reach guest port P by connecting to the device's Unix socket
// `uds_path` and writing "CONNECT P\n"; guest connections to the host (CID 2) port P go to the
// Unix socket "<uds_path>_P". The device relays bytes with virtio-vsock's credit-based flow
// control, all on the device event loop thread.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "virtio/virtio_device.h"

namespace tern::virtio {

inline constexpr uint32_t kDeviceTypeVsock = 19;  // virtio 1.2 §5.10.1

// Feature bits (§5.10.3). Without either negotiated the device acts as if STREAM were.
inline constexpr uint64_t kVsockFeatureStream = 1ull << 0;     // VIRTIO_VSOCK_F_STREAM
inline constexpr uint64_t kVsockFeatureSeqpacket = 1ull << 1;  // VIRTIO_VSOCK_F_SEQPACKET

// Well-known CIDs (§5.10.4, vsock(7)): the host is 2; guests get 3 and up.
inline constexpr uint64_t kVsockHostCid = 2;           // VMADDR_CID_HOST
inline constexpr uint32_t kVsockPortAny = 0xffffffff;  // VMADDR_PORT_ANY: never a real port

// struct virtio_vsock_hdr fields (§5.10.6).
inline constexpr uint16_t kVsockTypeStream = 1;     // VIRTIO_VSOCK_TYPE_STREAM
inline constexpr uint16_t kVsockTypeSeqpacket = 2;  // VIRTIO_VSOCK_TYPE_SEQPACKET
enum VsockOp : uint16_t {
  kVsockOpInvalid = 0,
  kVsockOpRequest = 1,        // VIRTIO_VSOCK_OP_REQUEST: connect
  kVsockOpResponse = 2,       // VIRTIO_VSOCK_OP_RESPONSE: connection accepted
  kVsockOpRst = 3,            // VIRTIO_VSOCK_OP_RST: refused, or closed for good
  kVsockOpShutdown = 4,       // VIRTIO_VSOCK_OP_SHUTDOWN: flags say which directions end
  kVsockOpRw = 5,             // VIRTIO_VSOCK_OP_RW: payload bytes
  kVsockOpCreditUpdate = 6,   // VIRTIO_VSOCK_OP_CREDIT_UPDATE: buf_alloc/fwd_cnt changed
  kVsockOpCreditRequest = 7,  // VIRTIO_VSOCK_OP_CREDIT_REQUEST: please send CREDIT_UPDATE
};
// SHUTDOWN flags: the sender will receive no more / send no more.
inline constexpr uint32_t kVsockShutdownRcv = 1;   // VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE
inline constexpr uint32_t kVsockShutdownSend = 2;  // VIRTIO_VSOCK_SHUTDOWN_F_SEND
// struct virtio_vsock_event id (§5.10.6.7): the driver drops all connections, re-reads guest_cid.
inline constexpr uint32_t kVsockEventTransportReset = 0;  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET

// struct virtio_vsock_hdr (§5.10.6), host byte order. On the wire it is kVsockHeaderSize
// little-endian, packed bytes; `len` payload bytes follow it.
struct VsockHeader {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;  // bytes the sender's receive buffer holds for this connection
  uint32_t fwd_cnt = 0;    // payload bytes the sender has consumed from it (mod 2^32)
};
inline constexpr size_t kVsockHeaderSize = 44;

// Wire format conversion of VsockHeader.
std::array<uint8_t, kVsockHeaderSize> EncodeVsockHeader(const VsockHeader& header);
VsockHeader DecodeVsockHeader(std::span<const uint8_t, kVsockHeaderSize> bytes);

// Host side of the device.
struct VsockOptions {
  // The Unix socket the device listens on for host-initiated connections; guest connections
  // to host port P go to "<uds_path>_P". At most 107 bytes (sockaddr_un).
  std::string uds_path;
  // The guest's CID (configuration space guest_cid): 3..0xfffffffe.
  uint64_t guest_cid = 3;
  // Most connections open at once, counting host connections that have not sent their
  // CONNECT line yet: 1..65536. Further host connections are closed at once, further guest
  // requests get RST.
  uint32_t max_connections = 256;
  // The receive buffer the device advertises per connection (buf_alloc, bytes): the most
  // guest-to-host bytes it buffers for a host program that does not read. 4 KiB..16 MiB.
  uint32_t buf_alloc = 256 * 1024;
  // How long a host-initiated connection waits for the guest's RESPONSE, and a host program
  // may take to send its CONNECT line: 1 ms..1 h.
  std::chrono::milliseconds connect_timeout{2000};
};

// What a virtio-vsock device did since it was created, named like Firecracker's vsock metrics.
// rx is the device-to-driver direction (the rx queue), tx the driver-to-device one.
struct VsockCounters {
  uint64_t rx_packets_count = 0;  // packets put on the rx queue, control packets included
  uint64_t rx_bytes_count = 0;    // payload bytes of the RW packets among them
  uint64_t tx_packets_count = 0;  // tx chains holding a whole header, malformed ones included
  uint64_t tx_bytes_count = 0;    // payload bytes of RW packets taken for a host socket
  uint64_t conns_added = 0;       // connections opened: guest REQUESTs accepted, CONNECT lines
  // Connections closed, for any reason (RST, both sides shut down, an error, a reset of the
  // device or of the transport). conns_added - conns_removed connections are open.
  uint64_t conns_removed = 0;
};

// The device (virtio 1.2 §5.10).
//
// Queues (§5.10.2): 0 rx (device to driver), 1 tx (driver to device), 2 event. The driver must
// enable all three. Features offered: VIRTIO_VSOCK_F_STREAM (stream sockets only; SEQPACKET is
// not offered), VIRTIO_F_VERSION_1, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC. Configuration
// space (§5.10.4, read-only): le64 guest_cid.
//
// Host-initiated connections: the device listens on options.uds_path (while active; host
// programs that connect before wait in the backlog). A host program connects and writes
// "CONNECT <port>\n" (decimal, at most 32 bytes, within connect_timeout, else it is closed).
// The device assigns a host port (from 2^30 up, unique among open connections) and sends the
// guest a REQUEST from (2, host port) to (guest_cid, port). On RESPONSE it writes
// "OK <host port>\n" to the host program and relays bytes both ways; on RST (nobody listens),
// or without an answer within connect_timeout, it closes the host program's socket.
//
// Guest-initiated connections: a REQUEST to (2, P) makes the device connect to the Unix socket
// "<uds_path>_P" (non-blocking: a full backlog counts as refusal). If that fails the guest gets
// RST, otherwise RESPONSE, and bytes are relayed.
//
// Relaying: host-to-guest bytes are read from the host socket straight into rx buffers, one RW
// packet per buffer (at most 64 KiB of payload), never more than the guest's credit
// (buf_alloc - (tx_cnt - fwd_cnt) of its latest packet); with no credit the device stops
// reading the socket and sends one CREDIT_REQUEST. Guest-to-host bytes are written to the host
// socket as they come; what it does not take at once waits in a per-connection buffer of at
// most options.buf_alloc bytes, which is what the device advertises as its buf_alloc, with
// fwd_cnt = bytes written to the host program. A CREDIT_UPDATE goes to the guest when fwd_cnt
// has moved buf_alloc/4 past the last value the guest was told, and on CREDIT_REQUEST.
//
// Ending: the host program's EOF becomes SHUTDOWN(SEND) to the guest (after the data before
// it); the guest's SHUTDOWN(SEND) becomes shutdown(SHUT_WR) on the host socket once the
// buffered bytes are written; SHUTDOWN(RCV) stops reading the host socket. When both directions
// have ended, the device sends RST and closes the host socket. A guest RST closes the host
// socket at once (buffered bytes are dropped); a host socket error sends RST.
//
// Malformed packets never stop the device: a tx chain shorter than the header or not from
// guest_cid is dropped, and so is an RST for no connection. A packet to a CID other than 2 is
// answered with RST (nothing else is reachable). One with a bad length (over 64 KiB, beyond the
// chain, or any payload on a control op), a type other than STREAM, an unknown op, or a protocol
// violation (data past the device's credit or after SHUTDOWN(SEND), RESPONSE out of turn, a
// REQUEST for an open connection, a packet for an unknown connection) is answered with RST and
// ends the connection it names, if any. Only a malformed ring (Queue errors) or a failed
// notification stops the device until Reset() (FailDevice()).
//
// Memory: at most max_connections connections, each buffering at most buf_alloc bytes; RST
// replies not yet delivered are bounded too: while 256 are queued (the driver posts no rx
// buffers), the device stops taking tx chains. With no rx buffers posted it stops reading host
// sockets until the driver notifies the rx queue (no busy loop).
//
// Thread safety: as VirtioDevice. All processing, and the state changes of Activate(), Reset()
// and SendTransportReset(), run on the event loop thread; the configuration is immutable.
// Counters() and Metrics() may run on any thread and do not wait for the event loop.
class VsockDevice final : public VirtioDevice {
 public:
  static constexpr uint16_t kRxQueue = 0;
  static constexpr uint16_t kTxQueue = 1;
  static constexpr uint16_t kEventQueue = 2;
  static constexpr uint16_t kQueueSize = 256;
  // Largest payload of one packet in either direction (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
  static constexpr uint32_t kMaxPayload = 64 * 1024;
  // First host port assigned to host-initiated connections.
  static constexpr uint32_t kFirstHostPort = 1u << 30;
  // RST replies queued before the device stops taking tx chains.
  static constexpr size_t kMaxPendingRst = 256;
  // Packets sent / chains taken per event-loop wake-up before other events get their turn.
  static constexpr int kRxBatch = 256;
  static constexpr int kTxBatch = 256;

  // Checks `options` (EINVAL naming the bad one), then binds and listens on options.uds_path.
  // A Unix socket file already there that nobody listens on (a crashed VMM's) is replaced;
  // anything else there is an EADDRINUSE error. Errors of socket(2)/bind(2)/listen(2) and
  // timerfd_create(2) otherwise. The device removes the socket file when destroyed.
  static Result<std::unique_ptr<VsockDevice>> Create(VsockOptions options);
  VsockDevice(const VsockDevice&) = delete;
  VsockDevice& operator=(const VsockDevice&) = delete;
  // Resets an active device (closing all connections): destroy it before the objects its
  // ActivateContext points to.
  ~VsockDevice() override;

  uint32_t device_type() const override { return kDeviceTypeVsock; }
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override {
    return {kQueueSize, kQueueSize, kQueueSize};
  }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  // Starts listening on uds_path and processing the queues. Errors: EINVAL unless all three
  // queues are enabled; the event loop's Add() error.
  Status Activate(const ActivateContext& context) override;
  // Closes every connection (host sockets see EOF) and stops processing; the listening socket
  // stays bound, so host programs may connect and wait for the next activation.
  void Reset() override;
  // Host connections cannot be saved: the state is an empty object, and a device restored
  // from it sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET once activated, so the guest drops its
  // connections and re-reads guest_cid (what Firecracker does after a snapshot load).
  nlohmann::json SaveState() const override { return nlohmann::json::object(); }
  Status RestoreState(const nlohmann::json& state) override;
  // Counters() as JSON, with the same names.
  nlohmann::json Metrics() const override;

  // For snapshot restore, or whenever the host side lost the connections: closes every
  // connection and sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (§5.10.6.7),
  // which makes the driver drop its connections and re-read guest_cid. If the driver has no
  // event buffer posted, the event goes out as soon as it posts one. No-op when not active
  // (the driver has no connections then). Errors: none yet (a ring error stops the device, as
  // any). Thread-safe; waits for the event loop thread.
  Status SendTransportReset();

  // Open connections (for tests). Thread-safe; waits for the event loop thread.
  size_t connection_count();
  // What the device did since it was created. Thread-safe.
  VsockCounters Counters() const;

 private:
  struct Connection;
  struct PendingHost;
  // An rx chain popped and not used yet.
  struct RxChain {
    uint16_t head;
    std::vector<iovec> iov;  // its writable buffers
    uint64_t capacity;       // bytes in iov
  };
  // What Activate() was given.
  struct Active {
    const GuestMemory* memory;
    Queue* rx;
    Queue* tx;
    Queue* event;
    const EventFd* rx_event;
    const EventFd* tx_event;
    const EventFd* event_event;
    VirtioInterrupt* interrupt;
    EventLoop* loop;
  };
  // VsockCounters, as the loop thread increments them.
  struct AtomicCounters {
    RelaxedCounter rx_packets_count;
    RelaxedCounter rx_bytes_count;
    RelaxedCounter tx_packets_count;
    RelaxedCounter tx_bytes_count;
    RelaxedCounter conns_added;
    RelaxedCounter conns_removed;
  };
  // What an emission attempt for a connection did.
  enum class Emit { kNothing, kPacket, kClosed };

  VsockDevice(VsockOptions options, Fd listener, Fd timer, dev_t dev, ino_t ino);

  Status Start(const ActivateContext& context);  // Activate() on the loop thread
  void Stop();                                   // Reset() on the loop thread

  // Event handlers (loop thread).
  void OnRxNotify();
  void OnTxNotify();
  void OnEventNotify();
  void OnListener();
  void OnPendingHost(int fd);
  void OnConnection(uint64_t key);
  void OnTimer();

  // Queue processing. Each stops the device (Fail()) on a queue error.
  void ProcessRx();
  void ProcessTx();
  Status SendPendingEvent();

  // Handles one tx chain's packet; errors only for a broken queue.
  Status HandleTxChain(const DescriptorChain& chain);
  void HandlePacket(const VsockHeader& header, std::span<const iovec> iov);
  void HandleRequest(const VsockHeader& header);
  void HandleRw(Connection& conn, const VsockHeader& header, std::span<const iovec> iov);
  // Answers `header` with RST, closing the connection it names if any.
  void Reject(const VsockHeader& header);

  // Makes rx_chain_ hold a usable chain; false when the driver has none (then rx_paused_ is
  // set) or after a bounded number of unusable ones (then the rx queue event is signalled).
  Result<bool> EnsureRxChain(bool& used);
  // Puts the next packet for `conn` into rx_chain_, if it has one. Errors: queue errors.
  Result<Emit> EmitFor(Connection& conn);
  // Writes `header` into rx_chain_ (its payload is there already) and uses the chain.
  Status UseRxChain(const VsockHeader& header);

  // Connection bookkeeping. Functions returning bool may close `conn`: false means it is gone.
  VsockHeader HeaderFor(Connection& conn, uint16_t op);
  int64_t PeerCredit(const Connection& conn) const;
  bool HasRxWork(const Connection& conn) const;
  void ScheduleRx(Connection& conn);
  void MaybeCreditUpdate(Connection& conn);
  bool FlushToHost(Connection& conn);
  bool MaybeFinish(Connection& conn);
  // Watches conn's socket for what the device waits for now (input, room for output).
  bool Rewatch(Connection& conn);
  // Closes `conn`'s host socket and forgets it; with `send_rst` the guest gets RST for it.
  void Close(Connection& conn, bool send_rst);
  // Closes every connection without RST and drops queued packets.
  void CloseAll();
  void EnqueueRst(uint64_t src_cid, uint32_t src_port, uint32_t dst_port, uint16_t type);
  Connection* Find(uint32_t local_port, uint32_t peer_port);
  uint32_t AllocateHostPort(uint32_t peer_port);
  size_t OpenCount() const { return connections_.size() + pending_host_.size(); }
  void StartHostConnection(Fd fd, uint32_t port);
  // Arms the timer for the earliest connect deadline (or listener back-off), or disarms it.
  void ArmTimer();
  // Stops all processing until Reset() and reports DEVICE_NEEDS_RESET.
  void Fail(const Error& error);
  void Unwatch();

  const VsockOptions options_;
  const Fd listener_;
  const Fd timer_;  // timerfd: connect timeouts
  const dev_t socket_dev_;
  const ino_t socket_ino_;

  // The loop of the active device: set by Activate(), cleared by Reset() (vCPU threads); read
  // by SendTransportReset() and connection_count() on any thread.
  std::atomic<EventLoop*> loop_{nullptr};

  // Loop thread state (and Activate()/Reset() through EventLoop::RunSync()).
  std::optional<Active> active_;
  bool broken_ = false;
  bool rx_paused_ = false;   // no rx buffers: waiting for the driver to notify the rx queue
  bool tx_blocked_ = false;  // too many RST replies queued: waiting for rx buffers
  bool event_pending_ = false;
  bool reset_on_activate_ = false;  // restored from a snapshot: send a transport reset
  std::optional<RxChain> rx_chain_;
  std::vector<iovec> scratch_iov_;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;  // by Key()
  std::unordered_map<int, std::unique_ptr<PendingHost>> pending_host_;     // by fd
  std::unordered_set<uint32_t> host_ports_;
  uint32_t next_host_port_ = kFirstHostPort;
  std::deque<uint64_t> rx_ready_;  // connections with packets to send, round robin
  std::deque<VsockHeader> rst_queue_;
  bool timer_armed_ = false;
  bool listener_watched_ = false;
  std::optional<std::chrono::steady_clock::time_point> listener_resume_;  // accept back-off
  bool error_logged_ = false;

  AtomicCounters counters_;  // incremented on the loop thread, read on any
};

}  // namespace tern::virtio
