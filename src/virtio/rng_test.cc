// Unit tests for virtio-rng: requests are filled with random bytes on the event loop, bounded
// per request, with notifications and a malformed queue handled.
#include "virtio/rng.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

using testing::DeviceHarness;

constexpr uint16_t kQueueSize = 16;

std::vector<uint8_t> ReadGuest(const GuestMemory& memory, uint64_t gpa, size_t len) {
  std::vector<uint8_t> bytes(len);
  EXPECT_TRUE(memory.Read(gpa, bytes).ok());
  return bytes;
}

TEST(RngTest, Identity) {
  Rng rng;
  EXPECT_EQ(rng.device_type(), kDeviceTypeEntropy);
  EXPECT_NE(rng.device_features() & kFeatureVersion1, 0u);
  EXPECT_EQ(rng.queue_max_sizes(), std::vector<uint16_t>{Rng::kQueueSize});
  std::vector<uint8_t> config(8, 0xff);
  rng.ReadConfig(0, config);
  EXPECT_EQ(config, std::vector<uint8_t>(8, 0));
  EXPECT_EQ(rng.Metrics(), nlohmann::json::object());  // VirtioDevice's default: no counters
}

TEST(RngTest, FillsWritableBuffers) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  uint64_t data = harness.data_base();
  std::vector<Buffer> buffers = {{data, 1000, true}, {data + 4096, 3000, true}};
  uint16_t head = harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(0, 1));
  EXPECT_EQ(harness.ring(0).used_idx(), 1);
  EXPECT_EQ(harness.ring(0).used(0).id, head);
  EXPECT_EQ(harness.ring(0).used(0).len, 4000u);
  // 4000 random bytes are not all zero; the bytes around them are untouched.
  std::vector<uint8_t> first = ReadGuest(harness.memory(), data, 1000);
  std::vector<uint8_t> second = ReadGuest(harness.memory(), data + 4096, 3000);
  EXPECT_GT(std::count_if(first.begin(), first.end(), [](uint8_t b) { return b != 0; }), 900);
  EXPECT_GT(std::count_if(second.begin(), second.end(), [](uint8_t b) { return b != 0; }), 2900);
  EXPECT_EQ(ReadGuest(harness.memory(), data + 1000, 8), std::vector<uint8_t>(8, 0));
  EXPECT_EQ(ReadGuest(harness.memory(), data + 4096 + 3000, 8), std::vector<uint8_t>(8, 0));
}

TEST(RngTest, IgnoresReadableBuffers) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  uint64_t data = harness.data_base();
  std::vector<Buffer> buffers = {{data, 64, false}, {data + 64, 32, true}};
  harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(0, 1));
  EXPECT_EQ(harness.ring(0).used(0).len, 32u);
  EXPECT_EQ(ReadGuest(harness.memory(), data, 64), std::vector<uint8_t>(64, 0));
}

TEST(RngTest, BoundsBytesPerRequest) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  uint64_t data = harness.data_base();
  std::vector<Buffer> buffers = {{data, 1 << 20, true}, {data + (1 << 20), 1 << 20, true}};
  harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(0, 1));
  EXPECT_EQ(harness.ring(0).used(0).len, Rng::kMaxBytesPerRequest);
  EXPECT_EQ(ReadGuest(harness.memory(), data + Rng::kMaxBytesPerRequest, 64),
            std::vector<uint8_t>(64, 0));
}

TEST(RngTest, ServesRequestsPostedBeforeActivation) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  uint64_t data = harness.data_base();
  for (int i = 0; i < 3; ++i) {
    std::vector<Buffer> buffers = {{data + 64 * i, 16, true}};
    harness.ring(0).AddChain(buffers);
  }
  ASSERT_TRUE(harness.Activate().ok());  // no Kick()
  ASSERT_TRUE(harness.interrupt().WaitForQueue(0, 1));
  EXPECT_EQ(harness.ring(0).used_idx(), 3);
}

TEST(RngTest, EventIdxSuppressesNotification) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate(kFeatureEventIdx).ok());
  uint64_t data = harness.data_base();
  std::vector<Buffer> buffers = {{data, 16, true}};
  harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(0, 1));  // the first one always notifies
  EXPECT_EQ(harness.ring(0).avail_event(), 1);          // notifications re-enabled
  harness.ring(0).set_used_event(5);                    // not until used entry 5
  harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  harness.Flush();  // the request was served
  EXPECT_EQ(harness.ring(0).used_idx(), 2);
  EXPECT_EQ(harness.interrupt().queue_count(0), 1);
}

TEST(RngTest, MalformedQueueStopsDevice) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  harness.ring(0).MakeAvailable(kQueueSize);  // head out of range
  harness.Kick(0);
  harness.Flush();
  EXPECT_EQ(harness.ring(0).used_idx(), 0);
  EXPECT_EQ(harness.interrupt().needs_reset_count(), 1);
  // Stopped: a good request later is not served, until a reset and a new activation.
  std::vector<Buffer> buffers = {{harness.data_base(), 16, true}};
  harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  harness.Flush();
  EXPECT_EQ(harness.ring(0).used_idx(), 0);
  EXPECT_EQ(harness.interrupt().needs_reset_count(), 1);
  rng.Reset();
  for (Queue& queue : harness.queues()) queue.Reset();
  harness.ring(0).set_avail_idx(0);
  harness.ring(0).SetDesc(0, harness.data_base(), 16, kDescFWrite, 0);
  harness.ring(0).MakeAvailable(0);
  harness.ring(0).Configure(harness.queues()[0]);
  ASSERT_TRUE(harness.Activate().ok());
  ASSERT_TRUE(harness.interrupt().WaitForQueue(0, 1));
  EXPECT_EQ(harness.ring(0).used_idx(), 1);
}

TEST(RngTest, DisabledQueueIsNotServed) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  harness.queues()[0].set_ready(false);
  ASSERT_TRUE(harness.Activate().ok());
  std::vector<Buffer> buffers = {{harness.data_base(), 16, true}};
  harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  harness.Flush();
  EXPECT_EQ(harness.ring(0).used_idx(), 0);
}

TEST(RngTest, ResetStopsProcessing) {
  Rng rng;
  DeviceHarness harness(rng, 16 << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  rng.Reset();
  rng.Reset();  // a no-op when not active
  std::vector<Buffer> buffers = {{harness.data_base(), 16, true}};
  harness.ring(0).AddChain(buffers);
  harness.Kick(0);
  harness.Flush();
  EXPECT_EQ(harness.ring(0).used_idx(), 0);
}

}  // namespace
}  // namespace tern::virtio
