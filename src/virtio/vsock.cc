// virtio-vsock (virtio 1.2 §5.10) with Firecracker-style hybrid vsock: guest AF_VSOCK stream
// connections relayed to host AF_UNIX stream sockets, with credit-based flow control.
#include "virtio/vsock.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string_view>

namespace tern::virtio {
namespace {

using Clock = std::chrono::steady_clock;

// UIO_MAXIOV: the most iovecs readv(2)/sendmsg(2) take.
constexpr size_t kMaxIov = 1024;
// "CONNECT 4294967294\r" is 19 bytes; anything much longer is not a CONNECT line.
constexpr size_t kMaxConnectLine = 32;
// Host connections accepted per wake-up of the listening socket.
constexpr int kAcceptBatch = 64;
// After accept(2) fails for lack of descriptors (EMFILE), the listener rests this long.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
// A connection's host-bound buffer is given back to the allocator when it empties above this.
constexpr size_t kKeepBufferCapacity = 64 * 1024;

uint64_t Key(uint32_t local_port, uint32_t peer_port) {
  return (uint64_t{local_port} << 32) | peer_port;
}

template <typename T>
void PutLe(uint8_t* out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}
template <typename T>
T GetLe(const uint8_t* in) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(in[i]) << (8 * i);
  return value;
}

bool IsKnownOp(uint16_t op) { return op >= kVsockOpRequest && op <= kVsockOpCreditRequest; }

// The port of a "CONNECT <port>\n" line (without the newline; a trailing '\r' is allowed).
std::optional<uint32_t> ParseConnectLine(std::string_view line) {
  constexpr std::string_view kPrefix = "CONNECT ";
  if (line.ends_with('\r')) line.remove_suffix(1);
  if (!line.starts_with(kPrefix)) return std::nullopt;
  line.remove_prefix(kPrefix.size());
  if (line.empty() || line.size() > 10) return std::nullopt;
  uint64_t port = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), port);
  if (ec != std::errc() || end != line.data() + line.size() || port >= kVsockPortAny) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(port);
}

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Error("Unix socket path \"" + path + "\" is empty or longer than " +
                     std::to_string(sizeof(addr.sun_path) - 1) + " bytes",
                 EINVAL);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Result<Fd> UnixSocket() {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::FromErrno("socket(AF_UNIX)");
  return fd;
}

// Binds `fd` to `path`, replacing a Unix socket file there that nobody listens on.
Status BindReplacingStale(int fd, const std::string& path, const sockaddr_un& addr) {
  auto bind_it = [&] {
    return ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  };
  if (bind_it()) return Ok();
  if (errno != EADDRINUSE) return Error::FromErrno("bind(" + path + ")");
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    TERN_ASSIGN_OR_RETURN(Fd probe, UnixSocket());
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) < 0 &&
        errno == ECONNREFUSED && ::unlink(path.c_str()) == 0 && bind_it()) {
      return Ok();
    }
  }
  return Error(path + " exists and is not a stale Unix socket (another VMM's?)", EADDRINUSE);
}

}  // namespace

std::array<uint8_t, kVsockHeaderSize> EncodeVsockHeader(const VsockHeader& h) {
  std::array<uint8_t, kVsockHeaderSize> out;
  uint8_t* p = out.data();
  PutLe(p + 0, h.src_cid);
  PutLe(p + 8, h.dst_cid);
  PutLe(p + 16, h.src_port);
  PutLe(p + 20, h.dst_port);
  PutLe(p + 24, h.len);
  PutLe(p + 28, h.type);
  PutLe(p + 30, h.op);
  PutLe(p + 32, h.flags);
  PutLe(p + 36, h.buf_alloc);
  PutLe(p + 40, h.fwd_cnt);
  return out;
}

VsockHeader DecodeVsockHeader(std::span<const uint8_t, kVsockHeaderSize> bytes) {
  const uint8_t* p = bytes.data();
  return VsockHeader{
      .src_cid = GetLe<uint64_t>(p + 0),
      .dst_cid = GetLe<uint64_t>(p + 8),
      .src_port = GetLe<uint32_t>(p + 16),
      .dst_port = GetLe<uint32_t>(p + 20),
      .len = GetLe<uint32_t>(p + 24),
      .type = GetLe<uint16_t>(p + 28),
      .op = GetLe<uint16_t>(p + 30),
      .flags = GetLe<uint32_t>(p + 32),
      .buf_alloc = GetLe<uint32_t>(p + 36),
      .fwd_cnt = GetLe<uint32_t>(p + 40),
  };
}

// One connection between a guest port and a host Unix socket. Counters are mod 2^32 (§5.10.6.3).
struct VsockDevice::Connection {
  uint32_t local_port = 0;  // the host side's vsock port
  uint32_t peer_port = 0;   // the guest's
  Fd fd;
  bool host_initiated = false;
  bool established = false;  // false: REQUEST sent, waiting for RESPONSE (host-initiated only)
  Clock::time_point deadline;
  uint32_t events = 0;  // epoll events fd is watched for; 0: not in the loop

  // Guest to host.
  uint32_t rx_cnt = 0;             // payload bytes received from the guest
  uint32_t fwd_cnt = 0;            // of those, written to the host socket
  uint32_t last_fwd_cnt_sent = 0;  // fwd_cnt in the last packet to the guest
  std::vector<uint8_t> out;        // bytes for the host socket not written yet, from out_head
  size_t out_head = 0;
  size_t out_prefix = 0;      // bytes at out_head that are not guest payload ("OK <port>\n")
  bool peer_no_send = false;  // guest SHUTDOWN(SEND)
  bool peer_no_recv = false;  // guest SHUTDOWN(RCV)
  bool host_write_shut = false;

  // Host to guest.
  uint32_t tx_cnt = 0;  // payload bytes sent to the guest
  uint32_t peer_buf_alloc = 0;
  uint32_t peer_fwd_cnt = 0;
  bool readable = false;  // the host socket may have input (not watched for it meanwhile)
  bool host_eof = false;
  bool credit_requested = false;

  // Packets to send, in this order.
  bool need_request = false;
  bool need_response = false;
  bool need_credit_request = false;
  bool need_credit_update = false;
  bool need_shutdown = false;
  bool shutdown_sent = false;
  bool in_rx_ready = false;

  uint64_t key() const { return Key(local_port, peer_port); }
  bool out_empty() const { return out_head == out.size(); }
};

// A host program connected to uds_path that has not sent its CONNECT line yet.
struct VsockDevice::PendingHost {
  Fd fd;
  std::string line;
  Clock::time_point deadline;
};

Result<std::unique_ptr<VsockDevice>> VsockDevice::Create(VsockOptions options) {
  auto invalid = [](const std::string& what) { return Error("virtio-vsock: " + what, EINVAL); };
  if (options.guest_cid < 3 || options.guest_cid > 0xfffffffe) {
    return invalid("guest_cid " + std::to_string(options.guest_cid) + " is not in 3..4294967294");
  }
  if (options.max_connections < 1 || options.max_connections > 65536) {
    return invalid("max_connections must be in 1..65536");
  }
  if (options.buf_alloc < 4096 || options.buf_alloc > (16u << 20)) {
    return invalid("buf_alloc must be in 4 KiB..16 MiB");
  }
  if (options.connect_timeout < std::chrono::milliseconds(1) ||
      options.connect_timeout > std::chrono::hours(1)) {
    return invalid("connect_timeout must be in 1 ms..1 h");
  }
  Result<sockaddr_un> addr = UnixAddress(options.uds_path);
  if (!addr.ok()) return addr.error().WithContext("virtio-vsock: uds_path");
  TERN_ASSIGN_OR_RETURN(Fd listener, UnixSocket());
  Status bound = BindReplacingStale(listener.get(), options.uds_path, *addr);
  if (!bound.ok()) return bound.error().WithContext("virtio-vsock");
  struct stat st;
  if (::stat(options.uds_path.c_str(), &st) < 0) {
    return Error::FromErrno("virtio-vsock: stat(" + options.uds_path + ")");
  }
  // From here on the socket file is ours: remove it on failure.
  auto fail = [&](Error error) {
    ::unlink(options.uds_path.c_str());
    return error;
  };
  if (::listen(listener.get(), 128) < 0) {
    return fail(Error::FromErrno("virtio-vsock: listen(" + options.uds_path + ")"));
  }
  Fd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer.valid()) return fail(Error::FromErrno("virtio-vsock: timerfd_create"));
  return std::unique_ptr<VsockDevice>(new VsockDevice(std::move(options), std::move(listener),
                                                      std::move(timer), st.st_dev, st.st_ino));
}

VsockDevice::VsockDevice(VsockOptions options, Fd listener, Fd timer, dev_t dev, ino_t ino)
    : options_(std::move(options)),
      listener_(std::move(listener)),
      timer_(std::move(timer)),
      socket_dev_(dev),
      socket_ino_(ino) {}

VsockDevice::~VsockDevice() {
  Reset();
  // Remove the socket file unless someone replaced it meanwhile.
  struct stat st;
  if (::stat(options_.uds_path.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
      st.st_ino == socket_ino_) {
    ::unlink(options_.uds_path.c_str());
  }
}

uint64_t VsockDevice::device_features() const { return kVsockFeatureStream | kCommonFeatures; }

void VsockDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  uint8_t config[8];
  PutLe(config, options_.guest_cid);  // struct virtio_vsock_config { le64 guest_cid; }
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset < sizeof(config) && i < sizeof(config) - offset ? config[offset + i] : 0;
  }
}

void VsockDevice::WriteConfig(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {}

Status VsockDevice::Activate(const ActivateContext& context) {
  TERN_RETURN_IF_ERROR(CheckActivateContext("virtio-vsock", context, 3));
  for (const Queue& queue : *context.queues) {
    if (!queue.ready()) {
      return Error("virtio-vsock: the driver must enable the rx, tx and event queues", EINVAL);
    }
  }
  Status status;
  context.loop->RunSync([&] {
    status = Start(context);
    if (status.ok() && reset_on_activate_) {
      reset_on_activate_ = false;
      event_pending_ = true;
      status = SendPendingEvent();
      if (!status.ok()) Stop();
    }
  });
  if (status.ok()) loop_.store(context.loop);
  return status;
}

Status VsockDevice::RestoreState(const nlohmann::json& state) {
  if (!state.is_object() || !state.empty()) {
    return Error("virtio-vsock: the snapshot state must be an empty object", EINVAL);
  }
  if (loop_.load() != nullptr) return Error("virtio-vsock: restore into an active device", EINVAL);
  reset_on_activate_ = true;
  return Ok();
}

Status VsockDevice::Start(const ActivateContext& context) {
  std::vector<Queue>& queues = *context.queues;
  active_ = Active{
      .memory = context.memory,
      .rx = &queues[kRxQueue],
      .tx = &queues[kTxQueue],
      .event = &queues[kEventQueue],
      .rx_event = &context.queue_events[kRxQueue],
      .tx_event = &context.queue_events[kTxQueue],
      .event_event = &context.queue_events[kEventQueue],
      .interrupt = context.interrupt,
      .loop = context.loop,
  };
  EventLoop& loop = *context.loop;
  Status status = loop.Add(active_->rx_event->fd(), [this] { OnRxNotify(); });
  if (status.ok()) status = loop.Add(active_->tx_event->fd(), [this] { OnTxNotify(); });
  if (status.ok()) status = loop.Add(active_->event_event->fd(), [this] { OnEventNotify(); });
  if (status.ok()) status = loop.Add(timer_.get(), [this] { OnTimer(); });
  if (status.ok()) status = loop.Add(listener_.get(), [this] { OnListener(); });
  if (!status.ok()) {
    Stop();
    return status.error().WithContext("virtio-vsock");
  }
  listener_watched_ = true;
  return Ok();
}

void VsockDevice::Reset() {
  EventLoop* loop = loop_.exchange(nullptr);
  if (loop == nullptr) return;
  loop->RunSync([this] { Stop(); });
}

void VsockDevice::Stop() {
  if (!active_) return;
  Unwatch();
  CloseAll();
  for (auto& [fd, pending] : pending_host_) (void)active_->loop->Remove(fd);
  pending_host_.clear();
  itimerspec off = {};
  ::timerfd_settime(timer_.get(), 0, &off, nullptr);
  timer_armed_ = false;
  listener_resume_.reset();
  broken_ = false;
  rx_paused_ = false;
  tx_blocked_ = false;
  event_pending_ = false;
  rx_chain_.reset();
  error_logged_ = false;
  active_.reset();
}

Status VsockDevice::SendTransportReset() {
  EventLoop* loop = loop_.load();
  if (loop == nullptr) return Ok();
  Status status;
  loop->RunSync([&] {
    if (!active_ || broken_) return;
    CloseAll();
    if (tx_blocked_) {  // the RST replies it waited to deliver are gone
      tx_blocked_ = false;
      status = active_->tx_event->Write();
    }
    event_pending_ = true;
    if (status.ok()) status = SendPendingEvent();
    if (!status.ok()) Fail(status.error());
  });
  return Ok();
}

size_t VsockDevice::connection_count() {
  EventLoop* loop = loop_.load();
  if (loop == nullptr) return 0;
  size_t count = 0;
  loop->RunSync([&] { count = connections_.size(); });
  return count;
}

VsockCounters VsockDevice::Counters() const {
  return VsockCounters{
      .rx_packets_count = counters_.rx_packets_count.Load(),
      .rx_bytes_count = counters_.rx_bytes_count.Load(),
      .tx_packets_count = counters_.tx_packets_count.Load(),
      .tx_bytes_count = counters_.tx_bytes_count.Load(),
      .conns_added = counters_.conns_added.Load(),
      .conns_removed = counters_.conns_removed.Load(),
  };
}

nlohmann::json VsockDevice::Metrics() const {
  VsockCounters c = Counters();
  return {{"rx_packets_count", c.rx_packets_count}, {"rx_bytes_count", c.rx_bytes_count},
          {"tx_packets_count", c.tx_packets_count}, {"tx_bytes_count", c.tx_bytes_count},
          {"conns_added", c.conns_added},           {"conns_removed", c.conns_removed}};
}

// ---- Event handlers ------------------------------------------------------------------------

void VsockDevice::OnRxNotify() {
  (void)active_->rx_event->Read();
  if (broken_) return;
  rx_paused_ = false;
  ProcessRx();
}

void VsockDevice::OnTxNotify() {
  (void)active_->tx_event->Read();
  if (broken_ || tx_blocked_) return;  // blocked: ProcessRx() signals the event again
  ProcessTx();
  ProcessRx();
}

void VsockDevice::OnEventNotify() {
  (void)active_->event_event->Read();
  if (broken_ || !event_pending_) return;
  if (Status status = SendPendingEvent(); !status.ok()) Fail(status.error());
}

void VsockDevice::OnListener() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN) break;
      // Out of descriptors or memory: the listener stays readable, so rest rather than spin.
      spdlog::warn("virtio-vsock: {}",
                   Error::FromErrno("accept4(" + options_.uds_path + ")").ToString());
      (void)active_->loop->Remove(listener_.get());
      listener_watched_ = false;
      listener_resume_ = Clock::now() + kAcceptBackoff;
      break;
    }
    if (OpenCount() >= options_.max_connections) {
      spdlog::debug("virtio-vsock: connection limit reached; closing a host connection");
      continue;
    }
    int raw = fd.get();
    auto pending = std::make_unique<PendingHost>(
        PendingHost{std::move(fd), "", Clock::now() + options_.connect_timeout});
    if (!active_->loop->Add(raw, [this, raw] { OnPendingHost(raw); }).ok()) continue;
    pending_host_.emplace(raw, std::move(pending));
  }
  ArmTimer();
}

void VsockDevice::OnPendingHost(int fd) {
  auto it = pending_host_.find(fd);
  if (it == pending_host_.end()) return;
  PendingHost& pending = *it->second;
  // One byte at a time, so that nothing after the line is taken from the socket.
  bool complete = false;
  while (!complete) {
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n != 1) break;  // EOF or error: the host program gave up
    if (c == '\n') {
      complete = true;
    } else if (pending.line.size() < kMaxConnectLine) {
      pending.line.push_back(c);
    } else {
      break;
    }
  }
  std::optional<uint32_t> port = complete ? ParseConnectLine(pending.line) : std::nullopt;
  if (complete && !port) spdlog::debug("virtio-vsock: bad host request \"{}\"", pending.line);
  (void)active_->loop->Remove(fd);
  Fd owned = std::move(pending.fd);
  pending_host_.erase(it);
  if (port) {
    StartHostConnection(std::move(owned), *port);
    ProcessRx();
  }
}

void VsockDevice::OnConnection(uint64_t key) {
  auto it = connections_.find(key);
  if (it == connections_.end()) return;
  Connection& conn = *it->second;
  bool input = (conn.events & EPOLLIN) != 0;
  if (input && (conn.events & EPOLLOUT)) {
    // Both watched: find out which one woke us.
    pollfd pfd = {.fd = conn.fd.get(), .events = POLLIN, .revents = 0};
    input = ::poll(&pfd, 1, 0) == 1 && pfd.revents != 0;
  }
  if (!conn.out_empty() && !FlushToHost(conn)) return ProcessRx();
  if (input) {
    conn.readable = true;
    ScheduleRx(conn);
    (void)Rewatch(conn);
  }
  ProcessRx();
}

void VsockDevice::OnTimer() {
  uint64_t expirations;
  (void)!::read(timer_.get(), &expirations, sizeof(expirations));
  timer_armed_ = false;
  Clock::time_point now = Clock::now();
  for (auto it = pending_host_.begin(); it != pending_host_.end();) {
    if (it->second->deadline > now) {
      ++it;
      continue;
    }
    (void)active_->loop->Remove(it->first);
    it = pending_host_.erase(it);
  }
  std::vector<uint64_t> expired;
  for (auto& [key, conn] : connections_) {
    if (!conn->established && conn->deadline <= now) expired.push_back(key);
  }
  for (uint64_t key : expired) {
    spdlog::debug("virtio-vsock: the guest did not answer a connection request in time");
    Close(*connections_.at(key), /*send_rst=*/true);
  }
  if (listener_resume_ && *listener_resume_ <= now) {
    listener_resume_.reset();
    if (active_->loop->Add(listener_.get(), [this] { OnListener(); }).ok()) {
      listener_watched_ = true;
    }
  }
  ArmTimer();
  ProcessRx();
}

// ---- Device to driver (rx queue) -----------------------------------------------------------

void VsockDevice::ProcessRx() {
  if (!active_ || broken_ || rx_paused_) return;
  const Active& active = *active_;
  bool used = false;
  bool more = false;
  int packets = 0;
  int visits = 0;
  while (!rst_queue_.empty() || !rx_ready_.empty()) {
    if (packets >= kRxBatch || visits >= 2 * kRxBatch) {
      more = true;
      break;
    }
    Result<bool> have = EnsureRxChain(used);
    if (!have.ok()) return Fail(have.error());
    if (!*have) break;
    if (!rst_queue_.empty()) {
      VsockHeader header = rst_queue_.front();
      rst_queue_.pop_front();
      if (Status status = UseRxChain(header); !status.ok()) return Fail(status.error());
      used = true;
      ++packets;
      continue;
    }
    uint64_t key = rx_ready_.front();
    rx_ready_.pop_front();
    ++visits;
    auto it = connections_.find(key);
    if (it == connections_.end()) continue;
    it->second->in_rx_ready = false;
    Result<Emit> emit = EmitFor(*it->second);
    if (!emit.ok()) return Fail(emit.error());
    if (*emit == Emit::kPacket) {
      used = true;
      ++packets;
    }
    // The connection may be gone (closed after its last packet, or on a socket error).
    it = connections_.find(key);
    if (it != connections_.end()) ScheduleRx(*it->second);
  }
  Status status;
  if (more) status = active.rx_event->Write();
  if (status.ok() && used) {
    status = NotifyIfNeeded(*active.rx, kRxQueue, *active.memory, *active.interrupt);
  }
  if (status.ok() && tx_blocked_ && rst_queue_.size() < kMaxPendingRst) {
    tx_blocked_ = false;
    status = active.tx_event->Write();
  }
  if (!status.ok()) Fail(status.error());
}

Result<bool> VsockDevice::EnsureRxChain(bool& used) {
  const Active& active = *active_;
  // A driver that keeps posting unusable chains could keep this going: after twice the queue
  // size, the rx queue event brings the device back once other descriptors had their turn.
  for (uint32_t round = 0; !rx_chain_; ++round) {
    if (round == 2u * active.rx->size()) {
      TERN_RETURN_IF_ERROR(active.rx_event->Write());
      return false;
    }
    TERN_ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, active.rx->Pop(*active.memory));
    if (!chain) {
      TERN_ASSIGN_OR_RETURN(bool more, active.rx->EnableNotification(*active.memory));
      if (more) continue;
      rx_paused_ = true;
      return false;
    }
    Result<std::vector<iovec>> iov = WritableIovecs(*active.memory, *chain);
    if (!iov.ok() || chain->readable_bytes != 0 || chain->writable_bytes <= kVsockHeaderSize ||
        iov->size() > kMaxIov) {
      // Unusable: back to the driver with nothing in it.
      TERN_RETURN_IF_ERROR(active.rx->AddUsed(*active.memory, chain->head, 0));
      used = true;
      continue;
    }
    rx_chain_ = RxChain{chain->head, std::move(*iov), chain->writable_bytes};
  }
  return true;
}

Status VsockDevice::UseRxChain(const VsockHeader& header) {
  std::array<uint8_t, kVsockHeaderSize> bytes = EncodeVsockHeader(header);
  CopyToIovecs(rx_chain_->iov, 0, bytes);
  uint16_t head = rx_chain_->head;
  rx_chain_.reset();
  counters_.rx_packets_count.Add();
  counters_.rx_bytes_count.Add(header.len);  // 0 but for RW
  return active_->rx->AddUsed(*active_->memory, head,
                              static_cast<uint32_t>(kVsockHeaderSize + header.len));
}

Result<VsockDevice::Emit> VsockDevice::EmitFor(Connection& conn) {
  auto send = [&](uint16_t op, uint32_t flags = 0) -> Result<Emit> {
    VsockHeader header = HeaderFor(conn, op);
    header.flags = flags;
    TERN_RETURN_IF_ERROR(UseRxChain(header));
    return Emit::kPacket;
  };
  if (conn.need_request) {
    conn.need_request = false;
    return send(kVsockOpRequest);
  }
  if (conn.need_response) {
    conn.need_response = false;
    return send(kVsockOpResponse);
  }
  bool wants_data = conn.established && conn.readable && !conn.host_eof && !conn.peer_no_recv;
  int64_t credit = PeerCredit(conn);
  if (wants_data && credit > 0) {
    uint64_t room = rx_chain_->capacity - kVsockHeaderSize;
    uint64_t want = std::min<uint64_t>({room, kMaxPayload, static_cast<uint64_t>(credit)});
    scratch_iov_.clear();
    SliceIovecs(rx_chain_->iov, kVsockHeaderSize, want, scratch_iov_);
    ssize_t n;
    do {
      n = ::readv(conn.fd.get(), scratch_iov_.data(), static_cast<int>(scratch_iov_.size()));
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      VsockHeader header = HeaderFor(conn, kVsockOpRw);
      header.len = static_cast<uint32_t>(n);
      conn.tx_cnt += static_cast<uint32_t>(n);
      TERN_RETURN_IF_ERROR(UseRxChain(header));
      return Emit::kPacket;
    }
    if (n < 0 && errno != EAGAIN) {
      spdlog::debug("virtio-vsock: {}", Error::FromErrno("read from host socket").ToString());
      Close(conn, /*send_rst=*/true);
      return Emit::kClosed;
    }
    conn.readable = false;
    if (n == 0) {
      conn.host_eof = true;
      conn.need_shutdown = true;
    }
    if (!Rewatch(conn)) return Emit::kClosed;
  } else if (wants_data && !conn.credit_requested) {
    // Input waits for credit: ask once; the guest's next packet carries its fwd_cnt anyway.
    conn.credit_requested = true;
    conn.need_credit_request = true;
  }
  if (conn.need_credit_request) {
    conn.need_credit_request = false;
    return send(kVsockOpCreditRequest);
  }
  if (conn.need_credit_update) return send(kVsockOpCreditUpdate);
  if (conn.need_shutdown) {
    conn.need_shutdown = false;
    conn.shutdown_sent = true;
    Result<Emit> emit = send(kVsockOpShutdown, kVsockShutdownSend);
    if (emit.ok()) (void)MaybeFinish(conn);
    return emit;
  }
  return Emit::kNothing;
}

// ---- Driver to device (tx queue) -----------------------------------------------------------

void VsockDevice::ProcessTx() {
  if (!active_ || broken_) return;
  const Active& active = *active_;
  bool used = false;
  for (int chains = 0;; ++chains) {
    if (rst_queue_.size() >= kMaxPendingRst) {
      // The driver is not taking replies: stop taking requests until it does.
      tx_blocked_ = true;
      break;
    }
    if (chains == kTxBatch) {
      if (Status status = active.tx_event->Write(); !status.ok()) return Fail(status.error());
      break;
    }
    Result<std::optional<DescriptorChain>> chain = active.tx->Pop(*active.memory);
    if (!chain.ok()) return Fail(chain.error());
    if (!*chain) {
      Result<bool> more = active.tx->EnableNotification(*active.memory);
      if (!more.ok()) return Fail(more.error());
      if (*more) continue;
      break;
    }
    if (Status status = HandleTxChain(**chain); !status.ok()) return Fail(status.error());
    if (broken_) return;
    Status status = active.tx->AddUsed(*active.memory, (*chain)->head, 0);
    if (!status.ok()) return Fail(status.error());
    used = true;
  }
  if (used) {
    Status status = NotifyIfNeeded(*active.tx, kTxQueue, *active.memory, *active.interrupt);
    if (!status.ok()) Fail(status.error());
  }
}

Status VsockDevice::HandleTxChain(const DescriptorChain& chain) {
  TERN_ASSIGN_OR_RETURN(std::vector<iovec> iov, ReadableIovecs(*active_->memory, chain));
  auto malformed = [&](const char* why) {
    if (!error_logged_) {
      spdlog::warn("virtio-vsock: malformed packet from the guest ({}); not logging more", why);
      error_logged_ = true;
    }
  };
  if (chain.readable_bytes < kVsockHeaderSize) {
    malformed("shorter than its header");
    return Ok();
  }
  std::array<uint8_t, kVsockHeaderSize> bytes;
  CopyFromIovecs(iov, 0, bytes);
  VsockHeader header = DecodeVsockHeader(bytes);
  counters_.tx_packets_count.Add();
  if (header.src_cid != options_.guest_cid) {
    malformed("wrong source CID");
    return Ok();
  }
  if (header.op == kVsockOpRst) {
    if (header.dst_cid != kVsockHostCid) return Ok();
    if (Connection* conn = Find(header.dst_port, header.src_port)) Close(*conn, false);
    return Ok();
  }
  bool bad_len = header.op == kVsockOpRw ? header.len > kMaxPayload ||
                                               kVsockHeaderSize + header.len > chain.readable_bytes
                                         : header.len != 0;
  if (header.dst_cid != kVsockHostCid) {
    // Nobody else is reachable through this device.
    EnqueueRst(header.dst_cid, header.dst_port, header.src_port, header.type);
  } else if (header.type != kVsockTypeStream) {
    malformed("not a stream packet");
    Reject(header);
  } else if (!IsKnownOp(header.op)) {
    malformed("unknown op");
    Reject(header);
  } else if (bad_len || iov.size() > kMaxIov) {
    malformed("bad length");
    Reject(header);
  } else {
    HandlePacket(header, iov);
  }
  return Ok();
}

void VsockDevice::HandlePacket(const VsockHeader& header, std::span<const iovec> iov) {
  Connection* conn = Find(header.dst_port, header.src_port);
  if (header.op == kVsockOpRequest) {
    if (conn != nullptr) return Reject(header);
    return HandleRequest(header);
  }
  if (conn == nullptr) return Reject(header);
  uint64_t key = conn->key();
  conn->peer_buf_alloc = header.buf_alloc;
  conn->peer_fwd_cnt = header.fwd_cnt;
  if (PeerCredit(*conn) > 0) conn->credit_requested = false;
  switch (header.op) {
    case kVsockOpResponse:
      if (!conn->host_initiated || conn->established) return Reject(header);
      {
        conn->established = true;
        std::string ok = "OK " + std::to_string(conn->local_port) + "\n";
        conn->out.assign(ok.begin(), ok.end());
        conn->out_head = 0;
        conn->out_prefix = ok.size();
        if (!FlushToHost(*conn)) return;
      }
      break;
    case kVsockOpShutdown:
      if (!conn->established) return Reject(header);
      conn->peer_no_recv |= (header.flags & kVsockShutdownRcv) != 0;
      conn->peer_no_send |= (header.flags & kVsockShutdownSend) != 0;
      if (!MaybeFinish(*conn) || !Rewatch(*conn)) return;
      break;
    case kVsockOpRw:
      if (!conn->established || conn->peer_no_send) return Reject(header);
      HandleRw(*conn, header, iov);
      break;
    case kVsockOpCreditUpdate:
      break;
    case kVsockOpCreditRequest:
      conn->need_credit_update = true;
      break;
  }
  auto it = connections_.find(key);
  if (it != connections_.end()) ScheduleRx(*it->second);
}

void VsockDevice::HandleRequest(const VsockHeader& header) {
  auto refuse = [&](const std::string& why) {
    spdlog::debug("virtio-vsock: refusing guest connection to port {}: {}", header.dst_port, why);
    EnqueueRst(kVsockHostCid, header.dst_port, header.src_port, header.type);
  };
  if (OpenCount() >= options_.max_connections) return refuse("connection limit reached");
  std::string path = options_.uds_path + "_" + std::to_string(header.dst_port);
  Result<sockaddr_un> addr = UnixAddress(path);
  if (!addr.ok()) return refuse(addr.error().ToString());
  Result<Fd> fd = UnixSocket();
  if (!fd.ok()) return refuse(fd.error().ToString());
  if (::connect(fd->get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) < 0) {
    return refuse(Error::FromErrno("connect(" + path + ")").ToString());
  }
  auto conn = std::make_unique<Connection>();
  conn->local_port = header.dst_port;
  conn->peer_port = header.src_port;
  conn->fd = std::move(*fd);
  conn->established = true;
  conn->peer_buf_alloc = header.buf_alloc;
  conn->peer_fwd_cnt = header.fwd_cnt;
  conn->need_response = true;
  Connection& ref = *conn;
  connections_.emplace(ref.key(), std::move(conn));
  counters_.conns_added.Add();
  ScheduleRx(ref);
  (void)Rewatch(ref);
}

void VsockDevice::HandleRw(Connection& conn, const VsockHeader& header,
                           std::span<const iovec> iov) {
  if (uint32_t buffered = conn.rx_cnt - conn.fwd_cnt; buffered + header.len > options_.buf_alloc) {
    spdlog::debug("virtio-vsock: the guest sent past its credit");
    return Reject(header);
  }
  if (header.len == 0) return;
  conn.rx_cnt += header.len;
  counters_.tx_bytes_count.Add(header.len);
  size_t written = 0;
  if (conn.out_empty()) {
    scratch_iov_.clear();
    SliceIovecs(iov, kVsockHeaderSize, header.len, scratch_iov_);
    msghdr msg = {};
    msg.msg_iov = scratch_iov_.data();
    msg.msg_iovlen = scratch_iov_.size();
    ssize_t n;
    do {
      n = ::sendmsg(conn.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
      spdlog::debug("virtio-vsock: {}", Error::FromErrno("write to host socket").ToString());
      return Close(conn, /*send_rst=*/true);
    }
    written = n > 0 ? static_cast<size_t>(n) : 0;
    conn.fwd_cnt += static_cast<uint32_t>(written);
  }
  if (written < header.len) {
    // The rest waits for the host program; credit bounds it by buf_alloc.
    if (conn.out_head > 0) {
      conn.out.erase(conn.out.begin(), conn.out.begin() + static_cast<ptrdiff_t>(conn.out_head));
      conn.out_head = 0;
    }
    size_t old = conn.out.size();
    size_t rest = header.len - written;
    conn.out.resize(old + rest);
    CopyFromIovecs(iov, kVsockHeaderSize + written, std::span(conn.out).subspan(old, rest));
  }
  MaybeCreditUpdate(conn);
  (void)Rewatch(conn);
}

void VsockDevice::Reject(const VsockHeader& header) {
  if (Connection* conn = Find(header.dst_port, header.src_port)) Close(*conn, false);
  EnqueueRst(kVsockHostCid, header.dst_port, header.src_port, header.type);
}

// ---- Connections ---------------------------------------------------------------------------

void VsockDevice::StartHostConnection(Fd fd, uint32_t port) {
  auto conn = std::make_unique<Connection>();
  conn->local_port = AllocateHostPort(port);
  conn->peer_port = port;
  conn->fd = std::move(fd);
  conn->host_initiated = true;
  conn->deadline = Clock::now() + options_.connect_timeout;
  conn->need_request = true;
  host_ports_.insert(conn->local_port);
  Connection& ref = *conn;
  connections_.emplace(ref.key(), std::move(conn));
  counters_.conns_added.Add();
  ScheduleRx(ref);
  ArmTimer();
}

uint32_t VsockDevice::AllocateHostPort(uint32_t peer_port) {
  while (true) {
    uint32_t port = next_host_port_++;
    if (next_host_port_ == kVsockPortAny) next_host_port_ = kFirstHostPort;
    if (!host_ports_.contains(port) && !connections_.contains(Key(port, peer_port))) return port;
  }
}

VsockDevice::Connection* VsockDevice::Find(uint32_t local_port, uint32_t peer_port) {
  auto it = connections_.find(Key(local_port, peer_port));
  return it == connections_.end() ? nullptr : it->second.get();
}

VsockHeader VsockDevice::HeaderFor(Connection& conn, uint16_t op) {
  // Every packet tells the guest our fwd_cnt: no separate CREDIT_UPDATE needed for it.
  conn.last_fwd_cnt_sent = conn.fwd_cnt;
  conn.need_credit_update = false;
  return VsockHeader{
      .src_cid = kVsockHostCid,
      .dst_cid = options_.guest_cid,
      .src_port = conn.local_port,
      .dst_port = conn.peer_port,
      .len = 0,
      .type = kVsockTypeStream,
      .op = op,
      .flags = 0,
      .buf_alloc = options_.buf_alloc,
      .fwd_cnt = conn.fwd_cnt,
  };
}

int64_t VsockDevice::PeerCredit(const Connection& conn) const {
  return int64_t{conn.peer_buf_alloc} -
         int64_t{static_cast<uint32_t>(conn.tx_cnt - conn.peer_fwd_cnt)};
}

bool VsockDevice::HasRxWork(const Connection& conn) const {
  if (conn.need_request || conn.need_response || conn.need_credit_request ||
      conn.need_credit_update || conn.need_shutdown) {
    return true;
  }
  bool wants_data = conn.established && conn.readable && !conn.host_eof && !conn.peer_no_recv;
  return wants_data && (PeerCredit(conn) > 0 || !conn.credit_requested);
}

void VsockDevice::ScheduleRx(Connection& conn) {
  if (conn.in_rx_ready || !HasRxWork(conn)) return;
  conn.in_rx_ready = true;
  rx_ready_.push_back(conn.key());
}

void VsockDevice::MaybeCreditUpdate(Connection& conn) {
  if (conn.fwd_cnt - conn.last_fwd_cnt_sent >= options_.buf_alloc / 4) {
    conn.need_credit_update = true;
    ScheduleRx(conn);
  }
}

bool VsockDevice::FlushToHost(Connection& conn) {
  while (!conn.out_empty()) {
    ssize_t n = ::send(conn.fd.get(), conn.out.data() + conn.out_head,
                       conn.out.size() - conn.out_head, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      spdlog::debug("virtio-vsock: {}", Error::FromErrno("write to host socket").ToString());
      Close(conn, /*send_rst=*/true);
      return false;
    }
    size_t prefix = std::min(static_cast<size_t>(n), conn.out_prefix);
    conn.out_prefix -= prefix;
    conn.fwd_cnt += static_cast<uint32_t>(n - prefix);
    conn.out_head += n;
  }
  if (conn.out_empty()) {
    conn.out.clear();
    conn.out_head = 0;
    if (conn.out.capacity() > kKeepBufferCapacity) conn.out.shrink_to_fit();
  }
  MaybeCreditUpdate(conn);
  return MaybeFinish(conn) && Rewatch(conn);
}

bool VsockDevice::MaybeFinish(Connection& conn) {
  if (!conn.established) return true;
  if (conn.peer_no_send && conn.out_empty() && !conn.host_write_shut) {
    ::shutdown(conn.fd.get(), SHUT_WR);
    conn.host_write_shut = true;
  }
  bool out_done = conn.peer_no_send && conn.out_empty();
  bool in_done = conn.peer_no_recv || (conn.host_eof && conn.shutdown_sent);
  if (out_done && in_done) {
    Close(conn, /*send_rst=*/true);
    return false;
  }
  return true;
}

bool VsockDevice::Rewatch(Connection& conn) {
  bool input = conn.established && !conn.readable && !conn.host_eof && !conn.peer_no_recv;
  uint32_t events = (input ? EPOLLIN : 0u) | (conn.out_empty() ? 0u : EPOLLOUT);
  if (events == conn.events) return true;
  EventLoop& loop = *active_->loop;
  Status status;
  if (conn.events == 0) {
    uint64_t key = conn.key();
    status = loop.Add(
        conn.fd.get(), [this, key] { OnConnection(key); }, events);
  } else if (events == 0) {
    status = loop.Remove(conn.fd.get());
  } else {
    status = loop.Modify(conn.fd.get(), events);
  }
  if (!status.ok()) {
    spdlog::warn("virtio-vsock: closing a connection: {}", status.error().ToString());
    Close(conn, /*send_rst=*/true);
    return false;
  }
  conn.events = events;
  return true;
}

void VsockDevice::Close(Connection& conn, bool send_rst) {
  if (send_rst) EnqueueRst(kVsockHostCid, conn.local_port, conn.peer_port, kVsockTypeStream);
  if (conn.events != 0) (void)active_->loop->Remove(conn.fd.get());
  if (conn.host_initiated) host_ports_.erase(conn.local_port);
  counters_.conns_removed.Add();
  connections_.erase(conn.key());  // closes the host socket
}

void VsockDevice::CloseAll() {
  for (auto& [key, conn] : connections_) {
    if (conn->events != 0) (void)active_->loop->Remove(conn->fd.get());
  }
  counters_.conns_removed.Add(connections_.size());
  connections_.clear();
  host_ports_.clear();
  rx_ready_.clear();
  rst_queue_.clear();
}

void VsockDevice::EnqueueRst(uint64_t src_cid, uint32_t src_port, uint32_t dst_port,
                             uint16_t type) {
  rst_queue_.push_back(VsockHeader{
      .src_cid = src_cid,
      .dst_cid = options_.guest_cid,
      .src_port = src_port,
      .dst_port = dst_port,
      .len = 0,
      .type = type,
      .op = kVsockOpRst,
      .flags = 0,
      .buf_alloc = 0,
      .fwd_cnt = 0,
  });
}

void VsockDevice::ArmTimer() {
  std::optional<Clock::time_point> next = listener_resume_;
  auto consider = [&](Clock::time_point t) {
    if (!next || t < *next) next = t;
  };
  for (auto& [fd, pending] : pending_host_) consider(pending->deadline);
  for (auto& [key, conn] : connections_) {
    if (!conn->established) consider(conn->deadline);
  }
  if (!next) {
    if (timer_armed_) {
      itimerspec off = {};
      ::timerfd_settime(timer_.get(), 0, &off, nullptr);
      timer_armed_ = false;
    }
    return;
  }
  // steady_clock is CLOCK_MONOTONIC.
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next->time_since_epoch()).count();
  itimerspec when = {};
  when.it_value.tv_sec = ns / 1000000000;
  when.it_value.tv_nsec = ns % 1000000000;
  if (when.it_value.tv_sec == 0 && when.it_value.tv_nsec == 0) when.it_value.tv_nsec = 1;
  if (::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &when, nullptr) == 0) {
    timer_armed_ = true;
  } else {
    spdlog::warn("virtio-vsock: {}", Error::FromErrno("timerfd_settime").ToString());
  }
}

// ---- Event queue ---------------------------------------------------------------------------

Status VsockDevice::SendPendingEvent() {
  const Active& active = *active_;
  bool used = false;
  for (uint32_t round = 0; event_pending_ && round <= active.event->size(); ++round) {
    TERN_ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, active.event->Pop(*active.memory));
    if (!chain) {
      TERN_ASSIGN_OR_RETURN(bool more, active.event->EnableNotification(*active.memory));
      if (!more) break;
      continue;
    }
    Result<std::vector<iovec>> iov = WritableIovecs(*active.memory, *chain);
    uint32_t len = 0;
    if (iov.ok() && chain->readable_bytes == 0 && chain->writable_bytes >= 4) {
      uint8_t id[4];
      PutLe(id, kVsockEventTransportReset);  // struct virtio_vsock_event { le32 id; }
      CopyToIovecs(*iov, 0, id);
      len = 4;
      event_pending_ = false;
    }
    TERN_RETURN_IF_ERROR(active.event->AddUsed(*active.memory, chain->head, len));
    used = true;
  }
  if (used) {
    TERN_RETURN_IF_ERROR(
        NotifyIfNeeded(*active.event, kEventQueue, *active.memory, *active.interrupt));
  }
  return Ok();
}

// ---- Failure -------------------------------------------------------------------------------

void VsockDevice::Unwatch() {
  EventLoop& loop = *active_->loop;
  // ENOENT for descriptors not added (a failed Start(), an earlier Fail()) is expected.
  (void)loop.Remove(active_->rx_event->fd());
  (void)loop.Remove(active_->tx_event->fd());
  (void)loop.Remove(active_->event_event->fd());
  (void)loop.Remove(timer_.get());
  if (listener_watched_) (void)loop.Remove(listener_.get());
  listener_watched_ = false;
}

void VsockDevice::Fail(const Error& error) {
  FailDevice("virtio-vsock", error, *active_->interrupt);
  broken_ = true;
  Unwatch();
  CloseAll();
  for (auto& [fd, pending] : pending_host_) (void)active_->loop->Remove(fd);
  pending_host_.clear();
}

}  // namespace tern::virtio
