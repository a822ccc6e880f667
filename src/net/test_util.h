// Test helpers for TAP interfaces: running a test body in a private network namespace (so the
// host's interfaces are untouched), configuring an interface there, and the ARP frames a test
// exchanges with the namespace's kernel. Addresses come from 192.0.2.0/24 (TEST-NET-1, RFC 5737)
// and never leave the namespace. Header-only; for *_test.cc files (uses GoogleTest assertions).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "net/tap.h"

namespace tern::net::testing {

using Ipv4Address = std::array<uint8_t, 4>;

inline constexpr Ipv4Address kHostAddress = {192, 0, 2, 1};   // the TAP interface's
inline constexpr Ipv4Address kGuestAddress = {192, 0, 2, 2};  // the frames' sender's
inline constexpr MacAddress kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

// Runs `body` on a new thread that first moves to a new network namespace (unshare(2)
// CLONE_NEWNET: only that thread moves). Returns false, without running it, when the namespace
// cannot be made (EPERM: not root); the caller then skips the test.
inline bool RunInNewNetworkNamespace(const std::function<void()>& body) {
  bool ran = false;
  std::thread thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) return;
    ran = true;
    body();
  });
  thread.join();
  return ran;
}

// Gives interface `name` the address kHostAddress/24 and brings it up, in the calling thread's
// network namespace.
inline void ConfigureHostSide(const std::string& name) {
  Fd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(socket.valid());
  ifreq request = {};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  std::memcpy(&address.sin_addr, kHostAddress.data(), 4);
  std::memcpy(&request.ifr_addr, &address, sizeof(address));
  ASSERT_EQ(::ioctl(socket.get(), SIOCSIFADDR, &request), 0) << std::strerror(errno);
  address.sin_addr.s_addr = htonl(0xffffff00);
  std::memcpy(&request.ifr_netmask, &address, sizeof(address));
  ASSERT_EQ(::ioctl(socket.get(), SIOCSIFNETMASK, &request), 0) << std::strerror(errno);
  ASSERT_EQ(::ioctl(socket.get(), SIOCGIFFLAGS, &request), 0) << std::strerror(errno);
  request.ifr_flags |= IFF_UP;
  ASSERT_EQ(::ioctl(socket.get(), SIOCSIFFLAGS, &request), 0) << std::strerror(errno);
}

// An Ethernet frame (no vnet header): kGuestMac broadcasting "who has kHostAddress? tell
// kGuestAddress" (RFC 826).
inline std::vector<uint8_t> ArpRequest() {
  std::vector<uint8_t> frame(6, 0xff);                            // destination: broadcast
  frame.insert(frame.end(), kGuestMac.begin(), kGuestMac.end());  // source
  const uint8_t arp[] = {0x08, 0x06,                              // EtherType ARP
                         0x00, 0x01, 0x08, 0x00,   // hardware Ethernet, protocol IPv4
                         6,    4,    0x00, 0x01};  // address lengths, operation request
  frame.insert(frame.end(), std::begin(arp), std::end(arp));
  frame.insert(frame.end(), kGuestMac.begin(), kGuestMac.end());
  frame.insert(frame.end(), kGuestAddress.begin(), kGuestAddress.end());
  frame.insert(frame.end(), 6, 0);
  frame.insert(frame.end(), kHostAddress.begin(), kHostAddress.end());
  frame.resize(60, 0);  // minimum Ethernet frame without FCS
  return frame;
}

// Whether `frame` (no vnet header) is the kernel's ARP reply to ArpRequest().
inline bool IsArpReply(std::span<const uint8_t> frame) {
  if (frame.size() < 42) return false;
  auto at = [&](size_t offset, size_t size) { return frame.subspan(offset, size); };
  auto equal = [](std::span<const uint8_t> a, std::span<const uint8_t> b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  };
  const uint8_t arp_type[] = {0x08, 0x06};
  return equal(at(0, 6), kGuestMac) && equal(at(12, 2), arp_type) && frame[21] == 2 &&
         equal(at(28, 4), kHostAddress) && equal(at(32, 6), kGuestMac) &&
         equal(at(38, 4), kGuestAddress);
}

}  // namespace tern::net::testing
