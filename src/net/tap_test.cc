// Unit tests for MAC parsing and TAP interfaces. TAP tests run in a private network namespace
// and are skipped where one cannot be made (not root).
#include "net/tap.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>

#include <cstring>
#include <string>
#include <vector>

#include "net/test_util.h"

namespace tern::net {
namespace {

using testing::ArpRequest;
using testing::IsArpReply;
using testing::RunInNewNetworkNamespace;

TEST(ParseMacAddressTest, AcceptsUnicastInEitherCase) {
  Result<MacAddress> mac = ParseMacAddress("52:54:00:12:34:56");
  ASSERT_TRUE(mac.ok()) << mac.error().ToString();
  EXPECT_EQ(*mac, (MacAddress{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}));
  mac = ParseMacAddress("0A:bC:De:f0:00:FE");
  ASSERT_TRUE(mac.ok()) << mac.error().ToString();
  EXPECT_EQ(*mac, (MacAddress{0x0a, 0xbc, 0xde, 0xf0, 0x00, 0xfe}));
}

TEST(ParseMacAddressTest, RejectsMalformedText) {
  for (const char* text :
       {"", "52:54:00:12:34", "52:54:00:12:34:56:78", "52-54-00-12-34-56", "52:54:00:12:34:5g",
        "5:54:00:12:34:567", "52:54:00:12:34:56 ", "+2:54:00:12:34:56", "525400123456abcdef"}) {
    Result<MacAddress> mac = ParseMacAddress(text);
    ASSERT_FALSE(mac.ok()) << text;
    EXPECT_EQ(mac.error().errno_value(), EINVAL);
    EXPECT_NE(mac.error().message().find(std::string("\"") + text + "\""), std::string::npos)
        << mac.error().message();
  }
}

TEST(ParseMacAddressTest, RejectsMulticastBroadcastAndZero) {
  for (const char* text : {"01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "53:54:00:12:34:56"}) {
    Result<MacAddress> mac = ParseMacAddress(text);
    ASSERT_FALSE(mac.ok()) << text;
    EXPECT_NE(mac.error().message().find("multicast"), std::string::npos);
  }
  Result<MacAddress> mac = ParseMacAddress("00:00:00:00:00:00");
  ASSERT_FALSE(mac.ok());
  EXPECT_NE(mac.error().message().find("all-zero"), std::string::npos);
}

TEST(TapTest, RejectsEmptyAndOverlongNames) {
  for (std::string name : {std::string(), std::string(IFNAMSIZ, 'x')}) {
    Result<std::unique_ptr<Tap>> tap = Tap::Open(name);
    ASSERT_FALSE(tap.ok());
    EXPECT_EQ(tap.error().errno_value(), EINVAL);
    EXPECT_NE(tap.error().message().find("IFNAMSIZ"), std::string::npos);
  }
}

// Waits up to 2 s for `fd` to become readable.
bool WaitReadable(int fd) {
  pollfd pfd = {.fd = fd, .events = POLLIN, .revents = 0};
  return ::poll(&pfd, 1, 2000) == 1;
}

// Sends ArpRequest() behind a zero vnet header, the way a guest's driver would.
void SendArpRequest(Tap& tap) {
  std::vector<uint8_t> header(kVnetHeaderSize, 0);
  std::vector<uint8_t> frame = ArpRequest();
  iovec iov[] = {{header.data(), header.size()}, {frame.data(), frame.size()}};
  Result<bool> sent = tap.Send(iov);
  ASSERT_TRUE(sent.ok()) << sent.error().ToString();
  EXPECT_TRUE(*sent);
}

TEST(TapTest, AttachesWithVnetHeaderAndExchangesFrames) {
  bool ran = RunInNewNetworkNamespace([] {
    Result<std::unique_ptr<Tap>> opened = Tap::Open("terntap0");
    ASSERT_TRUE(opened.ok()) << opened.error().ToString();
    Tap& tap = **opened;
    EXPECT_EQ(tap.name(), "terntap0");

    ifreq request = {};
    ASSERT_EQ(::ioctl(tap.fd(), TUNGETIFF, &request), 0);
    EXPECT_EQ(request.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
              IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    int header_size = 0;
    ASSERT_EQ(::ioctl(tap.fd(), TUNGETVNETHDRSZ, &header_size), 0);
    EXPECT_EQ(header_size, 12);
    EXPECT_NE(::fcntl(tap.fd(), F_GETFL) & O_NONBLOCK, 0);
    EXPECT_NE(::fcntl(tap.fd(), F_GETFD) & FD_CLOEXEC, 0);

    // Another descriptor cannot take the interface.
    Result<std::unique_ptr<Tap>> second = Tap::Open("terntap0");
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.error().message().find("TAP terntap0: TUNSETIFF"), std::string::npos);

    ASSERT_TRUE(
        tap.SetOffload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO).ok());
    ASSERT_TRUE(tap.SetOffload(0).ok());
    Status status = tap.SetOffload(TUN_F_TSO4);  // TSO needs checksum offload
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.error().errno_value(), EINVAL);
    EXPECT_NE(status.error().ToString().find("TAP terntap0: TUNSETOFFLOAD"), std::string::npos);

    uint8_t buffer[2048];
    iovec iov = {buffer, sizeof(buffer)};
    Result<size_t> received = tap.Receive(std::span(&iov, 1));
    ASSERT_TRUE(received.ok());
    EXPECT_EQ(*received, 0u);  // nothing waiting

    testing::ConfigureHostSide(tap.name());
    // The kernel answers an ARP request with a reply behind a vnet header. Other frames (IPv6
    // neighbour discovery) may come first.
    SendArpRequest(tap);
    bool replied = false;
    for (int frames = 0; frames < 20 && !replied && WaitReadable(tap.fd()); ++frames) {
      received = tap.Receive(std::span(&iov, 1));
      ASSERT_TRUE(received.ok()) << received.error().ToString();
      ASSERT_GE(*received, kVnetHeaderSize);
      replied = IsArpReply(std::span(buffer + kVnetHeaderSize, *received - kVnetHeaderSize));
      if (replied) {
        EXPECT_EQ(buffer[1], 0);  // gso_type VIRTIO_NET_HDR_GSO_NONE
      }
    }
    EXPECT_TRUE(replied);

    // A frame that does not fit is cut; the length reported is at least the space given.
    SendArpRequest(tap);
    bool cut = false;
    iovec small = {buffer, kVnetHeaderSize + 20};
    for (int frames = 0; frames < 20 && !cut && WaitReadable(tap.fd()); ++frames) {
      received = tap.Receive(std::span(&small, 1));
      ASSERT_TRUE(received.ok()) << received.error().ToString();
      cut = buffer[kVnetHeaderSize + 12] == 0x08 && buffer[kVnetHeaderSize + 13] == 0x06;
      if (cut) {
        EXPECT_GE(*received, small.iov_len);
      }
    }
    EXPECT_TRUE(cut);
  });
  if (!ran) GTEST_SKIP() << "cannot create a network namespace (needs root)";
}

}  // namespace
}  // namespace tern::net
