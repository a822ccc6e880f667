// An eventfd(2) counter: the signalling primitive between vCPU threads, the event loop and KVM
// (ioeventfd, irqfd). Write() and Read() may be called from any thread.
#pragma once

#include <cstdint>

#include "base/fd.h"
#include "base/result.h"

namespace tern {

class EventFd {
 public:
  // Creates a non-blocking, close-on-exec eventfd with counter 0.
  static Result<EventFd> Create();

  // Adds `value` (>= 1) to the counter, waking readers.
  Status Write(uint64_t value = 1) const;
  // Returns and clears the counter; EAGAIN error when it is 0.
  Result<uint64_t> Read() const;

  int fd() const { return fd_.get(); }

 private:
  explicit EventFd(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

}  // namespace tern
