// Helpers shared by the virtio device fuzzers: silent logs, an event loop the fuzzer drives by
// hand, a VirtioInterrupt that records DEVICE_NEEDS_RESET, and checks that host pointers a device
// hands out lie in guest RAM. Header-only; for fuzz/*_fuzzer.cc.
#pragma once

#include <spdlog/spdlog.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <map>
#include <span>

#include "base/event_loop.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "virtio/virtio_device.h"

namespace tern::virtio::fuzzing {

// Stops the fuzzer with a crash report: a broken invariant.
inline void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// Devices log each error a hostile guest provokes, and a fuzzer provokes thousands a second:
// call once, before the first run.
inline void SilenceLogs() { spdlog::set_level(spdlog::level::off); }

// An event loop that only records handlers: the fuzzer runs them itself, on its own thread,
// whenever it likes (spurious wake-ups included). Add/Modify/Remove fail as EventLoop's do
// (EEXIST, ENOENT), so a device that loses track of its descriptors shows up.
class ManualLoop : public EventLoop {
 public:
  Status Add(int fd, Handler handler, uint32_t) override {
    if (handlers_.contains(fd)) return Error("fd already added", EEXIST);
    handlers_[fd] = std::move(handler);
    return Ok();
  }
  Status Modify(int fd, uint32_t) override {
    return handlers_.contains(fd) ? Ok() : Status(Error("fd not added", ENOENT));
  }
  Status Remove(int fd) override {
    return handlers_.erase(fd) == 1 ? Ok() : Status(Error("fd not added", ENOENT));
  }
  void RunSync(const std::function<void()>& task) override { task(); }
  void Pause() override {}  // nothing runs on its own: Dispatch() is the only dispatcher
  void Resume() override {}
  void Run() override {}
  void Stop() override {}

  // Runs `fd`'s handler if it is watched (a copy: the handler may remove itself).
  void Dispatch(int fd) {
    auto it = handlers_.find(fd);
    if (it == handlers_.end()) return;
    Handler handler = it->second;
    handler();
  }
  bool watched(int fd) const { return handlers_.contains(fd); }

 private:
  std::map<int, Handler> handlers_;
};

// Counts NotifyNeedsReset() calls; notifications succeed and do nothing.
class RecordingInterrupt : public VirtioInterrupt {
 public:
  Status NotifyQueue(uint16_t) override { return Ok(); }
  Status NotifyConfig() override { return Ok(); }
  Status NotifyNeedsReset() override {
    ++needs_reset;
    return Ok();
  }
  int needs_reset = 0;
};

// Whether host bytes [data, data + len) lie in one region of `memory`.
inline bool InGuestMemory(const GuestMemory& memory, const void* data, size_t len) {
  auto* p = static_cast<const uint8_t*>(data);
  for (const MemoryRegion& region : memory.regions()) {
    if (p >= region.host && p <= region.host + region.size &&
        len <= static_cast<size_t>(region.host + region.size - p)) {
      return true;
    }
  }
  return false;
}

}  // namespace tern::virtio::fuzzing
