// TAP interfaces through /dev/net/tun (Documentation/networking/tuntap.rst) and MAC parsing.
#include "net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace tern::net {

Result<MacAddress> ParseMacAddress(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return Error("invalid MAC address \"" + std::string(text) + "\": " + std::string(why), EINVAL);
  };
  MacAddress mac;
  constexpr size_t kLength = 3 * mac.size() - 1;  // "xx:" five times, then "xx"
  if (text.size() != kLength) {
    return invalid("expected six hexadecimal bytes separated by ':', like 52:54:00:12:34:56");
  }
  for (size_t i = 0; i < mac.size(); ++i) {
    const char* begin = text.data() + 3 * i;
    bool digits = std::isxdigit(static_cast<unsigned char>(begin[0])) &&
                  std::isxdigit(static_cast<unsigned char>(begin[1]));
    if (!digits || (i + 1 < mac.size() && begin[2] != ':')) {
      return invalid("expected six hexadecimal bytes separated by ':', like 52:54:00:12:34:56");
    }
    std::from_chars(begin, begin + 2, mac[i], 16);
  }
  if (mac[0] & 1) return invalid("a multicast or broadcast address cannot be a NIC's own");
  if (mac == MacAddress{}) return invalid("the all-zero address cannot be a NIC's own");
  return mac;
}

Result<std::unique_ptr<Tap>> Tap::Open(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return Error("TAP name \"" + std::string(name) + "\" must be 1 to " +
                     std::to_string(IFNAMSIZ - 1) + " characters (IFNAMSIZ)",
                 EINVAL);
  }
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Error::FromErrno("TAP " + std::string(name) + ": open /dev/net/tun");
  std::unique_ptr<Tap> tap(new Tap(Fd(fd), std::string(name)));

  ifreq request = {};
  std::memcpy(request.ifr_name, name.data(), name.size());
  request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd, TUNSETIFF, &request) < 0) {
    return tap->SystemError(errno == EPERM ? "TUNSETIFF (needs CAP_NET_ADMIN)" : "TUNSETIFF");
  }
  tap->name_ = request.ifr_name;
  int header_size = kVnetHeaderSize;
  if (::ioctl(fd, TUNSETVNETHDRSZ, &header_size) < 0) return tap->SystemError("TUNSETVNETHDRSZ");
  return tap;
}

Result<size_t> Tap::Receive(std::span<const iovec> iov) {
  // The tun driver reports a frame's full length even when it copied only part of it.
  while (true) {
    ssize_t n = ::readv(fd_.get(), iov.data(), static_cast<int>(iov.size()));
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) return SystemError("read");
  }
}

Result<bool> Tap::Send(std::span<const iovec> iov) {
  while (true) {
    if (::writev(fd_.get(), iov.data(), static_cast<int>(iov.size())) >= 0) return true;
    if (errno == EAGAIN) return false;
    if (errno != EINTR) return SystemError("write");
  }
}

Status Tap::SetOffload(unsigned tun_flags) {
  if (::ioctl(fd_.get(), TUNSETOFFLOAD, tun_flags) < 0) return SystemError("TUNSETOFFLOAD");
  return Ok();
}

Error Tap::SystemError(std::string_view call) const {
  return Error::FromErrno("TAP " + name_ + ": " + std::string(call));
}

}  // namespace tern::net
