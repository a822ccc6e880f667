// Unit tests for virtio-console: guest output reaches the output descriptor in order and in
// full, host input fills receive buffers, input is not watched without buffers, and malformed
// queues, end of input and resets are handled.
#include "virtio/console.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

using testing::DeviceHarness;

constexpr uint16_t kQueueSize = 16;
constexpr uint16_t kRx = Console::kReceiveQueue;
constexpr uint16_t kTx = Console::kTransmitQueue;

struct Pipe {
  Fd read_end;
  Fd write_end;
};

Pipe MakePipe(int read_flags = 0, int write_flags = 0) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  EXPECT_EQ(::fcntl(fds[0], F_SETFL, read_flags), 0);
  EXPECT_EQ(::fcntl(fds[1], F_SETFL, write_flags), 0);
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

// Reads exactly `len` bytes (blocking).
std::string ReadExactly(int fd, size_t len) {
  std::string out(len, '\0');
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::read(fd, out.data() + done, len - done);
    if (n <= 0) break;
    done += n;
  }
  out.resize(done);
  return out;
}

std::string ReadGuest(const GuestMemory& memory, uint64_t gpa, size_t len) {
  std::string bytes(len, '\0');
  EXPECT_TRUE(memory.Read(gpa, std::span(reinterpret_cast<uint8_t*>(bytes.data()), len)).ok());
  return bytes;
}

void WriteGuest(const GuestMemory& memory, uint64_t gpa, const std::string& bytes) {
  EXPECT_TRUE(
      memory.Write(gpa, std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()))
          .ok());
}

// Whether the event loop watches `fd` (Remove() says ENOENT otherwise). Removes it if so.
bool Watched(EventLoop& loop, int fd) { return loop.Remove(fd).ok(); }

TEST(ConsoleTest, IdentityAndConfig) {
  Console console(-1, -1);
  EXPECT_EQ(console.device_type(), kDeviceTypeConsole);
  EXPECT_NE(console.device_features() & kFeatureVersion1, 0u);
  EXPECT_EQ(console.queue_max_sizes().size(), 2u);
  std::vector<uint8_t> config(16, 0xff);
  console.WriteConfig(0, config);
  console.ReadConfig(0, config);
  EXPECT_EQ(config, std::vector<uint8_t>(16, 0));
}

TEST(ConsoleTest, TransmitsInOrder) {
  Pipe out = MakePipe();
  Console console(-1, out.write_end.get());
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  uint64_t data = harness.data_base();
  WriteGuest(harness.memory(), data, "hello, ");
  WriteGuest(harness.memory(), data + 100, "world");
  WriteGuest(harness.memory(), data + 200, "!\n");
  std::vector<Buffer> first = {{data, 7, false}, {data + 100, 5, false}};
  std::vector<Buffer> second = {{data + 200, 2, false}};
  harness.ring(kTx).AddChain(first);
  harness.ring(kTx).AddChain(second);
  harness.Kick(kTx);
  EXPECT_EQ(ReadExactly(out.read_end.get(), 14), "hello, world!\n");
  ASSERT_TRUE(harness.interrupt().WaitForQueue(kTx, 1));
  EXPECT_EQ(harness.ring(kTx).used_idx(), 2);
  EXPECT_EQ(harness.ring(kTx).used(0).len, 0u);
}

TEST(ConsoleTest, LargeOutputThroughNonBlockingPipeIsComplete) {
  Pipe out = MakePipe(0, O_NONBLOCK);
  Console console(-1, out.write_end.get());
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  uint64_t data = harness.data_base();
  std::string expected;
  for (int i = 0; i < 8; ++i) {
    std::string chunk(256 * 1024, static_cast<char>('a' + i));
    chunk[i] = '#';
    WriteGuest(harness.memory(), data + i * chunk.size(), chunk);
    std::vector<Buffer> buffers = {
        {data + i * chunk.size(), static_cast<uint32_t>(chunk.size()), false}};
    harness.ring(kTx).AddChain(buffers);
    expected += chunk;
  }
  harness.Kick(kTx);
  std::string got = ReadExactly(out.read_end.get(), expected.size());
  EXPECT_TRUE(got == expected);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(kTx, 1));
  EXPECT_EQ(harness.ring(kTx).used_idx(), 8);
}

TEST(ConsoleTest, TransmitsOutputQueuedBeforeActivation) {
  Pipe out = MakePipe();
  Console console(-1, out.write_end.get());
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  WriteGuest(harness.memory(), harness.data_base(), "early");
  std::vector<Buffer> buffers = {{harness.data_base(), 5, false}};
  harness.ring(kTx).AddChain(buffers);
  ASSERT_TRUE(harness.Activate().ok());
  EXPECT_EQ(ReadExactly(out.read_end.get(), 5), "early");
}

TEST(ConsoleTest, ReceivesInput) {
  Pipe in = MakePipe();
  Console console(in.read_end.get(), -1);
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  uint64_t data = harness.data_base();
  std::vector<Buffer> buffers = {{data, 3, true}, {data + 100, 64, true}};
  uint16_t head = harness.ring(kRx).AddChain(buffers);
  ASSERT_TRUE(harness.Activate().ok());
  ASSERT_EQ(::write(in.write_end.get(), "ls -l\n", 6), 6);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(kRx, 1));
  EXPECT_EQ(harness.ring(kRx).used(0).id, head);
  EXPECT_EQ(harness.ring(kRx).used(0).len, 6u);
  EXPECT_EQ(ReadGuest(harness.memory(), data, 3), "ls ");
  EXPECT_EQ(ReadGuest(harness.memory(), data + 100, 4), "-l\n" + std::string(1, '\0'));
}

TEST(ConsoleTest, InputWaitsForBuffersWithoutWatching) {
  Pipe in = MakePipe();
  Console console(in.read_end.get(), -1);
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  ASSERT_EQ(::write(in.write_end.get(), "abc", 3), 3);
  harness.Flush();
  // No buffer: the readable input is no longer watched (the loop does not spin on it).
  EXPECT_FALSE(Watched(harness.loop(), in.read_end.get()));
  uint64_t data = harness.data_base();
  std::vector<Buffer> buffers = {{data, 2, true}};
  harness.ring(kRx).AddChain(buffers);
  harness.ring(kRx).AddChain(std::vector<Buffer>{{data + 64, 16, true}});
  harness.Kick(kRx);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(kRx, 2));
  EXPECT_EQ(harness.ring(kRx).used_idx(), 2);
  EXPECT_EQ(ReadGuest(harness.memory(), data, 2), "ab");
  EXPECT_EQ(ReadGuest(harness.memory(), data + 64, 1), "c");
  EXPECT_EQ(harness.ring(kRx).used(1).len, 1u);
}

TEST(ConsoleTest, EndOfInputStopsWatching) {
  Pipe in = MakePipe();
  Console console(in.read_end.get(), -1);
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  uint64_t data = harness.data_base();
  harness.ring(kRx).AddChain(std::vector<Buffer>{{data, 16, true}});
  ASSERT_TRUE(harness.Activate().ok());
  ASSERT_EQ(::write(in.write_end.get(), "x", 1), 1);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(kRx, 1));
  in.write_end.Reset();
  harness.ring(kRx).AddChain(std::vector<Buffer>{{data + 64, 16, true}});
  harness.Kick(kRx);
  harness.Flush();
  harness.Flush();
  EXPECT_FALSE(Watched(harness.loop(), in.read_end.get()));
  EXPECT_EQ(harness.ring(kRx).used_idx(), 1);
  // Posting more buffers does not watch a finished input again.
  harness.Kick(kRx);
  harness.Flush();
  EXPECT_FALSE(Watched(harness.loop(), in.read_end.get()));
}

TEST(ConsoleTest, UnpollableInputMeansNoInput) {
  Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  Console console(null.get(), -1);
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  EXPECT_TRUE(harness.Activate().ok());
}

TEST(ConsoleTest, MalformedTransmitQueueStopsDevice) {
  Pipe out = MakePipe();
  Pipe in = MakePipe();
  Console console(in.read_end.get(), out.write_end.get());
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  harness.ring(kTx).SetDesc(0, harness.data_base(), 1, kDescFWrite | kDescFNext, 1);
  harness.ring(kTx).SetDesc(1, harness.data_base(), 1, 0, 0);
  harness.ring(kTx).MakeAvailable(0);  // readable after writable
  harness.Kick(kTx);
  harness.Flush();
  EXPECT_EQ(harness.ring(kTx).used_idx(), 0);
  EXPECT_FALSE(Watched(harness.loop(), in.read_end.get()));
  EXPECT_EQ(harness.interrupt().needs_reset_count(), 1);
  // Reset and activate again: works.
  console.Reset();
  for (int i = 0; i < 2; ++i) {
    harness.queues()[i].Reset();
    harness.ring(i).set_avail_idx(0);
    harness.ring(i).Configure(harness.queues()[i]);
  }
  WriteGuest(harness.memory(), harness.data_base(), "ok");
  harness.ring(kTx).AddChain(std::vector<Buffer>{{harness.data_base(), 2, false}});
  ASSERT_TRUE(harness.Activate().ok());
  EXPECT_EQ(ReadExactly(out.read_end.get(), 2), "ok");
  EXPECT_EQ(harness.interrupt().needs_reset_count(), 1);
}

TEST(ConsoleTest, MalformedReceiveQueueReportsNeedsReset) {
  Pipe in = MakePipe();
  Console console(in.read_end.get(), -1);
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  harness.ring(kRx).set_avail_idx(kQueueSize + 1);  // more entries than the ring has
  ASSERT_EQ(::write(in.write_end.get(), "x", 1), 1);
  harness.Flush();
  EXPECT_EQ(harness.interrupt().needs_reset_count(), 1);
  EXPECT_FALSE(Watched(harness.loop(), in.read_end.get()));
  EXPECT_EQ(harness.ring(kRx).used_idx(), 0);
}

TEST(ConsoleTest, ResetStopsWatchingEverything) {
  Pipe in = MakePipe();
  Console console(in.read_end.get(), -1);
  DeviceHarness harness(console, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  EXPECT_FALSE(harness.Activate().ok());  // already active
  console.Reset();
  EXPECT_FALSE(Watched(harness.loop(), in.read_end.get()));
  harness.ring(kRx).AddChain(std::vector<Buffer>{{harness.data_base(), 16, true}});
  ASSERT_EQ(::write(in.write_end.get(), "x", 1), 1);
  harness.Kick(kRx);
  harness.Flush();
  EXPECT_EQ(harness.ring(kRx).used_idx(), 0);
}

}  // namespace
}  // namespace tern::virtio
