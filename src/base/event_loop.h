// The device event loop: one thread waits with epoll on queue-notify eventfds (ioeventfd),
// backend descriptors (TAP, io_uring completion eventfds) and timers, and runs their handlers.
// Virtio devices do all their queue processing here, never on vCPU threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "base/result.h"

namespace tern {

class EventLoop {
 public:
  using Handler = std::function<void()>;

  // Creates the epoll instance and a wake-up eventfd. Errors: the failing system call.
  static Result<std::unique_ptr<EventLoop>> Create();
  virtual ~EventLoop() = default;

  // Runs `handler` on the loop thread each time `fd` is readable (level-triggered EPOLLIN;
  // `events` may add EPOLLOUT etc.). EEXIST error if `fd` is already added.
  // Thread-safe; may be called from a handler.
  virtual Status Add(int fd, Handler handler, uint32_t events = 0x001 /* EPOLLIN */) = 0;
  // Changes the epoll events waited for on an added `fd` (e.g. add EPOLLOUT while a TAP
  // write is blocked). Thread-safe.
  virtual Status Modify(int fd, uint32_t events) = 0;
  // Stops watching `fd`. When it returns, `fd`'s handler is not running (unless Remove is
  // called from that very handler) and will not run again. ENOENT if not added. Thread-safe.
  // Remove `fd` before closing it: a closed descriptor's events can no longer be removed.
  // From another thread it waits for a running handler of `fd`, so that handler must not
  // wait for the caller.
  virtual Status Remove(int fd) = 0;
  // Runs `task` on the loop thread and waits for it to finish (runs it at once when called on
  // the loop thread, or when the loop is not running). Used to reset a device safely.
  virtual void RunSync(const std::function<void()>& task) = 0;

  // Stops dispatching handlers (VM pause: no device touches guest memory or its backends until
  // Resume()). Returns once no handler is running; RunSync() tasks still run meanwhile. Events
  // that arrive while paused stay pending (epoll is level-triggered) and run after Resume().
  // Thread-safe and idempotent; must not be called from a handler (it would wait for itself).
  virtual void Pause() = 0;
  // Dispatches handlers again after Pause(). Thread-safe, idempotent.
  virtual void Resume() = 0;

  // Dispatches events on the calling thread until Stop(). Call from one thread. Handlers run
  // one at a time, in no particular order between descriptors.
  virtual void Run() = 0;
  // Makes Run() return after the handler now running, if any. Thread-safe, idempotent. The
  // loop stays stopped: Run() after Stop() (even a Stop() before Run()) returns at once.
  virtual void Stop() = 0;
};

}  // namespace tern
