// virtio-net (virtio 1.2 §5.1): frames between the guest's receiveq1/transmitq1 and a backend.
#include "virtio/net.h"

#include <linux/if_tun.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cstddef>

namespace tern::virtio {
namespace {

constexpr uint64_t kOfferedFeatures =
    kNetFeatureCsum | kNetFeatureGuestCsum | kNetFeatureGuestTso4 | kNetFeatureGuestTso6 |
    kNetFeatureGuestEcn | kNetFeatureGuestUfo | kNetFeatureHostTso4 | kNetFeatureHostTso6 |
    kNetFeatureHostEcn | kNetFeatureMrgRxbuf | kNetFeatureStatus | kCommonFeatures;

// The backend's TUNSETOFFLOAD flags for the receive offloads in `features`, keeping only those
// whose dependencies (§5.1.3.1) were negotiated too, so the backend never delivers a frame the
// driver cannot take.
unsigned TunOffloads(uint64_t features) {
  auto has = [&](uint64_t feature) { return (features & feature) != 0; };
  if (!has(kNetFeatureGuestCsum)) return 0;
  unsigned flags = TUN_F_CSUM;
  if (has(kNetFeatureGuestTso4)) flags |= TUN_F_TSO4;
  if (has(kNetFeatureGuestTso6)) flags |= TUN_F_TSO6;
  if ((flags & (TUN_F_TSO4 | TUN_F_TSO6)) && has(kNetFeatureGuestEcn)) flags |= TUN_F_TSO_ECN;
  if (has(kNetFeatureGuestUfo)) flags |= TUN_F_UFO;
  return flags;
}

// struct virtio_net_config up to max_virtqueue_pairs (§5.1.4), little-endian.
std::array<uint8_t, 10> MakeConfig(const std::optional<net::MacAddress>& mac) {
  std::array<uint8_t, 10> config = {};
  if (mac) std::copy(mac->begin(), mac->end(), config.begin());
  config[6] = kNetStatusLinkUp;
  config[8] = 1;  // max_virtqueue_pairs
  return config;
}

}  // namespace

Result<std::unique_ptr<NetDevice>> NetDevice::Create(std::string_view tap_name,
                                                     std::optional<net::MacAddress> mac) {
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<net::Tap> tap, net::Tap::Open(tap_name));
  return std::make_unique<NetDevice>(std::move(tap), mac);
}

NetDevice::NetDevice(std::unique_ptr<net::Backend> backend, std::optional<net::MacAddress> mac)
    : backend_(std::move(backend)),
      features_(kOfferedFeatures | (mac ? kNetFeatureMac : 0)),
      config_(MakeConfig(mac)) {}

NetDevice::~NetDevice() { Reset(); }

void NetDevice::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset < config_.size() && i < config_.size() - offset ? config_[offset + i] : 0;
  }
}

void NetDevice::WriteConfig(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {}

Status NetDevice::Activate(const ActivateContext& context) {
  TERN_RETURN_IF_ERROR(CheckActivateContext("virtio-net", context, 2));
  std::vector<Queue>& queues = *context.queues;
  if (!queues[kRxQueue].ready() || !queues[kTxQueue].ready()) {
    return Error("virtio-net: the driver must enable receiveq1 and transmitq1", EINVAL);
  }
  unsigned offloads = TunOffloads(context.driver_features);
  TERN_RETURN_IF_ERROR(backend_->SetOffload(offloads));
  bool gso = (offloads & (TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO)) != 0;
  active_ = Active{
      .memory = context.memory,
      .rx = &queues[kRxQueue],
      .tx = &queues[kTxQueue],
      .rx_event = &context.queue_events[kRxQueue],
      .tx_event = &context.queue_events[kTxQueue],
      .interrupt = context.interrupt,
      .loop = context.loop,
      .mergeable = (context.driver_features & kNetFeatureMrgRxbuf) != 0,
      .rx_frame_size = gso ? kMaxFrameSize : kMinRxFrameSize,
  };
  // From the first Add() on, handlers run on the loop thread: the state they use is set first.
  backend_events_ = EPOLLIN;
  Status status = context.loop->Add(
      backend_->fd(), [this] { OnBackendReady(); }, EPOLLIN);
  if (!status.ok()) backend_events_ = 0;
  if (status.ok()) status = context.loop->Add(active_->rx_event->fd(), [this] { OnRxNotify(); });
  if (status.ok()) status = context.loop->Add(active_->tx_event->fd(), [this] { OnTxNotify(); });
  if (!status.ok()) {
    Reset();
    return status.error().WithContext("virtio-net");
  }
  return Ok();
}

void NetDevice::Reset() {
  if (!active_) return;
  active_->loop->RunSync([this] {
    Unwatch();
    broken_ = false;
    rx_paused_ = false;
    rx_chains_.clear();
    rx_capacity_ = 0;
    rx_buffers_ = 0;
    tx_pending_.reset();
    tx_error_logged_ = false;
    rx_error_logged_ = false;
  });
  active_.reset();
}

void NetDevice::OnRxNotify() {
  (void)active_->rx_event->Read();
  if (broken_) return;
  rx_paused_ = false;
  ProcessRx();
}

void NetDevice::OnTxNotify() {
  (void)active_->tx_event->Read();
  if (broken_ || tx_pending_) return;  // a blocked frame waits for the backend first
  ProcessTx();
}

void NetDevice::OnBackendReady() {
  if (!broken_ && tx_pending_) ProcessTx();
  if (!broken_ && !rx_paused_) ProcessRx();
}

void NetDevice::ProcessTx() {
  const Active& active = *active_;
  bool used = false;
  for (int frames = 0;; ++frames) {
    if (frames == kTxBatch) {
      // Let other events in, and come back for the rest.
      if (Status status = active.tx_event->Write(); !status.ok()) return Fail(status.error());
      break;
    }
    if (!tx_pending_) {
      Result<std::optional<DescriptorChain>> chain = active.tx->Pop(*active.memory);
      if (!chain.ok()) return Fail(chain.error());
      if (!*chain) {
        Result<bool> more = active.tx->EnableNotification(*active.memory);
        if (!more.ok()) return Fail(more.error());
        if (*more) continue;
        break;
      }
      tx_pending_ = std::move(**chain);
    }
    Result<bool> sent = TransmitPending();
    if (!sent.ok()) return Fail(sent.error());
    if (!*sent) break;
    used = true;
  }
  Status status =
      used ? NotifyIfNeeded(*active.tx, kTxQueue, *active.memory, *active.interrupt) : Ok();
  if (status.ok()) status = UpdateBackendWatch();
  if (!status.ok()) Fail(status.error());
}

Result<bool> NetDevice::TransmitPending() {
  const Active& active = *active_;
  const DescriptorChain& chain = *tx_pending_;
  Result<std::vector<iovec>> iov = ReadableIovecs(*active.memory, chain);
  Status sent;
  if (!iov.ok()) {
    sent = iov.error();
    counters_.tx_malformed_frames.Add();
  } else if (chain.readable_bytes < kHeaderSize || chain.readable_bytes > kMaxFrameSize ||
             iov->size() > kMaxBuffers) {
    sent = Error("malformed frame of " + std::to_string(chain.readable_bytes) + " bytes in " +
                     std::to_string(iov->size()) + " buffers",
                 EINVAL);
    counters_.tx_malformed_frames.Add();
  } else {
    Result<bool> result = backend_->Send(*iov);
    if (result.ok() && !*result) return false;
    if (result.ok()) {
      counters_.tx_packets_count.Add();
      counters_.tx_bytes_count.Add(chain.readable_bytes - kHeaderSize);
    } else {
      sent = result.error();
      counters_.tap_write_fails.Add();
    }
  }
  if (!sent.ok() && !tx_error_logged_) {
    spdlog::warn("virtio-net: dropped a transmitted frame (further drops are not logged): {}",
                 sent.error().ToString());
    tx_error_logged_ = true;
  }
  uint16_t head = chain.head;
  tx_pending_.reset();
  TERN_RETURN_IF_ERROR(active.tx->AddUsed(*active.memory, head, 0));
  return true;
}

void NetDevice::ProcessRx() {
  const Active& active = *active_;
  bool used = false;
  for (int frames = 0; frames < kRxBatch; ++frames) {
    Result<bool> ready = FillRxChains(used);
    if (!ready.ok()) return Fail(ready.error());
    if (!*ready) {
      rx_paused_ = true;
      break;
    }
    // One chain, or with MRG_RXBUF all chains held (up to kMaxBuffers buffers).
    rx_iov_.clear();
    size_t capacity = 0;
    for (const RxChain& chain : rx_chains_) {
      if (capacity > 0 && (!active.mergeable || rx_iov_.size() + chain.iov.size() > kMaxBuffers)) {
        break;
      }
      rx_iov_.insert(rx_iov_.end(), chain.iov.begin(), chain.iov.end());
      capacity += chain.capacity;
    }
    rx_iov_.push_back({&rx_overflow_, 1});
    Result<size_t> length = backend_->Receive(rx_iov_);
    if (!length.ok()) {
      // Wait for the driver rather than spin on a broken backend.
      if (!rx_error_logged_) spdlog::warn("virtio-net: {}", length.error().ToString());
      rx_error_logged_ = true;
      rx_paused_ = true;
      break;
    }
    if (*length == 0) break;
    if (*length > capacity || *length < kHeaderSize) {  // dropped; buffers kept
      counters_.rx_dropped_frames.Add();
      continue;
    }
    counters_.rx_packets_count.Add();
    counters_.rx_bytes_count.Add(*length - kHeaderSize);
    if (Status status = CompleteRx(*length); !status.ok()) return Fail(status.error());
    used = true;
  }
  Status status =
      used ? NotifyIfNeeded(*active.rx, kRxQueue, *active.memory, *active.interrupt) : Ok();
  if (status.ok()) status = UpdateBackendWatch();
  if (!status.ok()) Fail(status.error());
}

Result<bool> NetDevice::FillRxChains(bool& used) {
  const Active& active = *active_;
  // Each round pops a chain or re-enables notifications. A driver that keeps posting unusable
  // chains could make that go on forever: after twice the queue size, the receive queue event
  // brings the device back once other descriptors had their turn.
  for (uint32_t round = 0; !RxChainsSuffice(); ++round) {
    if (round == 2u * active.rx->size()) {
      TERN_RETURN_IF_ERROR(active.rx_event->Write());
      return false;
    }
    TERN_ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, active.rx->Pop(*active.memory));
    if (!chain) {
      TERN_ASSIGN_OR_RETURN(bool more, active.rx->EnableNotification(*active.memory));
      if (!more) return false;
      continue;
    }
    Result<std::vector<iovec>> iov = WritableIovecs(*active.memory, *chain);
    if (!iov.ok() || chain->readable_bytes != 0 || chain->writable_bytes < kHeaderSize ||
        iov->size() > kMaxBuffers) {
      TERN_RETURN_IF_ERROR(active.rx->AddUsed(*active.memory, chain->head, 0));
      used = true;
      continue;
    }
    rx_capacity_ += chain->writable_bytes;
    rx_buffers_ += iov->size();
    rx_chains_.push_back({chain->head, std::move(*iov), chain->writable_bytes});
  }
  return true;
}

bool NetDevice::RxChainsSuffice() const {
  if (rx_chains_.empty()) return false;
  if (!active_->mergeable || rx_capacity_ >= active_->rx_frame_size) return true;
  // The driver cannot post more while the device holds this many buffers.
  return rx_buffers_ >= std::min<size_t>(active_->rx->size(), kMaxBuffers);
}

Status NetDevice::CompleteRx(size_t length) {
  const Active& active = *active_;
  uint16_t chains = 0;
  for (size_t left = length; left > 0; ++chains) {
    left -= std::min(left, rx_chains_[chains].capacity);
  }
  const uint8_t num_buffers[2] = {static_cast<uint8_t>(chains), static_cast<uint8_t>(chains >> 8)};
  CopyToIovecs(rx_chains_.front().iov, kNetHeaderNumBuffersOffset, num_buffers);
  for (size_t left = length; left > 0;) {
    const RxChain& chain = rx_chains_.front();
    size_t n = std::min(left, chain.capacity);
    TERN_RETURN_IF_ERROR(active.rx->AddUsed(*active.memory, chain.head, static_cast<uint32_t>(n)));
    left -= n;
    rx_capacity_ -= chain.capacity;
    rx_buffers_ -= chain.iov.size();
    rx_chains_.pop_front();
  }
  return Ok();
}

Status NetDevice::UpdateBackendWatch() {
  uint32_t events = (rx_paused_ ? 0u : EPOLLIN) | (tx_pending_ ? EPOLLOUT : 0u);
  if (events == backend_events_) return Ok();
  EventLoop& loop = *active_->loop;
  Status status;
  if (backend_events_ == 0) {
    status = loop.Add(
        backend_->fd(), [this] { OnBackendReady(); }, events);
  } else if (events == 0) {
    status = loop.Remove(backend_->fd());
  } else {
    status = loop.Modify(backend_->fd(), events);
  }
  if (status.ok()) backend_events_ = events;
  return status;
}

void NetDevice::Unwatch() {
  EventLoop& loop = *active_->loop;
  // ENOENT for descriptors already removed (a failed Activate(), Fail()) is expected.
  (void)loop.Remove(active_->rx_event->fd());
  (void)loop.Remove(active_->tx_event->fd());
  if (backend_events_ != 0) (void)loop.Remove(backend_->fd());
  backend_events_ = 0;
}

NetCounters NetDevice::Counters() const {
  return NetCounters{
      .rx_packets_count = counters_.rx_packets_count.Load(),
      .rx_bytes_count = counters_.rx_bytes_count.Load(),
      .rx_dropped_frames = counters_.rx_dropped_frames.Load(),
      .tx_packets_count = counters_.tx_packets_count.Load(),
      .tx_bytes_count = counters_.tx_bytes_count.Load(),
      .tx_malformed_frames = counters_.tx_malformed_frames.Load(),
      .tap_write_fails = counters_.tap_write_fails.Load(),
  };
}

nlohmann::json NetDevice::Metrics() const {
  NetCounters c = Counters();
  return {
      {"rx_packets_count", c.rx_packets_count},   {"rx_bytes_count", c.rx_bytes_count},
      {"rx_dropped_frames", c.rx_dropped_frames}, {"tx_packets_count", c.tx_packets_count},
      {"tx_bytes_count", c.tx_bytes_count},       {"tx_malformed_frames", c.tx_malformed_frames},
      {"tap_write_fails", c.tap_write_fails}};
}

void NetDevice::Fail(const Error& error) {
  FailDevice("virtio-net", error, *active_->interrupt);
  broken_ = true;
  Unwatch();
}

}  // namespace tern::virtio
