// libFuzzer target for virtio-net (src/virtio/net.h) with a hostile guest and a hostile host:
// the input is a script of driver and backend actions run against receiveq1 and transmitq1 of a
// NetDevice whose backend is a test double: descriptors written anywhere (chains, indirect
// tables, loops, buffers outside guest RAM), avail ring updates, queue notifications, frames of
// any length arriving from the host, a backend that is full or failing, and device resets with
// other features. Checks that the device only hands the backend guest RAM (and its own overflow
// byte), sends only frames of kHeaderSize..kMaxFrameSize bytes, reports DEVICE_NEEDS_RESET at
// most once per activation and uses no buffer after it, and leaves nothing watched after Reset().
#include <fuzzer/FuzzedDataProvider.h>
#include <limits.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "base/event_fd.h"
#include "base/guest_memory.h"
#include "fuzz_util.h"
#include "net/tap.h"
#include "virtio/net.h"

namespace tern::virtio {
namespace {

using fuzzing::Check;
using fuzzing::InGuestMemory;

// Guest RAM: region 0 holds the rings and most buffers; region 1 lies after a hole.
constexpr uint64_t kRamSize = 0x40000;
constexpr uint64_t kHighBase = 0x100000;
constexpr uint64_t kHighSize = 0x1000;
constexpr uint64_t kDataBase = 0x4000;  // buffers and indirect tables, up to kRamSize

// Per queue (index NetDevice::kRxQueue / kTxQueue): descriptor table, avail ring, used ring.
struct RingLayout {
  uint64_t desc;
  uint64_t avail;
  uint64_t used;
};
constexpr RingLayout kRings[2] = {{0x0000, 0x1000, 0x1400}, {0x2000, 0x3000, 0x3400}};

// A frame the host has for the guest.
struct HostFrame {
  size_t length = 0;
  bool report_full_length = false;  // when it does not fit: the full length, else what fit
  bool error = false;               // Receive() fails instead
};

enum class SendMode { kAccept, kFull, kError };

// The backend: frames come from the script, sent frames are checked and counted.
class FuzzBackend : public net::Backend {
 public:
  FuzzBackend(const GuestMemory& memory, EventFd fd) : memory_(memory), fd_(std::move(fd)) {}

  int fd() const override { return fd_.fd(); }

  Result<size_t> Receive(std::span<const iovec> iov) override {
    ++calls;
    // The guest's buffers, then the device's own byte that tells a frame that did not fit.
    Check(!iov.empty() && iov.size() <= IOV_MAX && iov.back().iov_len == 1);
    size_t capacity = 0;
    for (const iovec& v : iov.first(iov.size() - 1)) {
      Check(InGuestMemory(memory_, v.iov_base, v.iov_len));
      capacity += v.iov_len;
    }
    Check(capacity >= net::kVnetHeaderSize);
    capacity += 1;
    if (frames.empty()) return 0;
    HostFrame frame = frames.front();
    frames.pop_front();
    if (frame.error) return Error("fuzz: receive failed", EIO);
    size_t stored = std::min(frame.length, capacity);
    std::vector<uint8_t> bytes(stored, 0x5a);
    Check(CopyToIovecs(iov, 0, bytes));
    return frame.report_full_length ? frame.length : stored;
  }

  Result<bool> Send(std::span<const iovec> iov) override {
    ++calls;
    Check(iov.size() <= NetDevice::kMaxBuffers);
    size_t length = 0;
    uint8_t sum = 0;
    for (const iovec& v : iov) {
      Check(InGuestMemory(memory_, v.iov_base, v.iov_len));
      for (size_t i = 0; i < v.iov_len; ++i) sum += static_cast<const uint8_t*>(v.iov_base)[i];
      length += v.iov_len;
    }
    Check(length >= NetDevice::kHeaderSize && length <= NetDevice::kMaxFrameSize);
    checksum += sum;
    switch (send_mode) {
      case SendMode::kAccept:
        return true;
      case SendMode::kFull:
        return false;
      case SendMode::kError:
        return Error("fuzz: send failed", EIO);
    }
    return true;
  }

  Status SetOffload(unsigned) override {
    return offload_fails ? Status(Error("fuzz: offload refused", EINVAL)) : Ok();
  }

  std::deque<HostFrame> frames;
  SendMode send_mode = SendMode::kAccept;
  bool offload_fails = false;
  uint64_t calls = 0;  // Receive() and Send()
  uint8_t checksum = 0;

 private:
  const GuestMemory& memory_;
  EventFd fd_;
};

struct Fixture {
  Fixture() {
    fuzzing::SilenceLogs();
    RegionSpec specs[] = {{0, kRamSize}, {kHighBase, kHighSize}};
    memory = std::make_unique<GuestMemory>(std::move(GuestMemory::Create(specs)).value());
    auto owned = std::make_unique<FuzzBackend>(*memory, std::move(EventFd::Create()).value());
    backend = owned.get();
    device = std::make_unique<NetDevice>(std::move(owned), net::MacAddress{2, 0, 0, 0, 0, 1});
    for (int i = 0; i < 2; ++i) events.push_back(std::move(EventFd::Create()).value());
  }

  std::unique_ptr<GuestMemory> memory;
  FuzzBackend* backend;
  std::unique_ptr<NetDevice> device;
  fuzzing::ManualLoop loop;
  fuzzing::RecordingInterrupt interrupt;
  std::vector<EventFd> events;
  std::vector<Queue> queues;
};

template <typename T>
void Put(const GuestMemory& memory, uint64_t gpa, T value) {
  (void)memory.WriteObj(gpa, value);
}

// The driver's side of one run: ring state and what the device has done.
class Script {
 public:
  Script(Fixture& fixture, FuzzedDataProvider& input)
      : f_(fixture), memory_(*fixture.memory), input_(input) {}

  void Run() {
    Activate();
    for (int step = 0; step < 256 && input_.remaining_bytes() > 0; ++step) {
      Step();
      CheckInvariants();
    }
    f_.device->Reset();
    Check(!f_.loop.watched(f_.events[0].fd()) && !f_.loop.watched(f_.events[1].fd()) &&
          !f_.loop.watched(f_.backend->fd()));
  }

 private:
  // What the transport does at DRIVER_OK: queues of fuzzed sizes on fresh rings.
  void Activate() {
    for (const RingLayout& rings : kRings) {
      std::vector<uint8_t> zeros(kDataBase / 2, 0);
      (void)memory_.Write(rings.desc, zeros);
    }
    uint64_t features =
        (input_.ConsumeIntegral<uint64_t>() & f_.device->device_features()) | kFeatureVersion1;
    f_.queues.clear();
    for (uint16_t q = 0; q < 2; ++q) {
      Queue& queue = f_.queues.emplace_back(NetDevice::kQueueSize);
      sizes_[q] = uint16_t{1} << input_.ConsumeIntegralInRange(0, 8);
      queue.set_size(sizes_[q]);
      queue.set_desc_table(kRings[q].desc);
      queue.set_avail_ring(kRings[q].avail);
      queue.set_used_ring(kRings[q].used);
      queue.set_ready(input_.ConsumeIntegralInRange(0, 31) != 0);
      queue.set_event_idx((features & kFeatureEventIdx) != 0);
      queue.set_indirect((features & kFeatureIndirectDesc) != 0);
      next_desc_[q] = 0;
      avail_idx_[q] = 0;
      used_seen_[q] = 0;
    }
    f_.backend->offload_fails = input_.ConsumeIntegralInRange(0, 31) == 0;
    ActivateContext context{.memory = &memory_,
                            .driver_features = features,
                            .queues = &f_.queues,
                            .queue_events = f_.events,
                            .interrupt = &f_.interrupt,
                            .loop = &f_.loop};
    (void)f_.device->Activate(context);
    f_.interrupt.needs_reset = 0;
    stopped_.reset();
  }

  void Step() {
    uint16_t q = input_.ConsumeBool() ? NetDevice::kTxQueue : NetDevice::kRxQueue;
    switch (input_.ConsumeIntegralInRange(0, 10)) {
      case 0:  // one descriptor, anything in it, in the table or in an indirect table
        WriteDescriptor(q);
        break;
      case 1:
        AddChain(q);
        break;
      case 2:  // any head
        MakeAvailable(q, input_.ConsumeIntegral<uint16_t>());
        break;
      case 3:  // any avail idx
        avail_idx_[q] = input_.ConsumeIntegral<uint16_t>();
        Put<uint16_t>(memory_, kRings[q].avail + 2, avail_idx_[q]);
        break;
      case 4:  // avail flags, or used_event
        Put<uint16_t>(memory_, kRings[q].avail + (input_.ConsumeBool() ? 0 : 4 + 2ull * sizes_[q]),
                      input_.ConsumeIntegral<uint16_t>());
        break;
      case 5:  // the driver notifies the queue
        (void)f_.events[q].Write();
        f_.loop.Dispatch(f_.events[q].fd());
        break;
      case 6:  // the backend descriptor is ready (or the loop wakes up spuriously)
        f_.loop.Dispatch(f_.backend->fd());
        break;
      case 7:
        f_.backend->frames.push_back(
            {FrameLength(), input_.ConsumeBool(), input_.ConsumeIntegralInRange(0, 15) == 0});
        break;
      case 8:
        f_.backend->send_mode = input_.PickValueInArray(
            {SendMode::kAccept, SendMode::kAccept, SendMode::kFull, SendMode::kError});
        break;
      case 9:  // the driver resets the device and sets it up again
        f_.device->Reset();
        Activate();
        break;
      default:  // bytes of a buffer or indirect table
        Put<uint8_t>(memory_, kDataBase + input_.ConsumeIntegralInRange(0ul, kRamSize - kDataBase),
                     input_.ConsumeIntegral<uint8_t>());
        break;
    }
  }

  // The device used only heads of its queue, and nothing at all once it reported
  // DEVICE_NEEDS_RESET (the rings and the backend stay as they were).
  void CheckInvariants() {
    Check(f_.interrupt.needs_reset <= 1);
    std::array<uint16_t, 2> used = {UsedIdx(0), UsedIdx(1)};
    for (uint16_t q = 0; q < 2; ++q) {
      for (; used_seen_[q] != used[q]; ++used_seen_[q]) {
        uint64_t entry = kRings[q].used + 4 + 8ull * (used_seen_[q] % sizes_[q]);
        Check(memory_.ReadObj<uint32_t>(entry).value() < sizes_[q]);
      }
    }
    if (stopped_) {
      Check(stopped_->first == used && stopped_->second == f_.backend->calls);
    } else if (f_.interrupt.needs_reset > 0) {
      stopped_.emplace(used, f_.backend->calls);
    }
  }

  uint16_t UsedIdx(uint16_t q) { return memory_.ReadObj<uint16_t>(kRings[q].used + 2).value(); }

  void WriteDescriptor(uint16_t q) {
    uint64_t table = kRings[q].desc;
    uint32_t entries = sizes_[q];
    if (input_.ConsumeBool()) {
      table = kDataBase + 16 * input_.ConsumeIntegralInRange<uint64_t>(0, 63);
      entries = 64;
    }
    uint64_t at = table + 16 * input_.ConsumeIntegralInRange<uint32_t>(0, entries - 1);
    Put<uint64_t>(memory_, at, Address());
    Put<uint32_t>(memory_, at + 8, Length());
    Put<uint16_t>(memory_, at + 12, input_.ConsumeIntegral<uint16_t>() & 7);  // NEXT|WRITE|INDIRECT
    Put<uint16_t>(memory_, at + 14, input_.ConsumeIntegral<uint16_t>());
  }

  // A well-formed chain, mostly: buffers in guest RAM in the queue's direction (readable for
  // transmit, writable for receive), direct or through an indirect table.
  void AddChain(uint16_t q) {
    unsigned count = input_.ConsumeIntegralInRange(1, 8);
    bool indirect = input_.ConsumeBool();
    uint64_t table = indirect ? kRamSize - 0x1000 + 0x80 * (avail_idx_[q] % 32) : kRings[q].desc;
    uint16_t head = next_desc_[q];
    for (unsigned i = 0; i < count; ++i) {
      uint32_t len = input_.ConsumeBool() ? input_.ConsumeIntegralInRange(0, 64)
                                          : input_.ConsumeIntegralInRange(0, 4096);
      uint64_t addr = kDataBase + input_.ConsumeIntegralInRange<uint64_t>(0, 0x30000 - len);
      bool write = (q == NetDevice::kRxQueue) != (input_.ConsumeIntegralInRange(0, 15) == 0);
      uint16_t index = indirect ? i : (next_desc_[q] + i) % sizes_[q];
      uint16_t next = indirect ? i + 1 : (index + 1) % sizes_[q];
      uint16_t flags = (i + 1 < count ? kDescFNext : 0) | (write ? kDescFWrite : 0);
      uint64_t at = table + 16 * index;
      Put<uint64_t>(memory_, at, addr);
      Put<uint32_t>(memory_, at + 8, len);
      Put<uint16_t>(memory_, at + 12, flags);
      Put<uint16_t>(memory_, at + 14, next);
    }
    if (indirect) {
      uint64_t at = kRings[q].desc + 16 * head;
      Put<uint64_t>(memory_, at, table);
      Put<uint32_t>(memory_, at + 8, 16 * count);
      Put<uint16_t>(memory_, at + 12, kDescFIndirect);
      next_desc_[q] = (head + 1) % sizes_[q];
    } else {
      next_desc_[q] = (head + count) % sizes_[q];
    }
    MakeAvailable(q, head);
  }

  void MakeAvailable(uint16_t q, uint16_t head) {
    Put<uint16_t>(memory_, kRings[q].avail + 4 + 2ull * (avail_idx_[q] % sizes_[q]), head);
    Put<uint16_t>(memory_, kRings[q].avail + 2, ++avail_idx_[q]);
  }

  // A guest address: mostly buffers in RAM, else the edges of RAM, the hole, or anything.
  uint64_t Address() {
    switch (input_.ConsumeIntegralInRange(0, 7)) {
      case 0:
        return kRamSize - input_.ConsumeIntegralInRange<uint64_t>(0, 64);
      case 1:
        return kHighBase + input_.ConsumeIntegralInRange<uint64_t>(0, kHighSize);
      case 2:
        return input_.ConsumeIntegral<uint64_t>();
      default:
        return kDataBase + input_.ConsumeIntegralInRange<uint64_t>(0, 0x30000);
    }
  }

  uint32_t Length() {
    switch (input_.ConsumeIntegralInRange(0, 4)) {
      case 0:
        return input_.ConsumeIntegralInRange(0, 32);
      case 1:
        return input_.ConsumeIntegral<uint32_t>();
      default:
        return input_.ConsumeIntegralInRange(0, 0x2000);
    }
  }

  size_t FrameLength() {
    switch (input_.ConsumeIntegralInRange(0, 3)) {
      case 0:
        return input_.ConsumeIntegralInRange<size_t>(0, 16);
      case 1:
        return input_.ConsumeIntegralInRange<size_t>(0, NetDevice::kMaxFrameSize + 16);
      default:
        return input_.ConsumeIntegralInRange<size_t>(0, 2048);
    }
  }

  Fixture& f_;
  const GuestMemory& memory_;
  FuzzedDataProvider& input_;
  std::array<uint16_t, 2> sizes_ = {1, 1};
  std::array<uint16_t, 2> next_desc_ = {};
  std::array<uint16_t, 2> avail_idx_ = {};
  std::array<uint16_t, 2> used_seen_ = {};
  // Used indices and backend calls when the device reported DEVICE_NEEDS_RESET.
  std::optional<std::pair<std::array<uint16_t, 2>, uint64_t>> stopped_;
};

}  // namespace
}  // namespace tern::virtio

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tern::virtio;
  static Fixture* fixture = new Fixture;
  for (const tern::MemoryRegion& region : fixture->memory->regions()) {
    std::memset(region.host, 0, region.size);
  }
  fixture->backend->frames.clear();
  fixture->backend->send_mode = SendMode::kAccept;
  FuzzedDataProvider input(data, size);
  Script(*fixture, input).Run();
  return 0;
}
