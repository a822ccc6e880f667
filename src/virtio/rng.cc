// virtio-rng request processing (virtio 1.2 §5.4.6).
#include "virtio/rng.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>

namespace tern::virtio {
namespace {

constexpr uint16_t kRequestQueue = 0;

// Fills `bytes` from the host CRNG: non-blocking, unless the CRNG is not initialized yet.
Status GetRandom(std::span<uint8_t> bytes) {
  unsigned flags = GRND_NONBLOCK;
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::getrandom(bytes.data() + done, bytes.size() - done, flags);
    if (n > 0) {
      done += n;
    } else if (n < 0 && errno == EAGAIN) {
      flags = 0;
    } else if (n < 0 && errno != EINTR) {
      return Error::FromErrno("getrandom");
    }
  }
  return Ok();
}

}  // namespace

uint64_t Rng::device_features() const { return kCommonFeatures; }

void Rng::ReadConfig(uint64_t /*offset*/, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
}

void Rng::WriteConfig(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {}

Status Rng::Activate(const ActivateContext& context) {
  if (active_) return Error("virtio-rng: already active", EBUSY);
  TERN_RETURN_IF_ERROR(CheckActivateContext("virtio-rng", context, 1));
  if (!(*context.queues)[kRequestQueue].ready()) return Ok();  // nothing to serve
  context_ = context;
  TERN_RETURN_IF_ERROR(
      context.loop->Add(context.queue_events[kRequestQueue].fd(), [this] { OnQueueNotify(); }));
  active_ = true;
  // Requests the driver posted before DRIVER_OK (allowed, §3.1.1) got no notification.
  return context.queue_events[kRequestQueue].Write();
}

void Rng::Reset() {
  if (!active_) return;
  // Fails only if a queue error already removed it; then the handler is not running either.
  (void)context_.loop->Remove(context_.queue_events[kRequestQueue].fd());
  active_ = false;
  context_ = ActivateContext();
}

void Rng::OnQueueNotify() {
  const EventFd& event = context_.queue_events[kRequestQueue];
  (void)event.Read();
  if (Status status = ServeRequests(); !status.ok()) {
    FailDevice("virtio-rng", status.error(), *context_.interrupt);
    (void)context_.loop->Remove(event.fd());
  }
}

Status Rng::ServeRequests() {
  Queue& queue = (*context_.queues)[kRequestQueue];
  TERN_ASSIGN_OR_RETURN(Processed processed, ProcessAvailable(queue, *context_.memory,
                                                              [this](const DescriptorChain& chain) {
                                                                return Fill(chain);
                                                              }));
  if (processed.more) TERN_RETURN_IF_ERROR(context_.queue_events[kRequestQueue].Write());
  if (!processed.used) return Ok();
  return NotifyIfNeeded(queue, kRequestQueue, *context_.memory, *context_.interrupt);
}

Result<uint32_t> Rng::Fill(const DescriptorChain& chain) {
  TERN_ASSIGN_OR_RETURN(std::vector<iovec> iovecs, WritableIovecs(*context_.memory, chain));
  uint32_t written = 0;
  for (const iovec& iov : iovecs) {
    size_t len = std::min<size_t>(iov.iov_len, kMaxBytesPerRequest - written);
    TERN_RETURN_IF_ERROR(GetRandom(std::span(static_cast<uint8_t*>(iov.iov_base), len)));
    written += len;
    if (written == kMaxBytesPerRequest) break;
  }
  return written;
}

}  // namespace tern::virtio
