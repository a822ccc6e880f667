// How a device raises its interrupt line. In a VM this is an eventfd registered with KVM as an
// irqfd (KVM_IRQFD): each Trigger() injects one edge on the GSI. Tests substitute a counter.
#pragma once

#include "base/event_fd.h"
#include "base/result.h"

namespace tern {

class Interrupt {
 public:
  virtual ~Interrupt() = default;
  // Signals the interrupt once. Safe from any thread.
  virtual Status Trigger() = 0;
};

// An Interrupt backed by an eventfd that KVM listens on (see Vm::RegisterIrqfd).
class EventFdInterrupt : public Interrupt {
 public:
  explicit EventFdInterrupt(EventFd event) : event_(std::move(event)) {}
  Status Trigger() override { return event_.Write(1); }
  const EventFd& event() const { return event_; }

 private:
  EventFd event_;
};

}  // namespace tern
