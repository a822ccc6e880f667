// eventfd(2) wrapper.
#include "base/event_fd.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace tern {

Result<EventFd> EventFd::Create() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return Error::FromErrno("eventfd");
  return EventFd(Fd(fd));
}

Status EventFd::Write(uint64_t value) const {
  if (::write(fd_.get(), &value, sizeof(value)) != sizeof(value)) {
    return Error::FromErrno("eventfd write");
  }
  return Ok();
}

Result<uint64_t> EventFd::Read() const {
  uint64_t value = 0;
  if (::read(fd_.get(), &value, sizeof(value)) != sizeof(value)) {
    return Error::FromErrno("eventfd read");
  }
  return value;
}

}  // namespace tern
