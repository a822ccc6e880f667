// Unit tests for virtio-net: features, configuration space, offload negotiation, and frames in
// both directions through a SOCK_SEQPACKET socket pair standing in for the TAP (one message per
// frame, like a TAP descriptor), with the device running on a real event loop thread. One test
// uses a real TAP interface in a private network namespace.
#include "virtio/net.h"

#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <thread>
#include <utility>
#include <vector>

#include "base/event_loop.h"
#include "base/fd.h"
#include "net/test_util.h"
#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

using namespace std::chrono_literals;
using testing::FakeInterrupt;
using testing::MakeGuestMemory;
using testing::RingBuilder;

constexpr net::MacAddress kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

// The device's end of a SOCK_SEQPACKET socket pair: one message per frame.
class SocketBackend : public net::Backend {
 public:
  SocketBackend(Fd fd, std::atomic<unsigned>* offload) : fd_(std::move(fd)), offload_(offload) {}

  int fd() const override { return fd_.get(); }
  Result<size_t> Receive(std::span<const iovec> iov) override {
    ssize_t n = ::readv(fd_.get(), iov.data(), static_cast<int>(iov.size()));
    if (n < 0 && errno == EAGAIN) return 0;
    if (n < 0) return Error::FromErrno("readv");
    return static_cast<size_t>(n);
  }
  Result<bool> Send(std::span<const iovec> iov) override {
    ssize_t n = ::writev(fd_.get(), iov.data(), static_cast<int>(iov.size()));
    if (n < 0 && errno == EAGAIN) return false;
    if (n < 0) return Error::FromErrno("writev");
    return true;
  }
  Status SetOffload(unsigned tun_flags) override {
    offload_->store(tun_flags);
    return Ok();
  }

 private:
  Fd fd_;
  std::atomic<unsigned>* offload_;
};

// A frame as the driver or the backend passes it: a virtio_net_hdr_v1 asking for a checksum
// (flags NEEDS_CSUM, csum_start 34, csum_offset 16, num_buffers 0xeeee) and `size` - 12 payload
// bytes numbered from `seed`.
std::vector<uint8_t> Frame(size_t size, uint8_t seed) {
  std::vector<uint8_t> frame = {1, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0xee, 0xee};
  for (size_t i = frame.size(); i < size; ++i) frame.push_back(static_cast<uint8_t>(seed + i));
  return frame;
}

// `frame` as the driver should see it after receiving it in `buffers` buffers.
std::vector<uint8_t> WithNumBuffers(std::vector<uint8_t> frame, uint16_t buffers) {
  frame[10] = buffers & 0xff;
  frame[11] = buffers >> 8;
  return frame;
}

// CPU time this process used, all threads.
std::chrono::nanoseconds ProcessCpuTime() {
  timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// Waits up to 5 s for `ring`'s used index to reach `idx`.
bool WaitUsed(const RingBuilder& ring, uint16_t idx) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (ring.used_idx() != idx) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

class NetDeviceTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kRxRing = 0;
  static constexpr uint64_t kTxRing = 0x8000;
  static constexpr uint64_t kBuffers = 0x10000;

  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    device_fd_ = fds[0];
    peer_.Reset(fds[1]);
    device_ =
        std::make_unique<NetDevice>(std::make_unique<SocketBackend>(Fd(fds[0]), &offload_), kMac);
    Result<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(*loop);
    loop_thread_ = std::thread([this] { loop_->Run(); });
    for (int i = 0; i < 2; ++i) {
      Result<EventFd> event = EventFd::Create();
      ASSERT_TRUE(event.ok());
      events_.push_back(std::move(*event));
    }
  }

  void TearDown() override {
    device_->Reset();
    loop_->Stop();
    loop_thread_.join();
  }

  // What the transport does on DRIVER_OK, with fresh queues of the given sizes.
  Status Activate(uint64_t features, uint16_t rx_size = 256, uint16_t tx_size = 256) {
    queues_.clear();
    queues_.emplace_back(NetDevice::kQueueSize);
    queues_.emplace_back(NetDevice::kQueueSize);
    rx_ring_.emplace(memory_, rx_size, kRxRing);
    tx_ring_.emplace(memory_, tx_size, kTxRing);
    std::vector<uint8_t> zeros(kBuffers, 0);  // the rings of an earlier activation
    EXPECT_TRUE(memory_.Write(0, zeros).ok());
    rx_ring_->Configure(queues_[NetDevice::kRxQueue]);
    tx_ring_->Configure(queues_[NetDevice::kTxQueue]);
    for (Queue& queue : queues_) {
      queue.set_event_idx((features & kFeatureEventIdx) != 0);
      queue.set_indirect((features & kFeatureIndirectDesc) != 0);
    }
    ActivateContext context{.memory = &memory_,
                            .driver_features = features,
                            .queues = &queues_,
                            .queue_events = events_,
                            .interrupt = &interrupt_,
                            .loop = loop_.get()};
    return device_->Activate(context);
  }

  // `size` bytes of guest memory for buffers, filled with 0xff.
  uint64_t Alloc(uint64_t size) {
    uint64_t gpa = next_buffer_;
    next_buffer_ = (next_buffer_ + size + 15) & ~15ull;
    EXPECT_TRUE(memory_.Write(gpa, std::vector<uint8_t>(size, 0xff)).ok());
    return gpa;
  }

  // Makes a chain of one writable buffer of `size` bytes available on receiveq1.
  uint16_t PostRxBuffer(uint32_t size) { return rx_ring_->AddChain(RxBuffers({size})); }
  // Writable buffers of the given sizes, for one chain.
  std::vector<Buffer> RxBuffers(std::initializer_list<uint32_t> sizes) {
    std::vector<Buffer> buffers;
    for (uint32_t size : sizes) buffers.push_back({Alloc(size), size, true});
    return buffers;
  }

  // Copies `frame` into guest memory as a transmit chain of buffers of the given sizes (the
  // last takes the rest) and makes it available.
  uint16_t PostTxFrame(const std::vector<uint8_t>& frame, std::initializer_list<size_t> sizes) {
    std::vector<Buffer> buffers;
    size_t offset = 0;
    for (size_t size : sizes) {
      buffers.push_back(TxBuffer(frame, offset, size));
      offset += size;
    }
    buffers.push_back(TxBuffer(frame, offset, frame.size() - offset));
    return tx_ring_->AddChain(buffers);
  }
  Buffer TxBuffer(const std::vector<uint8_t>& frame, size_t offset, size_t size) {
    uint64_t gpa = Alloc(size);
    EXPECT_TRUE(memory_.Write(gpa, std::span(frame).subspan(offset, size)).ok());
    return {gpa, static_cast<uint32_t>(size), false};
  }

  void Kick(uint16_t queue) { ASSERT_TRUE(events_[queue].Write().ok()); }

  // The next frame the device sent, waiting up to 5 s; empty if none came.
  std::vector<uint8_t> PeerReceive(std::chrono::milliseconds timeout = 5s) {
    pollfd pfd = {.fd = peer_.get(), .events = POLLIN, .revents = 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return {};
    std::vector<uint8_t> frame(NetDevice::kMaxFrameSize + 100);
    ssize_t n = ::read(peer_.get(), frame.data(), frame.size());
    frame.resize(n > 0 ? n : 0);
    return frame;
  }
  void PeerSend(const std::vector<uint8_t>& frame) {
    ASSERT_EQ(::write(peer_.get(), frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  }

  // The first `len` bytes of a receive chain made of `buffers`.
  std::vector<uint8_t> GuestBytes(const std::vector<Buffer>& buffers, uint32_t len) {
    std::vector<uint8_t> bytes;
    for (const Buffer& buffer : buffers) {
      std::vector<uint8_t> part(std::min<uint32_t>(len, buffer.len));
      EXPECT_TRUE(memory_.Read(buffer.addr, part).ok());
      bytes.insert(bytes.end(), part.begin(), part.end());
      len -= part.size();
    }
    return bytes;
  }

  GuestMemory memory_ = MakeGuestMemory(4 << 20);
  uint64_t next_buffer_ = kBuffers;
  Fd peer_;
  int device_fd_ = -1;
  std::atomic<unsigned> offload_{~0u};
  std::unique_ptr<NetDevice> device_;
  std::unique_ptr<EventLoop> loop_;
  std::thread loop_thread_;
  std::vector<EventFd> events_;
  std::vector<Queue> queues_;
  std::optional<RingBuilder> rx_ring_;
  std::optional<RingBuilder> tx_ring_;
  FakeInterrupt interrupt_;
};

constexpr uint64_t kGso = kNetFeatureGuestCsum | kNetFeatureGuestTso4 | kNetFeatureGuestTso6;

TEST_F(NetDeviceTest, OffersFeaturesQueuesAndConfiguration) {
  EXPECT_EQ(device_->device_type(), kDeviceTypeNet);
  EXPECT_EQ(device_->queue_max_sizes(), (std::vector<uint16_t>{256, 256}));
  uint64_t expected = kNetFeatureCsum | kNetFeatureGuestCsum | kNetFeatureMac |
                      kNetFeatureGuestTso4 | kNetFeatureGuestTso6 | kNetFeatureGuestEcn |
                      kNetFeatureGuestUfo | kNetFeatureHostTso4 | kNetFeatureHostTso6 |
                      kNetFeatureHostEcn | kNetFeatureMrgRxbuf | kNetFeatureStatus |
                      kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc;
  EXPECT_EQ(device_->device_features(), expected);

  std::vector<uint8_t> config(16, 0xaa);
  device_->ReadConfig(0, config);
  EXPECT_EQ(config, (std::vector<uint8_t>{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0, 0, 0,
                                          0, 0, 0}));
  std::vector<uint8_t> status(2);
  device_->ReadConfig(6, status);
  EXPECT_EQ(status, (std::vector<uint8_t>{kNetStatusLinkUp, 0}));
  device_->ReadConfig(UINT64_MAX - 1, status);
  EXPECT_EQ(status, (std::vector<uint8_t>{0, 0}));

  const uint8_t other_mac[] = {2, 0, 0, 0, 0, 1};
  device_->WriteConfig(0, other_mac);
  device_->ReadConfig(0, std::span(config).first(6));
  EXPECT_EQ(config[0], 0x52);

  NetDevice without_mac(std::make_unique<SocketBackend>(Fd(), &offload_), std::nullopt);
  EXPECT_EQ(without_mac.device_features(), expected & ~kNetFeatureMac);
}

TEST_F(NetDeviceTest, MapsGuestOffloadsToTapFlags) {
  struct Case {
    uint64_t features;
    unsigned flags;
  } cases[] = {
      {0, 0},
      {kNetFeatureGuestTso4 | kNetFeatureGuestEcn, 0},  // TSO needs GUEST_CSUM
      {kNetFeatureGuestCsum, TUN_F_CSUM},
      {kNetFeatureGuestCsum | kNetFeatureGuestEcn, TUN_F_CSUM},  // ECN needs TSO
      {kGso, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6},
      {kGso | kNetFeatureGuestEcn | kNetFeatureGuestUfo,
       TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(Activate(kFeatureVersion1 | c.features).ok());
    EXPECT_EQ(offload_.load(), c.flags) << std::hex << c.features;
    device_->Reset();
  }
}

TEST_F(NetDeviceTest, RefusesToActivateWithoutBothQueues) {
  queues_.clear();
  queues_.emplace_back(NetDevice::kQueueSize);
  queues_.emplace_back(NetDevice::kQueueSize);
  ActivateContext context{.memory = &memory_,
                          .driver_features = kFeatureVersion1,
                          .queues = &queues_,
                          .queue_events = events_,
                          .interrupt = &interrupt_,
                          .loop = loop_.get()};
  Status status = device_->Activate(context);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), EINVAL);
}

TEST_F(NetDeviceTest, TransmitsEveryChainWithItsHeaderAndNotifiesOncePerBatch) {
  ASSERT_TRUE(Activate(kFeatureVersion1 | kFeatureIndirectDesc).ok());
  std::vector<uint8_t> frames[] = {Frame(72, 1), Frame(1500, 2), Frame(300, 3)};
  uint16_t heads[3];
  heads[0] = PostTxFrame(frames[0], {12});      // header and frame apart
  heads[1] = PostTxFrame(frames[1], {5, 700});  // header split across buffers
  std::vector<Buffer> indirect = {TxBuffer(frames[2], 0, 100), TxBuffer(frames[2], 100, 200)};
  heads[2] = tx_ring_->AddIndirectChain(Alloc(64), indirect);
  Kick(NetDevice::kTxQueue);

  for (const std::vector<uint8_t>& frame : frames) EXPECT_EQ(PeerReceive(), frame);
  ASSERT_TRUE(WaitUsed(*tx_ring_, 3));
  for (uint16_t i = 0; i < 3; ++i) {
    EXPECT_EQ(tx_ring_->used(i).id, heads[i]);
    EXPECT_EQ(tx_ring_->used(i).len, 0u);
  }
  EXPECT_TRUE(interrupt_.WaitForQueue(NetDevice::kTxQueue, 1));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(interrupt_.queue_count(NetDevice::kTxQueue), 1);
  EXPECT_EQ(interrupt_.queue_count(NetDevice::kRxQueue), 0);
  NetCounters counters = device_->Counters();
  EXPECT_EQ(counters.tx_packets_count, 3u);
  EXPECT_EQ(counters.tx_bytes_count, 60u + 1488 + 288);  // without the headers
  EXPECT_EQ(counters.tx_malformed_frames, 0u);
  EXPECT_EQ(counters.rx_packets_count, 0u);
}

TEST_F(NetDeviceTest, DropsMalformedTransmitChainsAndKeepsGoing) {
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  PostTxFrame(std::vector<uint8_t>(8, 0), {});              // shorter than the header
  tx_ring_->AddChain(RxBuffers({100}));                     // nothing device-readable
  PostTxFrame(Frame(NetDevice::kMaxFrameSize + 1, 2), {});  // too large
  std::vector<uint8_t> good = Frame(60, 3);
  uint16_t good_head = PostTxFrame(good, {});
  Kick(NetDevice::kTxQueue);

  EXPECT_EQ(PeerReceive(), good);
  ASSERT_TRUE(WaitUsed(*tx_ring_, 4));
  EXPECT_EQ(tx_ring_->used(3).id, good_head);
  for (uint16_t i = 0; i < 4; ++i) EXPECT_EQ(tx_ring_->used(i).len, 0u);
  EXPECT_TRUE(PeerReceive(50ms).empty());
  NetCounters counters = device_->Counters();
  EXPECT_EQ(counters.tx_malformed_frames, 3u);
  EXPECT_EQ(counters.tx_packets_count, 1u);
  EXPECT_EQ(counters.tx_bytes_count, 48u);
  EXPECT_EQ(counters.tap_write_fails, 0u);
}

TEST_F(NetDeviceTest, CountsFramesTheBackendRefuses) {
  // A datagram larger than the socket's send buffer fails (EMSGSIZE): the backend refuses it.
  int sndbuf = 4096;
  ASSERT_EQ(::setsockopt(device_fd_, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  EXPECT_EQ(device_->Metrics(), nlohmann::json({{"rx_packets_count", 0},
                                                {"rx_bytes_count", 0},
                                                {"rx_dropped_frames", 0},
                                                {"tx_packets_count", 0},
                                                {"tx_bytes_count", 0},
                                                {"tx_malformed_frames", 0},
                                                {"tap_write_fails", 0}}));
  PostTxFrame(Frame(20000, 1), {});
  std::vector<uint8_t> good = Frame(100, 2);
  PostTxFrame(good, {});
  Kick(NetDevice::kTxQueue);

  EXPECT_EQ(PeerReceive(), good);
  ASSERT_TRUE(WaitUsed(*tx_ring_, 2));
  nlohmann::json metrics = device_->Metrics();
  EXPECT_EQ(metrics["tap_write_fails"], 1);
  EXPECT_EQ(metrics["tx_packets_count"], 1);
  EXPECT_EQ(metrics["tx_bytes_count"], 88);
  EXPECT_EQ(metrics["tx_malformed_frames"], 0);
}

TEST_F(NetDeviceTest, WaitsForTheBackendWhenItIsFullWithoutDroppingOrSpinning) {
  int sndbuf = 4096;
  ASSERT_EQ(::setsockopt(device_fd_, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  constexpr int kFrames = 40;
  for (int i = 0; i < kFrames; ++i) PostTxFrame(Frame(1000, i), {});
  Kick(NetDevice::kTxQueue);

  // The peer reads nothing yet: the device sends what the socket takes and then waits.
  uint16_t used = tx_ring_->used_idx();
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(50ms);
    if (std::exchange(used, tx_ring_->used_idx()) == used) break;
  }
  EXPECT_LT(used, kFrames);
  auto cpu = ProcessCpuTime();
  std::this_thread::sleep_for(100ms);
  EXPECT_LT(ProcessCpuTime() - cpu, 30ms);
  EXPECT_EQ(tx_ring_->used_idx(), used);

  for (int i = 0; i < kFrames; ++i) ASSERT_EQ(PeerReceive(), Frame(1000, i)) << i;
  EXPECT_TRUE(WaitUsed(*tx_ring_, kFrames));
}

TEST_F(NetDeviceTest, ReceivesIntoOneChainWithoutMergeableBuffers) {
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  std::vector<Buffer> buffers = RxBuffers({6, 2042});  // num_buffers lands in the second
  uint16_t head = rx_ring_->AddChain(buffers);
  std::vector<uint8_t> frame = Frame(112, 7);
  PeerSend(frame);

  ASSERT_TRUE(WaitUsed(*rx_ring_, 1));
  EXPECT_EQ(rx_ring_->used(0).id, head);
  EXPECT_EQ(rx_ring_->used(0).len, 112u);
  EXPECT_EQ(GuestBytes(buffers, 112), WithNumBuffers(frame, 1));
  EXPECT_TRUE(interrupt_.WaitForQueue(NetDevice::kRxQueue, 1));
  EXPECT_EQ(device_->Counters().rx_packets_count, 1u);
  EXPECT_EQ(device_->Counters().rx_bytes_count, 100u);
}

TEST_F(NetDeviceTest, SpreadsAFrameOverMergeableBuffers) {
  ASSERT_TRUE(Activate(kFeatureVersion1 | kNetFeatureMrgRxbuf | kGso).ok());
  std::vector<std::vector<Buffer>> chains;
  std::vector<uint16_t> heads;
  for (int i = 0; i < 40; ++i) {  // 80 KiB: room for the largest GSO frame
    chains.push_back(RxBuffers({2048}));
    heads.push_back(rx_ring_->AddChain(chains.back()));
  }
  std::vector<uint8_t> big = Frame(5000, 1);
  std::vector<uint8_t> small = Frame(100, 2);
  PeerSend(big);
  PeerSend(small);

  ASSERT_TRUE(WaitUsed(*rx_ring_, 4));
  const uint32_t lens[] = {2048, 2048, 904, 100};
  for (uint16_t i = 0; i < 4; ++i) {
    EXPECT_EQ(rx_ring_->used(i).id, heads[i]);
    EXPECT_EQ(rx_ring_->used(i).len, lens[i]);
  }
  std::vector<uint8_t> received;
  for (int i = 0; i < 3; ++i) {
    std::vector<uint8_t> part = GuestBytes(chains[i], lens[i]);
    received.insert(received.end(), part.begin(), part.end());
  }
  EXPECT_EQ(received, WithNumBuffers(big, 3));
  EXPECT_EQ(GuestBytes(chains[3], 100), WithNumBuffers(small, 1));
  // A frame over several buffers is one packet.
  EXPECT_EQ(device_->Counters().rx_packets_count, 2u);
  EXPECT_EQ(device_->Counters().rx_bytes_count, 4988u + 88);
}

TEST_F(NetDeviceTest, MergeableReceiveWaitsForRoomForTheLargestFrame) {
  ASSERT_TRUE(Activate(kFeatureVersion1 | kNetFeatureMrgRxbuf | kGso).ok());
  std::vector<Buffer> first = RxBuffers({2048});
  uint16_t head = rx_ring_->AddChain(first);
  PostRxBuffer(2048);
  std::vector<uint8_t> frame = Frame(100, 3);
  PeerSend(frame);

  // 4 KiB cannot hold a 64 KiB GSO frame, and the ring has room for more: the device waits for
  // the driver, without spinning.
  std::this_thread::sleep_for(50ms);
  auto cpu = ProcessCpuTime();
  std::this_thread::sleep_for(100ms);
  EXPECT_LT(ProcessCpuTime() - cpu, 30ms);
  EXPECT_EQ(rx_ring_->used_idx(), 0);

  for (int i = 0; i < 31; ++i) PostRxBuffer(2048);
  Kick(NetDevice::kRxQueue);
  ASSERT_TRUE(WaitUsed(*rx_ring_, 1));
  EXPECT_EQ(rx_ring_->used(0).id, head);
  EXPECT_EQ(GuestBytes(first, 100), WithNumBuffers(frame, 1));
}

TEST_F(NetDeviceTest, MergeableReceiveUsesAFullSmallRing) {
  ASSERT_TRUE(Activate(kFeatureVersion1 | kNetFeatureMrgRxbuf | kGso, /*rx_size=*/8).ok());
  std::vector<std::vector<Buffer>> chains;
  for (int i = 0; i < 8; ++i) {  // 16 KiB: all this ring can hold
    chains.push_back(RxBuffers({2048}));
    rx_ring_->AddChain(chains.back());
  }
  std::vector<uint8_t> frame = Frame(3000, 4);
  PeerSend(frame);

  ASSERT_TRUE(WaitUsed(*rx_ring_, 2));
  EXPECT_EQ(rx_ring_->used(1).len, 952u);
  std::vector<uint8_t> received = GuestBytes(chains[0], 2048);
  std::vector<uint8_t> rest = GuestBytes(chains[1], 952);
  received.insert(received.end(), rest.begin(), rest.end());
  EXPECT_EQ(received, WithNumBuffers(frame, 2));
}

TEST_F(NetDeviceTest, PausesWithoutReceiveBuffersUntilTheDriverNotifies) {
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  std::vector<uint8_t> frame = Frame(200, 5);
  PeerSend(frame);
  std::this_thread::sleep_for(50ms);
  auto cpu = ProcessCpuTime();
  std::this_thread::sleep_for(100ms);
  EXPECT_LT(ProcessCpuTime() - cpu, 30ms);

  std::vector<Buffer> buffers = RxBuffers({2048});
  rx_ring_->AddChain(buffers);
  Kick(NetDevice::kRxQueue);
  ASSERT_TRUE(WaitUsed(*rx_ring_, 1));
  EXPECT_EQ(GuestBytes(buffers, 200), WithNumBuffers(frame, 1));
}

TEST_F(NetDeviceTest, DropsAFrameLargerThanTheBuffersAndReusesThem) {
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  std::vector<Buffer> buffers = RxBuffers({1024});
  uint16_t head = rx_ring_->AddChain(buffers);
  PeerSend(Frame(1025, 1));
  std::vector<uint8_t> frame = Frame(500, 2);
  PeerSend(frame);

  ASSERT_TRUE(WaitUsed(*rx_ring_, 1));
  EXPECT_EQ(rx_ring_->used(0).id, head);
  EXPECT_EQ(rx_ring_->used(0).len, 500u);
  EXPECT_EQ(GuestBytes(buffers, 500), WithNumBuffers(frame, 1));
  NetCounters counters = device_->Counters();
  EXPECT_EQ(counters.rx_dropped_frames, 1u);
  EXPECT_EQ(counters.rx_packets_count, 1u);
  EXPECT_EQ(counters.rx_bytes_count, 488u);
}

TEST_F(NetDeviceTest, ReturnsUnusableReceiveChainsEmpty) {
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  std::vector<Buffer> readable_first = RxBuffers({100, 2048});
  readable_first[0].write_only = false;
  uint16_t readable_head = rx_ring_->AddChain(readable_first);
  uint16_t tiny_head = PostRxBuffer(NetDevice::kHeaderSize - 1);
  std::vector<Buffer> good = RxBuffers({2048});
  uint16_t good_head = rx_ring_->AddChain(good);
  std::vector<uint8_t> frame = Frame(100, 6);
  PeerSend(frame);

  ASSERT_TRUE(WaitUsed(*rx_ring_, 3));
  EXPECT_EQ(rx_ring_->used(0).id, readable_head);
  EXPECT_EQ(rx_ring_->used(0).len, 0u);
  EXPECT_EQ(rx_ring_->used(1).id, tiny_head);
  EXPECT_EQ(rx_ring_->used(1).len, 0u);
  EXPECT_EQ(rx_ring_->used(2).id, good_head);
  EXPECT_EQ(GuestBytes(good, 100), WithNumBuffers(frame, 1));
}

TEST_F(NetDeviceTest, RearmsReceiveNotificationsWithEventIdx) {
  ASSERT_TRUE(Activate(kFeatureVersion1 | kFeatureEventIdx).ok());
  PostRxBuffer(2048);
  PeerSend(Frame(100, 1));
  PeerSend(Frame(100, 2));
  ASSERT_TRUE(WaitUsed(*rx_ring_, 1));
  // Out of buffers: the device asks to be notified of the next one.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (rx_ring_->avail_event() != 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(rx_ring_->avail_event(), 1);
  PostRxBuffer(2048);
  Kick(NetDevice::kRxQueue);
  EXPECT_TRUE(WaitUsed(*rx_ring_, 2));
}

TEST_F(NetDeviceTest, StopsOnAMalformedRingUntilReset) {
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  tx_ring_->set_avail_idx(tx_ring_->size() + 10);  // more chains than the ring has entries
  Kick(NetDevice::kTxQueue);
  EXPECT_TRUE(interrupt_.WaitForNeedsReset());
  PostRxBuffer(2048);
  Kick(NetDevice::kRxQueue);
  PeerSend(Frame(100, 1));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(rx_ring_->used_idx(), 0);
  EXPECT_TRUE(PeerReceive(10ms).empty());
  EXPECT_EQ(interrupt_.needs_reset_count(), 1);

  device_->Reset();
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  std::vector<Buffer> buffers = RxBuffers({2048});
  rx_ring_->AddChain(buffers);
  Kick(NetDevice::kRxQueue);
  ASSERT_TRUE(WaitUsed(*rx_ring_, 1));  // the frame waited in the backend
  EXPECT_EQ(GuestBytes(buffers, 100), WithNumBuffers(Frame(100, 1), 1));
}

TEST_F(NetDeviceTest, MalformedReceiveRingReportsNeedsReset) {
  ASSERT_TRUE(Activate(kFeatureVersion1).ok());
  rx_ring_->SetDesc(0, Alloc(2048), 2048, kDescFWrite | kDescFNext, 0);  // loops to itself
  rx_ring_->MakeAvailable(0);
  PeerSend(Frame(100, 1));
  EXPECT_TRUE(interrupt_.WaitForNeedsReset());
  EXPECT_EQ(rx_ring_->used_idx(), 0);
  // Transmit stopped too.
  PostTxFrame(Frame(60, 2), {});
  Kick(NetDevice::kTxQueue);
  EXPECT_TRUE(PeerReceive(50ms).empty());
  EXPECT_EQ(interrupt_.needs_reset_count(), 1);
}

TEST(NetDeviceTapTest, ExchangesArpWithTheHostThroughATap) {
  bool ran = net::testing::RunInNewNetworkNamespace([] {
    Result<std::unique_ptr<NetDevice>> device =
        NetDevice::Create("terntap1", net::testing::kGuestMac);
    ASSERT_TRUE(device.ok()) << device.error().ToString();
    net::testing::ConfigureHostSide("terntap1");

    GuestMemory memory = MakeGuestMemory(1 << 20);
    std::vector<Queue> queues;
    queues.emplace_back(NetDevice::kQueueSize);
    queues.emplace_back(NetDevice::kQueueSize);
    RingBuilder rx(memory, 256, 0);
    RingBuilder tx(memory, 256, 0x8000);
    rx.Configure(queues[NetDevice::kRxQueue]);
    tx.Configure(queues[NetDevice::kTxQueue]);
    std::vector<EventFd> events;
    for (int i = 0; i < 2; ++i) events.push_back(std::move(EventFd::Create().value()));
    std::unique_ptr<EventLoop> loop = std::move(EventLoop::Create().value());
    std::thread loop_thread([&] { loop->Run(); });
    FakeInterrupt interrupt;
    uint64_t all = (*device)->device_features();
    ActivateContext context{.memory = &memory,
                            .driver_features = all,
                            .queues = &queues,
                            .queue_events = events,
                            .interrupt = &interrupt,
                            .loop = loop.get()};
    Status status = (*device)->Activate(context);  // TUNSETOFFLOAD with every offload
    EXPECT_TRUE(status.ok()) << status.error().ToString();

    constexpr uint64_t kRxBuffers = 0x10000;
    for (uint16_t i = 0; i < 64; ++i)
      rx.AddChain(std::vector<Buffer>{{kRxBuffers + 2048ull * i, 2048, true}});
    std::vector<uint8_t> frame(net::kVnetHeaderSize, 0);
    std::vector<uint8_t> arp = net::testing::ArpRequest();
    frame.insert(frame.end(), arp.begin(), arp.end());
    ASSERT_TRUE(memory.Write(0x80000, frame).ok());
    tx.AddChain(std::vector<Buffer>{{0x80000, static_cast<uint32_t>(frame.size()), false}});
    ASSERT_TRUE(events[NetDevice::kTxQueue].Write().ok());

    // Other frames (IPv6 neighbour discovery) may come first.
    bool replied = false;
    for (uint16_t used = 0; used < 20 && !replied; ++used) {
      if (!WaitUsed(rx, used + 1)) break;
      RingBuilder::UsedElem elem = rx.used(used);
      ASSERT_LE(elem.len, 2048u);
      std::vector<uint8_t> received(elem.len);
      ASSERT_TRUE(memory.Read(kRxBuffers + 2048ull * elem.id, received).ok());
      replied = received.size() > net::kVnetHeaderSize &&
                net::testing::IsArpReply(std::span(received).subspan(net::kVnetHeaderSize));
      EXPECT_EQ(received[kNetHeaderNumBuffersOffset], 1);
    }
    EXPECT_TRUE(replied);
    EXPECT_EQ(tx.used_idx(), 1);
    (*device)->Reset();
    loop->Stop();
    loop_thread.join();
  });
  if (!ran) GTEST_SKIP() << "cannot create a network namespace (needs root)";
}

}  // namespace
}  // namespace tern::virtio
