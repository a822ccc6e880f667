// Test helpers for virtio devices and queues: guest memory for tests, a VirtioInterrupt that
// counts notifications, RingBuilder, which plays the driver's side of a split virtqueue
// (virtio 1.2 §2.7) by writing descriptors and avail entries and reading used entries, and
// DeviceHarness, which activates a VirtioDevice with all of these and a running event loop.
// Header-only; for *_test.cc files (uses GoogleTest assertions).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/guest_memory.h"
#include "virtio/queue.h"
#include "virtio/virtio_device.h"

namespace tern::virtio::testing {

// One region of guest RAM at guest-physical 0, `size` bytes (a multiple of 4 KiB).
inline GuestMemory MakeGuestMemory(uint64_t size = 1 << 20) {
  RegionSpec spec{0, size};
  Result<GuestMemory> memory = GuestMemory::Create(std::span(&spec, 1));
  EXPECT_TRUE(memory.ok());
  return std::move(memory).value();
}

// Guest RAM made of `regions` (GuestMemory::Create()), e.g. with a hole like the MMIO gap.
inline GuestMemory MakeGuestMemory(std::span<const RegionSpec> regions) {
  Result<GuestMemory> memory = GuestMemory::Create(regions);
  EXPECT_TRUE(memory.ok());
  return std::move(memory).value();
}

// Counts used buffer notifications per queue, configuration change notifications and
// DEVICE_NEEDS_RESET reports. Thread-safe: devices notify from the event loop thread while the
// test waits.
class FakeInterrupt : public VirtioInterrupt {
 public:
  Status NotifyQueue(uint16_t queue_index) override {
    std::lock_guard lock(mutex_);
    ++queue_counts_[queue_index];
    changed_.notify_all();
    return Ok();
  }
  Status NotifyConfig() override {
    std::lock_guard lock(mutex_);
    ++config_count_;
    changed_.notify_all();
    return Ok();
  }
  Status NotifyNeedsReset() override {
    std::lock_guard lock(mutex_);
    ++needs_reset_count_;
    changed_.notify_all();
    return Ok();
  }

  int queue_count(uint16_t queue_index) const {
    std::lock_guard lock(mutex_);
    auto it = queue_counts_.find(queue_index);
    return it == queue_counts_.end() ? 0 : it->second;
  }
  int config_count() const {
    std::lock_guard lock(mutex_);
    return config_count_;
  }
  int needs_reset_count() const {
    std::lock_guard lock(mutex_);
    return needs_reset_count_;
  }

  // Waits up to `timeout` until queue `queue_index` has had at least `count` notifications;
  // returns whether it has.
  bool WaitForQueue(uint16_t queue_index, int count,
                    std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return queue_counts_[queue_index] >= count; });
  }
  // Waits up to `timeout` until NotifyNeedsReset() has been called at least `count` times;
  // returns whether it has.
  bool WaitForNeedsReset(int count = 1,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return needs_reset_count_ >= count; });
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<uint16_t, int> queue_counts_;
  int config_count_ = 0;
  int needs_reset_count_ = 0;
};

// The driver side of one split virtqueue of `size` entries laid out from guest address `base`
// (16-byte aligned): the descriptor table at base, the available ring right after it, the used
// ring at the next 4-byte boundary; end() is the first byte after the rings. Buffers and
// indirect tables go elsewhere in guest memory, wherever the test puts them.
//
// Index fields are read and written with atomics, so a test may drive a device processing the
// queue on another thread.
class RingBuilder {
 public:
  struct UsedElem {
    uint32_t id;
    uint32_t len;
  };

  RingBuilder(const GuestMemory& memory, uint16_t size, uint64_t base = 0)
      : memory_(memory),
        size_(size),
        desc_table_(base),
        avail_ring_(base + 16ull * size),
        used_ring_((avail_ring_ + 6 + 2ull * size + 3) & ~3ull) {}

  uint16_t size() const { return size_; }
  uint64_t desc_table() const { return desc_table_; }
  uint64_t avail_ring() const { return avail_ring_; }
  uint64_t used_ring() const { return used_ring_; }
  uint64_t end() const { return used_ring_ + 6 + 8ull * size_; }

  // What the transport does when the driver enables the queue: size, ring addresses, ready.
  void Configure(Queue& queue) const {
    queue.set_size(size_);
    queue.set_desc_table(desc_table_);
    queue.set_avail_ring(avail_ring_);
    queue.set_used_ring(used_ring_);
    queue.set_ready(true);
  }

  // Writes descriptor `index` of the table at `table` (default: the queue's own table).
  void SetDesc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next,
               uint64_t table = UINT64_MAX) {
    uint64_t gpa = (table == UINT64_MAX ? desc_table_ : table) + 16ull * index;
    Write(gpa, addr);
    Write(gpa + 8, len);
    Write(gpa + 12, flags);
    Write(gpa + 14, next);
  }

  // Writes `buffers` as a chain in the next free descriptors (wrapping around the table) and
  // makes it available. Returns the head index.
  uint16_t AddChain(std::span<const Buffer> buffers) {
    uint16_t head = next_desc_;
    for (size_t i = 0; i < buffers.size(); ++i) {
      uint16_t index = next_desc_;
      next_desc_ = (next_desc_ + 1) % size_;
      bool last = i + 1 == buffers.size();
      SetDesc(index, buffers[i].addr, buffers[i].len, Flags(buffers[i], last), next_desc_);
    }
    MakeAvailable(head);
    return head;
  }

  // Writes `buffers` as an indirect table at `table` and one descriptor (the next free one)
  // pointing to it, and makes that available. Returns the head index.
  uint16_t AddIndirectChain(uint64_t table, std::span<const Buffer> buffers) {
    for (size_t i = 0; i < buffers.size(); ++i) {
      bool last = i + 1 == buffers.size();
      SetDesc(i, buffers[i].addr, buffers[i].len, Flags(buffers[i], last), i + 1, table);
    }
    uint16_t head = next_desc_;
    next_desc_ = (next_desc_ + 1) % size_;
    SetDesc(head, table, 16 * buffers.size(), kDescFIndirect, 0);
    MakeAvailable(head);
    return head;
  }

  // Puts `head` in the next avail ring entry and increments avail idx (release store).
  void MakeAvailable(uint16_t head) {
    uint16_t idx = avail_idx();
    Write<uint16_t>(avail_ring_ + 4 + 2ull * (idx % size_), head);
    set_avail_idx(idx + 1);
  }

  uint16_t avail_idx() const { return Load(avail_ring_ + 2); }
  void set_avail_idx(uint16_t idx) { Store(avail_ring_ + 2, idx); }
  void set_avail_flags(uint16_t flags) { Write(avail_ring_, flags); }
  void set_used_event(uint16_t idx) { Write<uint16_t>(avail_ring_ + 4 + 2ull * size_, idx); }

  uint16_t used_idx() const { return Load(used_ring_ + 2); }
  uint16_t used_flags() const { return Load(used_ring_); }
  uint16_t avail_event() const { return Load(used_ring_ + 4 + 8ull * size_); }
  // The used ring entry for used index `idx` (taken modulo size()).
  UsedElem used(uint16_t idx) const {
    Result<UsedElem> elem = memory_.ReadObj<UsedElem>(used_ring_ + 4 + 8ull * (idx % size_));
    EXPECT_TRUE(elem.ok());
    return elem.ok() ? *elem : UsedElem{};
  }

 private:
  static uint16_t Flags(const Buffer& buffer, bool last) {
    return (buffer.write_only ? kDescFWrite : 0) | (last ? 0 : kDescFNext);
  }

  template <typename T>
  void Write(uint64_t gpa, T value) {
    EXPECT_TRUE(memory_.WriteObj(gpa, value).ok()) << "guest address " << gpa;
  }
  uint16_t* Pointer(uint64_t gpa) const {
    Result<std::span<uint8_t>> bytes = memory_.Slice(gpa, 2);
    EXPECT_TRUE(bytes.ok());
    return reinterpret_cast<uint16_t*>(bytes->data());
  }
  uint16_t Load(uint64_t gpa) const { return __atomic_load_n(Pointer(gpa), __ATOMIC_ACQUIRE); }
  void Store(uint64_t gpa, uint16_t value) {
    __atomic_store_n(Pointer(gpa), value, __ATOMIC_RELEASE);
  }

  const GuestMemory& memory_;
  uint16_t size_;
  uint64_t desc_table_;
  uint64_t avail_ring_;
  uint64_t used_ring_;
  uint16_t next_desc_ = 0;
};

// Runs a VirtioDevice the way a transport does, for device tests: guest memory, per queue a
// RingBuilder, a Queue and a queue-notify EventFd, a FakeInterrupt, and an EventLoop running on
// its own thread. Queue i's rings start at ring(i).desc_table(); buffers can go anywhere from
// data_base() up. The device must outlive the harness; the destructor resets the device and
// stops the loop.
class DeviceHarness {
 public:
  // `queue_size` 0: each queue gets the device's maximum size.
  explicit DeviceHarness(VirtioDevice& device, uint64_t memory_size = 16 << 20,
                         uint16_t queue_size = 0)
      : DeviceHarness(device, MakeGuestMemory(memory_size), queue_size) {}
  // With guest memory `memory`, which must have RAM from guest-physical 0 up for the rings.
  DeviceHarness(VirtioDevice& device, GuestMemory memory, uint16_t queue_size = 0)
      : device_(device), memory_(std::move(memory)) {
    uint64_t base = 0;
    for (uint16_t max_size : device.queue_max_sizes()) {
      uint16_t size = queue_size != 0 ? queue_size : max_size;
      rings_.push_back(std::make_unique<RingBuilder>(memory_, size, base));
      queues_.emplace_back(max_size);
      rings_.back()->Configure(queues_.back());
      Result<EventFd> event = EventFd::Create();
      EXPECT_TRUE(event.ok());
      events_.push_back(std::move(event).value());
      base = (rings_.back()->end() + 4095) & ~4095ull;
    }
    data_base_ = base;
    Result<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    EXPECT_TRUE(loop.ok());
    loop_ = std::move(loop).value();
    thread_ = std::thread([this] { loop_->Run(); });
    // Wait until the loop runs, so that RunSync() (in Activate(), Flush()) goes through it.
    std::thread::id ran_on;
    while (ran_on == std::thread::id() || ran_on == std::this_thread::get_id()) {
      loop_->RunSync([&] { ran_on = std::this_thread::get_id(); });
    }
  }
  ~DeviceHarness() {
    device_.Reset();
    loop_->Stop();
    thread_.join();
  }

  // Activates the device with `features` (VIRTIO_F_VERSION_1 is added), setting each queue's
  // EVENT_IDX and INDIRECT_DESC mode from them like the transport.
  Status Activate(uint64_t features = 0) {
    features |= kFeatureVersion1;
    for (Queue& queue : queues_) {
      queue.set_event_idx((features & kFeatureEventIdx) != 0);
      queue.set_indirect((features & kFeatureIndirectDesc) != 0);
    }
    ActivateContext context;
    context.memory = &memory_;
    context.driver_features = features;
    context.queues = &queues_;
    context.queue_events = events_;
    context.interrupt = &interrupt_;
    context.loop = loop_.get();
    return device_.Activate(context);
  }

  // The driver notifies queue `index` (what the ioeventfd does on a queue notify write).
  void Kick(uint16_t index) { EXPECT_TRUE(events_[index].Write().ok()); }

  // Returns once the loop has dispatched the events of descriptors that became ready before
  // the call (Kick(), writes to a pipe the device watches): it waits for a marker eventfd made
  // ready after them, and epoll reports ready descriptors in the order they became ready. (A
  // RunSync() task is no such marker: the loop may run it without another epoll_wait(), when
  // it is queued while the loop still runs the tasks of an earlier wake-up.) A handler that
  // re-arms something (e.g. adds a descriptor) may need another Flush().
  void Flush() {
    Result<EventFd> marker = EventFd::Create();
    ASSERT_TRUE(marker.ok());
    std::mutex mutex;
    std::condition_variable dispatched;
    bool done = false;
    auto on_marker = [&] {
      (void)marker->Read();
      std::lock_guard lock(mutex);
      done = true;
      dispatched.notify_all();
    };
    ASSERT_TRUE(loop_->Add(marker->fd(), on_marker).ok());
    ASSERT_TRUE(marker->Write().ok());
    {
      std::unique_lock lock(mutex);
      dispatched.wait(lock, [&] { return done; });
    }
    EXPECT_TRUE(loop_->Remove(marker->fd()).ok());
  }

  const GuestMemory& memory() const { return memory_; }
  RingBuilder& ring(uint16_t index) { return *rings_[index]; }
  std::vector<Queue>& queues() { return queues_; }
  FakeInterrupt& interrupt() { return interrupt_; }
  EventLoop& loop() { return *loop_; }
  uint64_t data_base() const { return data_base_; }

 private:
  VirtioDevice& device_;
  GuestMemory memory_;
  std::vector<std::unique_ptr<RingBuilder>> rings_;
  std::vector<Queue> queues_;
  std::vector<EventFd> events_;
  uint64_t data_base_ = 0;
  FakeInterrupt interrupt_;
  std::unique_ptr<EventLoop> loop_;
  std::thread thread_;
};

}  // namespace tern::virtio::testing
