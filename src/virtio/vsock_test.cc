// Unit tests for virtio-vsock: the test plays the guest driver on the three queues (posting rx
// buffers, sending packets on tx, reading events) while host programs use real Unix sockets in
// a temporary directory, with the device on a real event loop thread (DeviceHarness).
#include "virtio/vsock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

using namespace std::chrono_literals;
using testing::DeviceHarness;
using testing::RingBuilder;

constexpr uint64_t kGuestCid = 3;
constexpr uint16_t kQueueSize = 64;
// Guest memory reserved per descriptor: room for a full 64 KiB packet and its header.
constexpr uint32_t kSlot = 68 * 1024;
// What Linux posts on the rx queue: header plus 4 KiB.
constexpr uint32_t kRxBuffer = kVsockHeaderSize + 4096;

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }
std::string String(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

// `size` bytes of a reproducible pseudo-random pattern.
std::vector<uint8_t> Pattern(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> data(size);
  for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
  return data;
}

// FNV-1a, 64 bits, continued from `hash`.
uint64_t Fnv(std::span<const uint8_t> data, uint64_t hash = 0xcbf29ce484222325ull) {
  for (uint8_t b : data) hash = (hash ^ b) * 0x100000001b3ull;
  return hash;
}

std::chrono::nanoseconds ProcessCpuTime() {
  timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// ---- Host side: plain blocking Unix sockets with poll(2) timeouts --------------------------

sockaddr_un Address(const std::string& path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  EXPECT_LT(path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Fd ConnectUnix(const std::string& path) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = Address(path);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << path << ": " << std::strerror(errno);
  return fd;
}

Fd ListenUnix(const std::string& path) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr = Address(path);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::listen(fd.get(), 16), 0);
  return fd;
}

bool Readable(int fd, std::chrono::milliseconds timeout) {
  pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
  return ::poll(&pfd, 1, static_cast<int>(timeout.count())) == 1;
}

Fd Accept(int listener, std::chrono::milliseconds timeout = 5s) {
  if (!Readable(listener, timeout)) return Fd();
  return Fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

void WriteAll(int fd, std::span<const uint8_t> data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << std::strerror(errno);
    data = data.subspan(n);
  }
}
void WriteAll(int fd, std::string_view s) {
  WriteAll(fd, std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

// Reads `n` bytes, or what came before EOF or `timeout` of silence.
std::vector<uint8_t> ReadN(int fd, size_t n, std::chrono::milliseconds timeout = 5s) {
  std::vector<uint8_t> out(n);
  size_t got = 0;
  while (got < n && Readable(fd, timeout)) {
    ssize_t r = ::read(fd, out.data() + got, n - got);
    if (r <= 0) break;
    got += r;
  }
  out.resize(got);
  return out;
}

// A line without its '\n', or what came before EOF or a timeout.
std::string ReadLine(int fd, std::chrono::milliseconds timeout = 5s) {
  std::string line;
  char c;
  while (Readable(fd, timeout) && ::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  return line;
}

// Whether the socket reaches EOF (after any bytes, which are dropped) within `timeout`.
bool ReadsEof(int fd, std::chrono::milliseconds timeout = 5s) {
  uint8_t buf[4096];
  while (Readable(fd, timeout)) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r == 0) return true;
    if (r < 0) return errno == ECONNRESET;
  }
  return false;
}

// ---- Guest side ----------------------------------------------------------------------------

struct Packet {
  VsockHeader hdr;
  std::vector<uint8_t> payload;
  uint32_t used_len = 0;  // what the device put in the used ring
};

// One connection as the guest's vsock transport sees it, with both directions' credit.
struct GuestConn {
  uint32_t guest_port = 0;
  uint32_t host_port = 0;
  uint32_t buf_alloc = 256 * 1024;  // the guest's receive buffer
  uint32_t fwd_cnt = 0;             // bytes the guest consumed
  uint32_t peer_buf_alloc = 0;      // the device's, from its latest packet
  uint32_t peer_fwd_cnt = 0;
  uint32_t tx_cnt = 0;  // bytes the guest sent

  VsockHeader Hdr(uint16_t op, uint32_t len = 0, uint32_t flags = 0) const {
    return {.src_cid = kGuestCid,
            .dst_cid = kVsockHostCid,
            .src_port = guest_port,
            .dst_port = host_port,
            .len = len,
            .type = kVsockTypeStream,
            .op = op,
            .flags = flags,
            .buf_alloc = buf_alloc,
            .fwd_cnt = fwd_cnt};
  }
  void Update(const VsockHeader& from_device) {
    peer_buf_alloc = from_device.buf_alloc;
    peer_fwd_cnt = from_device.fwd_cnt;
  }
  int64_t Credit() const { return int64_t{peer_buf_alloc} - uint32_t(tx_cnt - peer_fwd_cnt); }
};

// The driver's side of the three queues. Descriptor d of a queue always uses the kSlot bytes
// at that queue's pool + d * kSlot, so buffers in flight never overlap; RingBuilder hands out
// descriptors in order, which this mirrors.
class GuestDriver {
 public:
  explicit GuestDriver(DeviceHarness& harness) : harness_(harness) {
    pool_[0] = harness.data_base();
    pool_[1] = pool_[0] + uint64_t{kQueueSize} * kSlot;
    pool_[2] = pool_[1] + uint64_t{kQueueSize} * kSlot;
  }

  // Posts `count` rx chains of buffers with the given sizes. With `repost`, each chain the
  // device uses is posted again when NextRx() takes it.
  void PostRx(int count, std::vector<uint32_t> sizes = {kRxBuffer}, bool repost = true) {
    for (int i = 0; i < count; ++i) {
      std::vector<Buffer> buffers = Take(VsockDevice::kRxQueue, sizes, true);
      uint16_t head = harness_.ring(VsockDevice::kRxQueue).AddChain(buffers);
      rx_chains_[head] = {buffers, repost ? sizes : std::vector<uint32_t>{}};
    }
    harness_.Kick(VsockDevice::kRxQueue);
  }

  // The next packet the device put on the rx queue, waiting up to `timeout`.
  std::optional<Packet> NextRx(std::chrono::milliseconds timeout = 5s) {
    RingBuilder& ring = harness_.ring(VsockDevice::kRxQueue);
    if (!WaitUsed(ring, rx_used_, timeout)) return std::nullopt;
    RingBuilder::UsedElem elem = ring.used(rx_used_++);
    auto it = rx_chains_.find(elem.id);
    EXPECT_NE(it, rx_chains_.end());
    if (it == rx_chains_.end()) return std::nullopt;
    auto [buffers, repost] = std::move(it->second);
    rx_chains_.erase(it);
    free_[0] += buffers.size();
    std::vector<uint8_t> bytes;
    for (const Buffer& buffer : buffers) {
      size_t n = std::min<size_t>(buffer.len, elem.len - bytes.size());
      if (n == 0) break;
      std::vector<uint8_t> part(n);
      EXPECT_TRUE(harness_.memory().Read(buffer.addr, part).ok());
      bytes.insert(bytes.end(), part.begin(), part.end());
    }
    Packet packet;
    packet.used_len = elem.len;
    if (bytes.size() >= kVsockHeaderSize) {
      packet.hdr = DecodeVsockHeader(std::span(bytes).first<kVsockHeaderSize>());
      packet.payload.assign(bytes.begin() + kVsockHeaderSize, bytes.end());
      EXPECT_EQ(packet.hdr.len, packet.payload.size());
    }
    if (!repost.empty()) PostRx(1, repost);
    return packet;
  }

  // Sends header + payload as one tx chain cut into pieces of the given sizes (default:
  // header, then payload); the last piece takes what is left.
  void Send(const VsockHeader& hdr, std::span<const uint8_t> payload = {},
            std::vector<uint32_t> split = {}) {
    std::array<uint8_t, kVsockHeaderSize> header = EncodeVsockHeader(hdr);
    std::vector<uint8_t> bytes(header.begin(), header.end());
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    SendRaw(bytes, split.empty() ? std::vector<uint32_t>{kVsockHeaderSize} : split);
  }
  void SendRaw(const std::vector<uint8_t>& bytes, std::vector<uint32_t> split) {
    std::vector<uint32_t> sizes;
    size_t offset = 0;
    for (uint32_t size : split) {
      if (offset >= bytes.size()) break;
      sizes.push_back(std::min<uint32_t>(size, bytes.size() - offset));
      offset += sizes.back();
    }
    if (offset < bytes.size()) sizes.push_back(bytes.size() - offset);
    ASSERT_TRUE(WaitTxFree(sizes.size()));
    std::vector<Buffer> buffers = Take(VsockDevice::kTxQueue, sizes, false);
    offset = 0;
    for (const Buffer& buffer : buffers) {
      EXPECT_TRUE(
          harness_.memory().Write(buffer.addr, std::span(bytes).subspan(offset, buffer.len)).ok());
      offset += buffer.len;
    }
    uint16_t head = harness_.ring(VsockDevice::kTxQueue).AddChain(buffers);
    tx_chains_[head] = buffers.size();
    harness_.Kick(VsockDevice::kTxQueue);
  }
  // Sends RW with `data` for `conn`, counting it in conn.tx_cnt.
  void SendData(GuestConn& conn, std::span<const uint8_t> data) {
    Send(conn.Hdr(kVsockOpRw, data.size()), data);
    conn.tx_cnt += data.size();
  }

  // Takes back used tx chains; true once at least `count` descriptors are free.
  bool WaitTxFree(size_t count, std::chrono::milliseconds timeout = 5s) {
    RingBuilder& ring = harness_.ring(VsockDevice::kTxQueue);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      while (ring.used_idx() != tx_used_) {
        RingBuilder::UsedElem elem = ring.used(tx_used_++);
        EXPECT_EQ(elem.len, 0u);
        free_[1] += tx_chains_[elem.id];
        tx_chains_.erase(elem.id);
      }
      if (free_[1] >= count) return true;
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(50us);
    }
  }
  // True once the device has taken every tx chain.
  bool WaitTxDone(std::chrono::milliseconds timeout = 5s) {
    return WaitTxFree(kQueueSize, timeout);
  }
  size_t tx_free() {
    (void)WaitTxFree(0);
    return free_[1];
  }

  void PostEvent() {
    std::vector<Buffer> buffers = Take(VsockDevice::kEventQueue, {4}, true);
    harness_.ring(VsockDevice::kEventQueue).AddChain(buffers);
    event_buffers_.push_back(buffers[0]);
    harness_.Kick(VsockDevice::kEventQueue);
  }
  // The id of the next event, waiting up to `timeout`.
  std::optional<uint32_t> NextEvent(std::chrono::milliseconds timeout = 5s) {
    RingBuilder& ring = harness_.ring(VsockDevice::kEventQueue);
    if (!WaitUsed(ring, event_used_, timeout)) return std::nullopt;
    RingBuilder::UsedElem elem = ring.used(event_used_++);
    EXPECT_EQ(elem.len, 4u);
    Result<uint32_t> id = harness_.memory().ReadObj<uint32_t>(event_buffers_.front().addr);
    event_buffers_.erase(event_buffers_.begin());
    return id.ok() ? std::optional(*id) : std::nullopt;
  }

 private:
  static bool WaitUsed(const RingBuilder& ring, uint16_t seen, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (ring.used_idx() == seen) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(50us);
    }
    return true;
  }

  // The next descriptors of queue `q`, with their slots as buffers of the given sizes.
  std::vector<Buffer> Take(int q, const std::vector<uint32_t>& sizes, bool write_only) {
    EXPECT_GE(free_[q], sizes.size()) << "queue " << q << " is full";
    std::vector<Buffer> buffers;
    for (uint32_t size : sizes) {
      EXPECT_LE(size, kSlot);
      buffers.push_back({pool_[q] + uint64_t{next_desc_[q]} * kSlot, size, write_only});
      next_desc_[q] = (next_desc_[q] + 1) % kQueueSize;
      --free_[q];
    }
    return buffers;
  }

  DeviceHarness& harness_;
  uint64_t pool_[3];
  uint16_t next_desc_[3] = {0, 0, 0};
  size_t free_[3] = {kQueueSize, kQueueSize, kQueueSize};
  std::map<uint16_t, std::pair<std::vector<Buffer>, std::vector<uint32_t>>> rx_chains_;
  std::map<uint16_t, size_t> tx_chains_;
  std::vector<Buffer> event_buffers_;
  uint16_t rx_used_ = 0;
  uint16_t tx_used_ = 0;
  uint16_t event_used_ = 0;
};

class VsockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/tern-vsock-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    uds_ = dir_ + "/v.sock";
  }
  void TearDown() override {
    driver_.reset();
    harness_.reset();
    device_.reset();
    std::filesystem::remove_all(dir_);
  }

  VsockOptions Options() {
    VsockOptions options;
    options.uds_path = uds_;
    options.guest_cid = kGuestCid;
    return options;
  }

  // Creates and activates the device with `options` (default: Options()).
  void Start(std::optional<VsockOptions> options = std::nullopt) {
    options_ = options.value_or(Options());
    Result<std::unique_ptr<VsockDevice>> device = VsockDevice::Create(options_);
    ASSERT_TRUE(device.ok()) << device.error().ToString();
    device_ = std::move(*device);
    harness_ = std::make_unique<DeviceHarness>(*device_, 64 << 20, kQueueSize);
    ASSERT_TRUE(harness_->Activate(kFeatureEventIdx).ok());
    driver_.emplace(*harness_);
  }

  // A host program connects to guest port `port` and the guest accepts (rx buffers must be
  // posted). Returns the host program's socket; fills `conn`.
  Fd HostConnect(uint32_t port, GuestConn& conn) {
    Fd host = ConnectUnix(uds_);
    WriteAll(host.get(), "CONNECT " + std::to_string(port) + "\n");
    std::optional<Packet> request = driver_->NextRx();
    EXPECT_TRUE(request.has_value());
    if (!request) return host;
    EXPECT_EQ(request->hdr.op, kVsockOpRequest);
    EXPECT_EQ(request->hdr.src_cid, kVsockHostCid);
    EXPECT_EQ(request->hdr.dst_cid, kGuestCid);
    EXPECT_EQ(request->hdr.dst_port, port);
    EXPECT_GE(request->hdr.src_port, VsockDevice::kFirstHostPort);
    EXPECT_EQ(request->hdr.type, kVsockTypeStream);
    EXPECT_EQ(request->hdr.buf_alloc, options_.buf_alloc);
    conn.guest_port = port;
    conn.host_port = request->hdr.src_port;
    conn.Update(request->hdr);
    driver_->Send(conn.Hdr(kVsockOpResponse));
    EXPECT_EQ(ReadLine(host.get()), "OK " + std::to_string(conn.host_port));
    return host;
  }

  // The guest connects from `guest_port` to host port `port`; a host program listens at
  // "<uds>_<port>" (`listener`) and accepts. Returns the accepted socket; fills `conn`.
  Fd GuestConnect(uint32_t port, uint32_t guest_port, int listener, GuestConn& conn) {
    conn.guest_port = guest_port;
    conn.host_port = port;
    driver_->Send(conn.Hdr(kVsockOpRequest));
    Fd host = Accept(listener);
    EXPECT_TRUE(host.valid());
    std::optional<Packet> response = driver_->NextRx();
    EXPECT_TRUE(response.has_value());
    if (!response) return host;
    EXPECT_EQ(response->hdr.op, kVsockOpResponse);
    EXPECT_EQ(response->hdr.src_cid, kVsockHostCid);
    EXPECT_EQ(response->hdr.dst_cid, kGuestCid);
    EXPECT_EQ(response->hdr.src_port, port);
    EXPECT_EQ(response->hdr.dst_port, guest_port);
    conn.Update(response->hdr);
    return host;
  }

  // The next rx packet, which must have op `op` and be for `conn`; with `skip_credit`, credit
  // packets before it are skipped.
  Packet Expect(uint16_t op, const GuestConn& conn, bool skip_credit = false) {
    std::optional<Packet> packet = driver_->NextRx();
    while (skip_credit && packet &&
           (packet->hdr.op == kVsockOpCreditUpdate || packet->hdr.op == kVsockOpCreditRequest)) {
      packet = driver_->NextRx();
    }
    EXPECT_TRUE(packet.has_value()) << "no packet; expected op " << op;
    if (!packet) return {};
    EXPECT_EQ(packet->hdr.op, op);
    EXPECT_EQ(packet->hdr.src_port, conn.host_port);
    EXPECT_EQ(packet->hdr.dst_port, conn.guest_port);
    return *packet;
  }
  // Expects an RST for the packet `hdr` the guest sent.
  void ExpectRstFor(const VsockHeader& hdr) {
    std::optional<Packet> packet = driver_->NextRx();
    ASSERT_TRUE(packet.has_value()) << "no RST";
    EXPECT_EQ(packet->hdr.op, kVsockOpRst);
    EXPECT_EQ(packet->hdr.src_cid, hdr.dst_cid);
    EXPECT_EQ(packet->hdr.dst_cid, kGuestCid);
    EXPECT_EQ(packet->hdr.src_port, hdr.dst_port);
    EXPECT_EQ(packet->hdr.dst_port, hdr.src_port);
    EXPECT_EQ(packet->hdr.type, hdr.type);
    EXPECT_EQ(packet->hdr.len, 0u);
  }
  void ExpectNoRx(std::chrono::milliseconds wait = 100ms) {
    std::optional<Packet> packet = driver_->NextRx(wait);
    EXPECT_FALSE(packet.has_value()) << "unexpected packet op " << packet->hdr.op;
  }

  std::string dir_;
  std::string uds_;
  VsockOptions options_;  // the device's
  std::unique_ptr<VsockDevice> device_;
  std::unique_ptr<DeviceHarness> harness_;
  std::optional<GuestDriver> driver_;
};

// ---- Basics --------------------------------------------------------------------------------

TEST_F(VsockTest, HeaderWireFormat) {
  VsockHeader hdr = {.src_cid = 0x0102030405060708,
                     .dst_cid = 2,
                     .src_port = 0x11223344,
                     .dst_port = 5,
                     .len = 6,
                     .type = 1,
                     .op = 5,
                     .flags = 3,
                     .buf_alloc = 0x40000,
                     .fwd_cnt = 0xdeadbeef};
  std::array<uint8_t, kVsockHeaderSize> bytes = EncodeVsockHeader(hdr);
  EXPECT_EQ(bytes[0], 0x08);
  EXPECT_EQ(bytes[7], 0x01);
  EXPECT_EQ(bytes[8], 2);
  EXPECT_EQ(bytes[16], 0x44);
  EXPECT_EQ(bytes[24], 6);
  EXPECT_EQ(bytes[28], 1);
  EXPECT_EQ(bytes[30], 5);
  EXPECT_EQ(bytes[32], 3);
  EXPECT_EQ(bytes[38], 4);
  EXPECT_EQ(bytes[43], 0xde);
  VsockHeader back = DecodeVsockHeader(bytes);
  EXPECT_EQ(back.src_cid, hdr.src_cid);
  EXPECT_EQ(back.src_port, hdr.src_port);
  EXPECT_EQ(back.fwd_cnt, hdr.fwd_cnt);
  EXPECT_EQ(back.buf_alloc, hdr.buf_alloc);
}

TEST_F(VsockTest, DeviceTypeFeaturesAndConfig) {
  VsockOptions options = Options();
  options.guest_cid = 0x12345678;
  Result<std::unique_ptr<VsockDevice>> device = VsockDevice::Create(options);
  ASSERT_TRUE(device.ok()) << device.error().ToString();
  EXPECT_EQ((*device)->device_type(), 19u);
  uint64_t features = (*device)->device_features();
  EXPECT_NE(features & kFeatureVersion1, 0u);
  EXPECT_NE(features & kVsockFeatureStream, 0u);
  EXPECT_EQ(features & kVsockFeatureSeqpacket, 0u);
  EXPECT_EQ((*device)->queue_max_sizes().size(), 3u);
  uint8_t config[12];
  std::memset(config, 0xff, sizeof(config));
  (*device)->ReadConfig(0, config);
  EXPECT_EQ(config[0], 0x78);
  EXPECT_EQ(config[3], 0x12);
  EXPECT_EQ(config[4], 0);
  EXPECT_EQ(config[7], 0);
  EXPECT_EQ(config[8], 0);  // past the structure
  uint8_t high[4];
  (*device)->ReadConfig(2, high);
  EXPECT_EQ(high[0], 0x34);
  (*device)->WriteConfig(0, high);  // ignored
  (*device)->ReadConfig(0, config);
  EXPECT_EQ(config[0], 0x78);
  // The socket exists while the device does.
  struct stat st;
  ASSERT_EQ(::stat(uds_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  device->reset();
  EXPECT_NE(::stat(uds_.c_str(), &st), 0);
}

TEST_F(VsockTest, CreateRejectsBadOptions) {
  auto create_error = [&](auto change) {
    VsockOptions options = Options();
    change(options);
    Result<std::unique_ptr<VsockDevice>> device = VsockDevice::Create(options);
    return device.ok() ? 0 : device.error().errno_value();
  };
  EXPECT_EQ(create_error([](VsockOptions& o) { o.guest_cid = 2; }), EINVAL);
  EXPECT_EQ(create_error([](VsockOptions& o) { o.guest_cid = 0xffffffff; }), EINVAL);
  EXPECT_EQ(create_error([](VsockOptions& o) { o.uds_path = ""; }), EINVAL);
  EXPECT_EQ(create_error([](VsockOptions& o) { o.uds_path = "/tmp/" + std::string(200, 'x'); }),
            EINVAL);
  EXPECT_EQ(create_error([](VsockOptions& o) { o.max_connections = 0; }), EINVAL);
  EXPECT_EQ(create_error([](VsockOptions& o) { o.buf_alloc = 100; }), EINVAL);
  EXPECT_EQ(create_error([](VsockOptions& o) { o.connect_timeout = 0ms; }), EINVAL);
  EXPECT_EQ(create_error([&](VsockOptions& o) { o.uds_path = dir_ + "/no/such/dir/v.sock"; }),
            ENOENT);
  // A regular file, or a socket someone listens on, is not replaced.
  std::string file = dir_ + "/file";
  Fd(::creat(file.c_str(), 0600));
  EXPECT_EQ(create_error([&](VsockOptions& o) { o.uds_path = file; }), EADDRINUSE);
  Fd live = ListenUnix(dir_ + "/live");
  EXPECT_EQ(create_error([&](VsockOptions& o) { o.uds_path = dir_ + "/live"; }), EADDRINUSE);
  EXPECT_EQ(create_error([](VsockOptions&) {}), 0);
}

TEST_F(VsockTest, CreateReplacesStaleSocket) {
  {
    Fd stale = ListenUnix(uds_);  // closed without unlinking: what a crashed VMM leaves
  }
  Start();
  driver_->PostRx(4);
  GuestConn conn;
  Fd host = HostConnect(52, conn);
  EXPECT_EQ(device_->connection_count(), 1u);
}

// ---- Host-initiated connections ------------------------------------------------------------

TEST_F(VsockTest, HostInitiatedConnectDataAndClose) {
  Start();
  driver_->PostRx(8);
  GuestConn conn;
  Fd host = HostConnect(1234, conn);
  EXPECT_EQ(device_->connection_count(), 1u);

  WriteAll(host.get(), "hello from the host");
  Packet data = Expect(kVsockOpRw, conn);
  EXPECT_EQ(String(data.payload), "hello from the host");
  EXPECT_EQ(data.hdr.src_cid, kVsockHostCid);
  EXPECT_EQ(data.hdr.dst_cid, kGuestCid);
  EXPECT_EQ(data.hdr.type, kVsockTypeStream);
  EXPECT_EQ(data.used_len, kVsockHeaderSize + data.payload.size());

  driver_->SendData(conn, Bytes("hello from the guest"));
  EXPECT_EQ(String(ReadN(host.get(), 20)), "hello from the guest");

  // Half close from the host: the guest still sends.
  ASSERT_EQ(::shutdown(host.get(), SHUT_WR), 0);
  Packet shutdown = Expect(kVsockOpShutdown, conn);
  EXPECT_EQ(shutdown.hdr.flags, kVsockShutdownSend);
  driver_->SendData(conn, Bytes("more"));
  EXPECT_EQ(String(ReadN(host.get(), 4)), "more");

  // The guest closes: RST, and the host program sees EOF.
  driver_->Send(conn.Hdr(kVsockOpShutdown, 0, kVsockShutdownRcv | kVsockShutdownSend));
  Expect(kVsockOpRst, conn);
  EXPECT_TRUE(ReadsEof(host.get()));
  EXPECT_EQ(device_->connection_count(), 0u);
  EXPECT_EQ(harness_->interrupt().needs_reset_count(), 0);
}

TEST_F(VsockTest, HostPortsAreUniqueAndDataArrivingBeforeOkIsKept) {
  Start();
  driver_->PostRx(8);
  GuestConn a, b;
  Fd host_a = HostConnect(80, a);
  Fd host_b = HostConnect(80, b);
  EXPECT_NE(a.host_port, b.host_port);
  // A host program that sends data right after its CONNECT line.
  Fd host = ConnectUnix(uds_);
  WriteAll(host.get(), "CONNECT 81\npipelined bytes");
  std::optional<Packet> request = driver_->NextRx();
  ASSERT_TRUE(request.has_value());
  ASSERT_EQ(request->hdr.op, kVsockOpRequest);
  GuestConn c{.guest_port = 81, .host_port = request->hdr.src_port};
  driver_->Send(c.Hdr(kVsockOpResponse));
  EXPECT_EQ(ReadLine(host.get()), "OK " + std::to_string(c.host_port));
  EXPECT_EQ(String(Expect(kVsockOpRw, c).payload), "pipelined bytes");
}

TEST_F(VsockTest, HostInitiatedRefusedByGuest) {
  Start();
  driver_->PostRx(4);
  Fd host = ConnectUnix(uds_);
  WriteAll(host.get(), "CONNECT 9999\n");
  std::optional<Packet> request = driver_->NextRx();
  ASSERT_TRUE(request.has_value());
  ASSERT_EQ(request->hdr.op, kVsockOpRequest);
  GuestConn conn{.guest_port = 9999, .host_port = request->hdr.src_port};
  driver_->Send(conn.Hdr(kVsockOpRst));  // nobody listens on 9999
  EXPECT_EQ(ReadN(host.get(), 1).size(), 0u);
  EXPECT_TRUE(ReadsEof(host.get()));
  EXPECT_EQ(device_->connection_count(), 0u);
  ExpectNoRx();
}

TEST_F(VsockTest, HostInitiatedBadRequestLinesAreClosed) {
  Start();
  driver_->PostRx(4);
  for (std::string line :
       std::vector<std::string>{"HELLO 5\n", "CONNECT\n", "CONNECT abc\n", "CONNECT 4294967295\n",
                                "CONNECT 99999999999\n", "CONNECT 5 6\n", std::string(100, 'C')}) {
    Fd host = ConnectUnix(uds_);
    WriteAll(host.get(), line);
    EXPECT_TRUE(ReadsEof(host.get())) << line;
  }
  // A host program that disconnects before finishing its line.
  {
    Fd host = ConnectUnix(uds_);
    WriteAll(host.get(), "CONN");
  }
  ExpectNoRx();
  EXPECT_EQ(device_->connection_count(), 0u);
  // "\r\n" line ends are accepted.
  Fd host = ConnectUnix(uds_);
  WriteAll(host.get(), "CONNECT 7\r\n");
  std::optional<Packet> request = driver_->NextRx();
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->hdr.op, kVsockOpRequest);
  EXPECT_EQ(request->hdr.dst_port, 7u);
}

TEST_F(VsockTest, HostInitiatedTimesOut) {
  VsockOptions options = Options();
  options.connect_timeout = 200ms;
  Start(options);
  driver_->PostRx(4);
  // The guest never answers the REQUEST.
  Fd host = ConnectUnix(uds_);
  WriteAll(host.get(), "CONNECT 5\n");
  std::optional<Packet> request = driver_->NextRx();
  ASSERT_TRUE(request.has_value());
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(ReadsEof(host.get()));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  GuestConn conn{.guest_port = 5, .host_port = request->hdr.src_port};
  Expect(kVsockOpRst, conn);
  // A late RESPONSE is answered with RST.
  driver_->Send(conn.Hdr(kVsockOpResponse));
  ExpectRstFor(conn.Hdr(kVsockOpResponse));
  // A host program that never sends its CONNECT line.
  Fd silent = ConnectUnix(uds_);
  EXPECT_TRUE(ReadsEof(silent.get()));
  EXPECT_EQ(device_->connection_count(), 0u);
}

// ---- Guest-initiated connections -----------------------------------------------------------

TEST_F(VsockTest, GuestInitiatedConnectDataAndClose) {
  Start();
  driver_->PostRx(8);
  Fd listener = ListenUnix(uds_ + "_5000");
  GuestConn conn;
  Fd host = GuestConnect(5000, 40000, listener.get(), conn);
  EXPECT_EQ(conn.peer_buf_alloc, Options().buf_alloc);

  driver_->SendData(conn, Bytes("ping"));
  EXPECT_EQ(String(ReadN(host.get(), 4)), "ping");
  WriteAll(host.get(), "pong");
  EXPECT_EQ(String(Expect(kVsockOpRw, conn).payload), "pong");

  // The guest half-closes: the host program sees EOF and can still answer.
  driver_->Send(conn.Hdr(kVsockOpShutdown, 0, kVsockShutdownSend));
  EXPECT_TRUE(ReadsEof(host.get()));
  WriteAll(host.get(), "bye");
  EXPECT_EQ(String(Expect(kVsockOpRw, conn).payload), "bye");
  // The host program closes: SHUTDOWN, then, both directions being over, RST.
  host.Reset();
  Packet shutdown = Expect(kVsockOpShutdown, conn);
  EXPECT_EQ(shutdown.hdr.flags, kVsockShutdownSend);
  Expect(kVsockOpRst, conn);
  EXPECT_EQ(device_->connection_count(), 0u);
}

TEST_F(VsockTest, GuestConnectWithoutListenerGetsRst) {
  Start();
  driver_->PostRx(4);
  GuestConn conn{.guest_port = 40001, .host_port = 6000};
  driver_->Send(conn.Hdr(kVsockOpRequest));
  ExpectRstFor(conn.Hdr(kVsockOpRequest));
  // A socket file nobody listens on any more.
  { Fd gone = ListenUnix(uds_ + "_6001"); }
  conn.host_port = 6001;
  driver_->Send(conn.Hdr(kVsockOpRequest));
  ExpectRstFor(conn.Hdr(kVsockOpRequest));
  EXPECT_EQ(device_->connection_count(), 0u);
}

TEST_F(VsockTest, GuestRstClosesHostSocket) {
  Start();
  driver_->PostRx(4);
  Fd listener = ListenUnix(uds_ + "_7");
  GuestConn conn;
  Fd host = GuestConnect(7, 1000, listener.get(), conn);
  driver_->Send(conn.Hdr(kVsockOpRst));
  EXPECT_TRUE(ReadsEof(host.get()));
  EXPECT_EQ(device_->connection_count(), 0u);
  ExpectNoRx();
}

TEST_F(VsockTest, HostSocketErrorSendsRst) {
  Start();
  driver_->PostRx(4);
  Fd listener = ListenUnix(uds_ + "_7");
  GuestConn conn;
  Fd host = GuestConnect(7, 1000, listener.get(), conn);
  // The host program closes with unread data: the guest gets SHUTDOWN on EOF, and its next
  // write fails (EPIPE), which resets the connection.
  host.Reset();
  Expect(kVsockOpShutdown, conn);
  driver_->SendData(conn, Bytes("anyone there?"));
  Expect(kVsockOpRst, conn);
  EXPECT_EQ(device_->connection_count(), 0u);
}

// ---- Flow control --------------------------------------------------------------------------

TEST_F(VsockTest, GuestCreditLimitsHostToGuestData) {
  Start();
  driver_->PostRx(16);
  GuestConn conn;
  conn.buf_alloc = 8192;
  Fd host = HostConnect(3000, conn);
  std::vector<uint8_t> data = Pattern(40000, 1);
  WriteAll(host.get(), data);

  std::vector<uint8_t> received;
  uint32_t since_update = 0;
  int credit_requests = 0;
  while (received.size() < data.size()) {
    std::optional<Packet> packet = driver_->NextRx();
    ASSERT_TRUE(packet.has_value()) << "stalled after " << received.size() << " bytes";
    ASSERT_EQ(packet->hdr.dst_port, conn.guest_port);
    if (packet->hdr.op == kVsockOpRw) {
      received.insert(received.end(), packet->payload.begin(), packet->payload.end());
      since_update += packet->payload.size();
      ASSERT_LE(since_update, conn.buf_alloc) << "the device sent past the guest's credit";
      continue;
    }
    // The device stopped at the guest's credit and asks for more.
    ASSERT_EQ(packet->hdr.op, kVsockOpCreditRequest);
    ++credit_requests;
    EXPECT_EQ(since_update, conn.buf_alloc);
    ExpectNoRx();  // nothing more without credit
    conn.fwd_cnt += since_update;
    since_update = 0;
    driver_->Send(conn.Hdr(kVsockOpCreditUpdate));
  }
  EXPECT_EQ(received, data);
  EXPECT_EQ(credit_requests, 4);  // after 8192, 16384, 24576, 32768 bytes
}

TEST_F(VsockTest, CreditRequestIsAnswered) {
  Start();
  driver_->PostRx(4);
  GuestConn conn;
  Fd host = HostConnect(3000, conn);
  driver_->SendData(conn, Bytes("12345"));
  EXPECT_EQ(ReadN(host.get(), 5).size(), 5u);
  driver_->Send(conn.Hdr(kVsockOpCreditRequest));
  Packet update = Expect(kVsockOpCreditUpdate, conn);
  EXPECT_EQ(update.hdr.buf_alloc, Options().buf_alloc);
  EXPECT_EQ(update.hdr.fwd_cnt, 5u);
}

TEST_F(VsockTest, DeviceCreditBoundsBufferingForAHostThatDoesNotRead) {
  VsockOptions options = Options();
  options.buf_alloc = 16 * 1024;
  Start(options);
  driver_->PostRx(16);
  GuestConn conn;
  Fd host = HostConnect(3000, conn);
  ASSERT_EQ(conn.peer_buf_alloc, 16u * 1024);
  // The host program does not read: the guest sends within the device's credit until the
  // socket buffer and the device's buffer are full and credit stops coming.
  std::vector<uint8_t> sent;
  uint32_t seed = 0;
  while (true) {
    if (conn.Credit() > 0) {
      std::vector<uint8_t> chunk = Pattern(std::min<int64_t>(4096, conn.Credit()), ++seed);
      driver_->SendData(conn, chunk);
      sent.insert(sent.end(), chunk.begin(), chunk.end());
      ASSERT_LT(sent.size(), 64u << 20) << "credit never ran out";
      continue;
    }
    std::optional<Packet> packet = driver_->NextRx(300ms);
    if (!packet) break;
    ASSERT_EQ(packet->hdr.op, kVsockOpCreditUpdate);
    conn.Update(packet->hdr);
  }
  ASSERT_TRUE(driver_->WaitTxDone());
  // The device holds at most buf_alloc bytes: what the guest was allowed beyond fwd_cnt.
  EXPECT_LE(uint32_t(conn.tx_cnt - conn.peer_fwd_cnt), options.buf_alloc);
  // Sending past the credit resets the connection.
  std::vector<uint8_t> excess = Pattern(options.buf_alloc, 99);
  driver_->Send(conn.Hdr(kVsockOpRw, excess.size()), excess);
  Expect(kVsockOpRst, conn);
  // The host program gets a prefix of what was sent, then EOF.
  std::vector<uint8_t> got = ReadN(host.get(), sent.size() + excess.size(), 500ms);
  EXPECT_LE(got.size(), sent.size());
  EXPECT_GE(got.size(), size_t{conn.peer_fwd_cnt});
  EXPECT_TRUE(std::equal(got.begin(), got.end(), sent.begin()));
  EXPECT_EQ(device_->connection_count(), 0u);
}

TEST_F(VsockTest, LargeTransfersBothWays) {
  Start();
  driver_->PostRx(48);
  GuestConn conn;
  Fd host = HostConnect(4000, conn);
  constexpr size_t kSize = 4 << 20;
  const std::vector<uint8_t> to_guest = Pattern(kSize, 7);
  const std::vector<uint8_t> to_host = Pattern(kSize, 8);

  std::atomic<uint64_t> host_hash = 0;
  std::atomic<size_t> host_received = 0;
  std::thread host_thread([&] {
    std::thread writer([&] { WriteAll(host.get(), to_guest); });
    uint64_t hash = Fnv({});
    std::vector<uint8_t> buf(65536);
    while (host_received < kSize && Readable(host.get(), 10s)) {
      ssize_t n = ::read(host.get(), buf.data(), buf.size());
      if (n <= 0) break;
      hash = Fnv(std::span(buf).first(n), hash);
      host_received += n;
    }
    host_hash = hash;
    writer.join();
  });

  uint64_t guest_hash = Fnv({});
  size_t guest_received = 0;
  size_t sent = 0;
  uint32_t last_update = 0;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (guest_received < kSize || sent < kSize) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "stalled: guest received " << guest_received << ", sent " << sent;
    bool progress = false;
    while (std::optional<Packet> packet = driver_->NextRx(0ms)) {
      progress = true;
      ASSERT_EQ(packet->hdr.dst_port, conn.guest_port);
      conn.Update(packet->hdr);
      if (packet->hdr.op == kVsockOpRw) {
        guest_hash = Fnv(packet->payload, guest_hash);
        guest_received += packet->payload.size();
        conn.fwd_cnt += packet->payload.size();  // the guest application reads at once
      } else {
        ASSERT_TRUE(packet->hdr.op == kVsockOpCreditUpdate ||
                    packet->hdr.op == kVsockOpCreditRequest)
            << "op " << packet->hdr.op;
      }
      if (packet->hdr.op == kVsockOpCreditRequest || conn.fwd_cnt - last_update >= 64 * 1024) {
        driver_->Send(conn.Hdr(kVsockOpCreditUpdate));
        last_update = conn.fwd_cnt;
      }
    }
    if (sent < kSize && conn.Credit() > 0 && driver_->tx_free() >= 2) {
      size_t n = std::min<size_t>({VsockDevice::kMaxPayload, size_t(conn.Credit()), kSize - sent});
      driver_->SendData(conn, std::span(to_host).subspan(sent, n));
      last_update = conn.fwd_cnt;  // every packet carries fwd_cnt
      sent += n;
      progress = true;
    }
    if (!progress) std::this_thread::sleep_for(20us);
  }
  host_thread.join();
  EXPECT_EQ(guest_hash, Fnv(to_guest));
  EXPECT_EQ(host_received, kSize);
  EXPECT_EQ(host_hash, Fnv(to_host));

  // Close both ways.
  ASSERT_EQ(::shutdown(host.get(), SHUT_WR), 0);
  Packet shutdown = Expect(kVsockOpShutdown, conn, /*skip_credit=*/true);
  EXPECT_EQ(shutdown.hdr.flags, kVsockShutdownSend);
  driver_->Send(conn.Hdr(kVsockOpShutdown, 0, kVsockShutdownSend));
  Expect(kVsockOpRst, conn, /*skip_credit=*/true);
  EXPECT_TRUE(ReadsEof(host.get()));
  EXPECT_EQ(harness_->interrupt().needs_reset_count(), 0);
}

// ---- Malformed input -----------------------------------------------------------------------

TEST_F(VsockTest, MalformedPacketsAreAnsweredWithRstOrDropped) {
  Start();
  driver_->PostRx(16);
  GuestConn unknown{.guest_port = 50000, .host_port = 60000};

  // Shorter than a header: dropped.
  driver_->SendRaw(std::vector<uint8_t>(20, 0), {});
  // Not from the guest's CID: dropped.
  VsockHeader spoofed = unknown.Hdr(kVsockOpRequest);
  spoofed.src_cid = 7;
  driver_->Send(spoofed);
  // RST for nothing: dropped.
  driver_->Send(unknown.Hdr(kVsockOpRst));
  ASSERT_TRUE(driver_->WaitTxDone());
  ExpectNoRx();

  // Answered with RST.
  VsockHeader other_cid = unknown.Hdr(kVsockOpRequest);
  other_cid.dst_cid = 9;
  VsockHeader seqpacket = unknown.Hdr(kVsockOpRequest);
  seqpacket.type = kVsockTypeSeqpacket;
  VsockHeader bad_type = unknown.Hdr(kVsockOpRequest);
  bad_type.type = 77;
  VsockHeader with_payload = unknown.Hdr(kVsockOpRequest, 4);
  for (const VsockHeader& hdr :
       {other_cid, seqpacket, bad_type, unknown.Hdr(42), unknown.Hdr(kVsockOpInvalid),
        unknown.Hdr(kVsockOpRw, 3), unknown.Hdr(kVsockOpResponse), unknown.Hdr(kVsockOpShutdown),
        unknown.Hdr(kVsockOpCreditUpdate), unknown.Hdr(kVsockOpCreditRequest)}) {
    std::vector<uint8_t> payload(hdr.len, 'x');
    driver_->Send(hdr, payload);
    ExpectRstFor(hdr);
  }
  driver_->Send(with_payload, Bytes("abcd"));
  ExpectRstFor(with_payload);
  // Lengths the chain does not hold, or beyond the largest packet.
  VsockHeader too_long = unknown.Hdr(kVsockOpRw, 100);
  driver_->Send(too_long, std::vector<uint8_t>(50, 'y'));
  ExpectRstFor(too_long);
  VsockHeader huge = unknown.Hdr(kVsockOpRw, VsockDevice::kMaxPayload + 1);
  driver_->Send(huge, std::vector<uint8_t>(VsockDevice::kMaxPayload + 1, 'z'),
                {kVsockHeaderSize, kSlot / 2});
  ExpectRstFor(huge);

  // On an established connection a bad packet resets it.
  GuestConn conn;
  Fd host = HostConnect(22, conn);
  // Header and payload cut at odd places are fine.
  std::vector<uint8_t> payload = Bytes("split across five descriptors");
  driver_->Send(conn.Hdr(kVsockOpRw, payload.size()), payload, {3, 20, 22, 7});
  conn.tx_cnt += payload.size();
  EXPECT_EQ(String(ReadN(host.get(), payload.size())), String(payload));
  VsockHeader short_rw = conn.Hdr(kVsockOpRw, 1000);
  driver_->Send(short_rw, std::vector<uint8_t>(10, 'q'));
  ExpectRstFor(short_rw);
  EXPECT_TRUE(ReadsEof(host.get()));
  // A second RESPONSE, or data after SHUTDOWN(SEND), reset too.
  GuestConn conn2;
  Fd host2 = HostConnect(23, conn2);
  driver_->Send(conn2.Hdr(kVsockOpResponse));
  ExpectRstFor(conn2.Hdr(kVsockOpResponse));
  EXPECT_TRUE(ReadsEof(host2.get()));
  GuestConn conn3;
  Fd host3 = HostConnect(24, conn3);
  driver_->Send(conn3.Hdr(kVsockOpShutdown, 0, kVsockShutdownSend));
  EXPECT_TRUE(ReadsEof(host3.get()));
  driver_->Send(conn3.Hdr(kVsockOpRw, 2), Bytes("no"));
  ExpectRstFor(conn3.Hdr(kVsockOpRw, 2));

  EXPECT_EQ(device_->connection_count(), 0u);
  EXPECT_EQ(harness_->interrupt().needs_reset_count(), 0);
}

TEST_F(VsockTest, UnusableRxChainsComeBackEmpty) {
  Start();
  driver_->PostRx(1, {kVsockHeaderSize}, /*repost=*/false);  // no room for a payload
  driver_->PostRx(1, {16}, /*repost=*/false);                // shorter than a header
  driver_->PostRx(1, {kRxBuffer}, /*repost=*/false);
  Fd host = ConnectUnix(uds_);
  WriteAll(host.get(), "CONNECT 5\n");
  for (int i = 0; i < 2; ++i) {
    std::optional<Packet> empty = driver_->NextRx();
    ASSERT_TRUE(empty.has_value());
    EXPECT_EQ(empty->used_len, 0u);
  }
  std::optional<Packet> request = driver_->NextRx();
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(request->hdr.op, kVsockOpRequest);
  EXPECT_EQ(harness_->interrupt().needs_reset_count(), 0);
}

TEST_F(VsockTest, RxHeaderSplitAcrossBuffers) {
  Start();
  driver_->PostRx(4, {10, 30, 4 + 3, 100}, /*repost=*/true);
  GuestConn conn;
  Fd host = HostConnect(1, conn);
  WriteAll(host.get(), "0123456789");
  Packet data = Expect(kVsockOpRw, conn);
  EXPECT_EQ(String(data.payload), "0123456789");
}

// ---- Limits --------------------------------------------------------------------------------

TEST_F(VsockTest, ConnectionLimit) {
  VsockOptions options = Options();
  options.max_connections = 2;
  Start(options);
  driver_->PostRx(8);
  Fd listener = ListenUnix(uds_ + "_5");
  GuestConn conn;
  Fd first = GuestConnect(5, 100, listener.get(), conn);
  Fd waiting = ConnectUnix(uds_);  // has not sent its CONNECT line: counts too
  // Accepted after `waiting` (the backlog is in order), over the limit.
  Fd refused = ConnectUnix(uds_);
  EXPECT_TRUE(ReadsEof(refused.get()));
  GuestConn conn2{.guest_port = 101, .host_port = 5};
  driver_->Send(conn2.Hdr(kVsockOpRequest));
  ExpectRstFor(conn2.Hdr(kVsockOpRequest));
  // A slot frees up when a connection ends.
  driver_->Send(conn.Hdr(kVsockOpRst));
  EXPECT_TRUE(ReadsEof(first.get()));
  Fd second = GuestConnect(5, 102, listener.get(), conn2);
  EXPECT_TRUE(second.valid());
}

TEST_F(VsockTest, NoBusyLoopWithoutRxBuffers) {
  Start();
  driver_->PostRx(1, {kRxBuffer}, /*repost=*/false);  // for the REQUEST only
  GuestConn conn;
  Fd host = HostConnect(8, conn);
  WriteAll(host.get(), std::vector<uint8_t>(100000, 'a'));  // waits in the socket
  std::this_thread::sleep_for(20ms);
  auto cpu = ProcessCpuTime();
  std::this_thread::sleep_for(300ms);
  EXPECT_LT(ProcessCpuTime() - cpu, 60ms);
  driver_->PostRx(1, {kRxBuffer}, /*repost=*/false);
  Packet data = Expect(kVsockOpRw, conn);
  EXPECT_EQ(data.payload.size(), 4096u);
}

TEST_F(VsockTest, RstRepliesAreBoundedByTxBackpressure) {
  Start();
  // No rx buffers: every refused REQUEST leaves an RST queued, up to kMaxPendingRst.
  GuestConn conn{.guest_port = 1, .host_port = 7};
  size_t total = VsockDevice::kMaxPendingRst + 5;
  for (size_t i = 0; i < VsockDevice::kMaxPendingRst; ++i) {
    conn.guest_port = 1000 + i;
    driver_->Send(conn.Hdr(kVsockOpRequest));
  }
  ASSERT_TRUE(driver_->WaitTxDone());
  for (size_t i = VsockDevice::kMaxPendingRst; i < total; ++i) {
    conn.guest_port = 1000 + i;
    driver_->Send(conn.Hdr(kVsockOpRequest));
  }
  // The device stops taking tx chains...
  EXPECT_FALSE(driver_->WaitTxDone(200ms));
  // ...until the driver takes the replies.
  driver_->PostRx(32);
  for (size_t i = 0; i < total; ++i) {
    std::optional<Packet> rst = driver_->NextRx();
    ASSERT_TRUE(rst.has_value()) << i;
    EXPECT_EQ(rst->hdr.op, kVsockOpRst);
    EXPECT_EQ(rst->hdr.dst_port, 1000 + i);
  }
  EXPECT_TRUE(driver_->WaitTxDone());
  ExpectNoRx();
}

// ---- Reset ---------------------------------------------------------------------------------

TEST_F(VsockTest, TransportResetEventClosesConnections) {
  Start();
  driver_->PostRx(4);
  GuestConn conn;
  Fd host = HostConnect(1, conn);
  // No event buffer yet: the connections go now, the event when the driver posts a buffer.
  ASSERT_TRUE(device_->SendTransportReset().ok());
  EXPECT_TRUE(ReadsEof(host.get()));
  EXPECT_EQ(device_->connection_count(), 0u);
  EXPECT_FALSE(driver_->NextEvent(100ms).has_value());
  driver_->PostEvent();
  EXPECT_EQ(driver_->NextEvent(), kVsockEventTransportReset);
  // With a buffer posted it goes out at once, and new connections work afterwards.
  driver_->PostEvent();
  ASSERT_TRUE(device_->SendTransportReset().ok());
  EXPECT_EQ(driver_->NextEvent(), kVsockEventTransportReset);
  Fd again = HostConnect(2, conn);
  EXPECT_EQ(device_->connection_count(), 1u);
  ExpectNoRx();
}

TEST_F(VsockTest, DeviceResetClosesConnections) {
  Start();
  driver_->PostRx(4);
  GuestConn conn;
  Fd host = HostConnect(1, conn);
  Fd listener = ListenUnix(uds_ + "_9");
  GuestConn conn2;
  Fd host2 = GuestConnect(9, 77, listener.get(), conn2);
  device_->Reset();
  EXPECT_TRUE(ReadsEof(host.get()));
  EXPECT_TRUE(ReadsEof(host2.get()));
  EXPECT_EQ(device_->connection_count(), 0u);
  EXPECT_TRUE(device_->SendTransportReset().ok());  // not active: nothing to do
  // The listening socket stays: host programs can connect and wait for the next activation.
  Fd waiting = ConnectUnix(uds_);
  EXPECT_TRUE(waiting.valid());
}

// ---- Metrics -------------------------------------------------------------------------------

TEST_F(VsockTest, CountsPacketsBytesAndConnections) {
  Start();
  EXPECT_EQ(device_->Metrics(), nlohmann::json({{"rx_packets_count", 0},
                                                {"rx_bytes_count", 0},
                                                {"tx_packets_count", 0},
                                                {"tx_bytes_count", 0},
                                                {"conns_added", 0},
                                                {"conns_removed", 0}}));
  driver_->PostRx(8);
  Fd listener = ListenUnix(uds_ + "_5000");
  GuestConn conn;
  Fd host = GuestConnect(5000, 40000, listener.get(), conn);  // tx REQUEST, rx RESPONSE
  driver_->SendData(conn, Bytes("ping"));
  EXPECT_EQ(String(ReadN(host.get(), 4)), "ping");
  WriteAll(host.get(), "pong!");
  EXPECT_EQ(String(Expect(kVsockOpRw, conn).payload), "pong!");
  driver_->Send(conn.Hdr(kVsockOpRst));
  EXPECT_TRUE(ReadsEof(host.get()));
  // Refused: a packet each way, no connection.
  GuestConn refused;
  refused.guest_port = 40001;
  refused.host_port = 6000;
  driver_->Send(refused.Hdr(kVsockOpRequest));
  ExpectRstFor(refused.Hdr(kVsockOpRequest));
  VsockCounters counters = device_->Counters();
  EXPECT_EQ(counters.rx_packets_count, 3u);
  EXPECT_EQ(counters.rx_bytes_count, 5u);
  EXPECT_EQ(counters.tx_packets_count, 4u);
  EXPECT_EQ(counters.tx_bytes_count, 4u);
  EXPECT_EQ(counters.conns_added, 1u);
  EXPECT_EQ(counters.conns_removed, 1u);

  // A host-initiated connection, closed by a transport reset.
  GuestConn from_host;
  Fd other = HostConnect(1234, from_host);  // rx REQUEST, tx RESPONSE
  ASSERT_TRUE(device_->SendTransportReset().ok());
  EXPECT_TRUE(ReadsEof(other.get()));
  counters = device_->Counters();
  EXPECT_EQ(counters.rx_packets_count, 4u);
  EXPECT_EQ(counters.tx_packets_count, 5u);
  EXPECT_EQ(counters.conns_added, 2u);
  EXPECT_EQ(counters.conns_removed, 2u);
}

}  // namespace
}  // namespace tern::virtio
