// virtio-console single-port data path (virtio 1.2 §5.3.6): transmitq0 to the output
// descriptor, the input descriptor to receiveq0.
#include "virtio/console.h"

#include <limits.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace tern::virtio {
namespace {

// Writes all of `bytes` to `fd`, waiting out EINTR and EAGAIN. Returns false if the rest was
// dropped because of another error.
bool WriteAll(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n > 0) {
      bytes = bytes.subspan(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd = {.fd = fd, .events = POLLOUT, .revents = 0};
      if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) return false;
    } else if (n < 0 && errno != EINTR) {
      return false;
    }
  }
  return true;
}

}  // namespace

uint64_t Console::device_features() const { return kCommonFeatures; }

void Console::ReadConfig(uint64_t /*offset*/, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
}

void Console::WriteConfig(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {}

Status Console::Activate(const ActivateContext& context) {
  if (active_) return Error("virtio-console: already active", EBUSY);
  TERN_RETURN_IF_ERROR(CheckActivateContext("virtio-console", context, 2));
  Status status;
  context.loop->RunSync([&] {
    context_ = context;
    status = Start();
    if (!status.ok()) Unwatch();
  });
  active_ = status.ok();
  return status;
}

Status Console::Start() {
  std::vector<Queue>& queues = *context_.queues;
  if (queues[kReceiveQueue].ready()) {
    TERN_RETURN_IF_ERROR(context_.loop->Add(context_.queue_events[kReceiveQueue].fd(),
                                            [this] { OnReceiveQueue(); }));
    TERN_RETURN_IF_ERROR(SetInputWatched(true));
  }
  if (queues[kTransmitQueue].ready()) {
    TERN_RETURN_IF_ERROR(context_.loop->Add(context_.queue_events[kTransmitQueue].fd(),
                                            [this] { OnTransmitQueue(); }));
    // Output the driver queued before DRIVER_OK got no notification.
    TERN_RETURN_IF_ERROR(context_.queue_events[kTransmitQueue].Write());
  }
  return Ok();
}

void Console::Reset() {
  if (!active_) return;
  context_.loop->RunSync([this] {
    Unwatch();
    rx_chain_.reset();
    input_ended_ = false;
    context_ = ActivateContext();
  });
  active_ = false;
}

void Console::Unwatch() {
  // ENOENT for descriptors not watched (a disabled queue) is expected.
  for (const EventFd& event : context_.queue_events) (void)context_.loop->Remove(event.fd());
  (void)SetInputWatched(false);
}

void Console::Fail(const Error& error) {
  FailDevice("virtio-console", error, *context_.interrupt);
  Unwatch();
  input_ended_ = true;  // the receive queue must not be used again
}

Status Console::SetInputWatched(bool watched) {
  if (watched == input_watched_ || (watched && (input_fd_ < 0 || input_ended_))) return Ok();
  if (!watched) {
    input_watched_ = false;
    return context_.loop->Remove(input_fd_);
  }
  Status added = context_.loop->Add(input_fd_, [this] { OnInput(); });
  if (!added.ok() && added.error().errno_value() == EPERM) {
    spdlog::debug("virtio-console: input cannot be polled; no input");
    input_ended_ = true;
    return Ok();
  }
  input_watched_ = added.ok();
  return added;
}

void Console::OnReceiveQueue() {
  (void)context_.queue_events[kReceiveQueue].Read();
  // The driver posted buffers: look at the input again.
  if (Status status = SetInputWatched(true); !status.ok()) Fail(status.error());
}

void Console::OnInput() {
  if (Status status = Receive(); !status.ok()) Fail(status.error());
}

Status Console::Receive() {
  Queue& queue = (*context_.queues)[kReceiveQueue];
  const GuestMemory& memory = *context_.memory;
  if (!rx_chain_.has_value()) {
    TERN_ASSIGN_OR_RETURN(rx_chain_, queue.Pop(memory));
    if (!rx_chain_.has_value()) {
      // No buffer: stop watching until the driver posts one, unless one came meanwhile (then
      // the level-triggered input calls again).
      TERN_ASSIGN_OR_RETURN(bool more, queue.EnableNotification(memory));
      return more ? Ok() : SetInputWatched(false);
    }
  }
  TERN_ASSIGN_OR_RETURN(std::vector<iovec> iovecs, WritableIovecs(memory, *rx_chain_));
  ssize_t n = 0;
  if (rx_chain_->writable_bytes > 0) {
    n = ::readv(input_fd_, iovecs.data(), std::min<size_t>(iovecs.size(), IOV_MAX));
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return Ok();
    if (n <= 0) {
      if (n < 0) spdlog::warn("virtio-console: {}", Error::FromErrno("input read").ToString());
      input_ended_ = true;  // keep rx_chain_: nothing will fill it
      return SetInputWatched(false);
    }
  }
  uint16_t head = rx_chain_->head;
  rx_chain_.reset();
  TERN_RETURN_IF_ERROR(queue.AddUsed(memory, head, n));
  return NotifyIfNeeded(queue, kReceiveQueue, memory, *context_.interrupt);
}

void Console::OnTransmitQueue() {
  (void)context_.queue_events[kTransmitQueue].Read();
  if (Status status = Transmit(); !status.ok()) Fail(status.error());
}

Status Console::Transmit() {
  Queue& queue = (*context_.queues)[kTransmitQueue];
  const GuestMemory& memory = *context_.memory;
  TERN_ASSIGN_OR_RETURN(
      Processed processed,
      ProcessAvailable(queue, memory, [&](const DescriptorChain& chain) -> Result<uint32_t> {
        TERN_ASSIGN_OR_RETURN(std::vector<iovec> iovecs, ReadableIovecs(memory, chain));
        for (const iovec& iov : iovecs) {
          if (output_fd_ < 0) break;
          if (!WriteAll(output_fd_,
                        std::span(static_cast<const uint8_t*>(iov.iov_base), iov.iov_len))) {
            spdlog::debug("virtio-console: {}", Error::FromErrno("output write").ToString());
          }
        }
        return 0u;
      }));
  if (processed.more) TERN_RETURN_IF_ERROR(context_.queue_events[kTransmitQueue].Write());
  if (!processed.used) return Ok();
  return NotifyIfNeeded(queue, kTransmitQueue, memory, *context_.interrupt);
}

}  // namespace tern::virtio
