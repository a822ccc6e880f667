// Unit tests for virtio-balloon: features and queues, configuration space and target changes,
// inflate (pages given back and read as zero; hostile PFNs skipped), deflate, and the
// statistics queue protocol with its polling timer.
#include "virtio/balloon.h"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <vector>

#include "base/guest_memory_test_util.h"
#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

using tern::testing::FillPage;
using tern::testing::PageIs;
using tern::testing::Resident;
using testing::DeviceHarness;
using testing::MakeGuestMemory;

constexpr uint64_t kPage = 4096;
constexpr uint16_t kQueueSize = 16;
constexpr uint64_t kMemoryMib = 16;
constexpr uint16_t kLongInterval = 3600;  // s: a poll that does not come during a test

std::unique_ptr<Balloon> MakeBalloon(BalloonConfig config = {}, uint64_t memory_mib = kMemoryMib) {
  Result<std::unique_ptr<Balloon>> balloon = Balloon::Create(config, memory_mib);
  EXPECT_TRUE(balloon.ok()) << balloon.error().ToString();
  return std::move(balloon).value();
}

// Little-endian bytes of `pfns`, as the driver writes them.
std::vector<uint8_t> PfnBytes(const std::vector<uint32_t>& pfns) {
  std::vector<uint8_t> bytes;
  for (uint32_t pfn : pfns) {
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(pfn >> (8 * i)));
  }
  return bytes;
}

struct Stat {
  uint16_t tag;
  uint64_t val;
};

// struct virtio_balloon_stat entries, packed and little-endian.
std::vector<uint8_t> StatBytes(const std::vector<Stat>& stats) {
  std::vector<uint8_t> bytes;
  for (const Stat& stat : stats) {
    bytes.push_back(static_cast<uint8_t>(stat.tag));
    bytes.push_back(static_cast<uint8_t>(stat.tag >> 8));
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<uint8_t>(stat.val >> (8 * i)));
  }
  return bytes;
}

// Writes `bytes` at `gpa` and makes them one device-readable buffer on queue `index`.
uint16_t Post(DeviceHarness& harness, uint16_t index, uint64_t gpa,
              const std::vector<uint8_t>& bytes) {
  EXPECT_TRUE(harness.memory().Write(gpa, bytes).ok());
  std::vector<Buffer> buffers = {{gpa, static_cast<uint32_t>(bytes.size()), false}};
  return harness.ring(index).AddChain(buffers);
}

uint32_t ReadConfig32(Balloon& balloon, uint64_t offset) {
  std::array<uint8_t, 4> bytes;
  balloon.ReadConfig(offset, bytes);
  return bytes[0] | bytes[1] << 8 | bytes[2] << 16 | uint32_t{bytes[3]} << 24;
}

void WriteConfig32(Balloon& balloon, uint64_t offset, uint32_t value) {
  std::array<uint8_t, 4> bytes = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8),
                                  static_cast<uint8_t>(value >> 16),
                                  static_cast<uint8_t>(value >> 24)};
  balloon.WriteConfig(offset, bytes);
}

TEST(BalloonTest, FeaturesAndQueues) {
  auto plain = MakeBalloon();
  EXPECT_EQ(plain->device_type(), 5u);
  EXPECT_EQ(plain->device_features(), kCommonFeatures);
  EXPECT_EQ(plain->queue_max_sizes(), std::vector<uint16_t>(2, Balloon::kQueueSize));

  auto full = MakeBalloon({.amount_mib = 0, .deflate_on_oom = true, .stats_polling_interval_s = 5});
  uint64_t features = full->device_features();
  EXPECT_NE(features & kFeatureVersion1, 0u);
  EXPECT_NE(features & kBalloonFStatsVq, 0u);
  EXPECT_NE(features & kBalloonFDeflateOnOom, 0u);
  EXPECT_EQ(features & kBalloonFMustTellHost, 0u);
  EXPECT_EQ(full->queue_max_sizes(), std::vector<uint16_t>(3, Balloon::kQueueSize));

  auto oom_only = MakeBalloon({.amount_mib = 0, .deflate_on_oom = true});
  EXPECT_EQ(oom_only->device_features(), kCommonFeatures | kBalloonFDeflateOnOom);
  auto stats_only = MakeBalloon({.amount_mib = 0, .stats_polling_interval_s = 1});
  EXPECT_EQ(stats_only->device_features(), kCommonFeatures | kBalloonFStatsVq);
}

TEST(BalloonTest, CreateRejectsTargetAboveGuestMemory) {
  Result<std::unique_ptr<Balloon>> balloon = Balloon::Create({.amount_mib = 17}, kMemoryMib);
  ASSERT_FALSE(balloon.ok());
  EXPECT_EQ(balloon.error().errno_value(), EINVAL);
  EXPECT_TRUE(Balloon::Create({.amount_mib = 16}, kMemoryMib).ok());
  // num_pages is a le32: 2^24 MiB would not fit even if guest memory were that large.
  EXPECT_FALSE(Balloon::Create({.amount_mib = 1u << 24}, 1ull << 30).ok());
}

TEST(BalloonTest, ConfigSpace) {
  auto balloon = MakeBalloon({.amount_mib = 3});
  EXPECT_EQ(ReadConfig32(*balloon, 0), 3u * 256);  // num_pages
  EXPECT_EQ(ReadConfig32(*balloon, 4), 0u);        // actual
  // Unaligned and partial reads; bytes past the structure read as zero.
  std::array<uint8_t, 2> two;
  balloon->ReadConfig(1, two);
  EXPECT_EQ(two[0], 3);  // 768 = 0x0300
  EXPECT_EQ(two[1], 0);
  std::array<uint8_t, 8> tail;
  tail.fill(0xff);
  balloon->ReadConfig(6, tail);
  EXPECT_EQ(tail, (std::array<uint8_t, 8>{}));
  balloon->ReadConfig(UINT64_MAX, two);
  EXPECT_EQ(two, (std::array<uint8_t, 2>{}));

  // The driver writes actual; num_pages is the device's.
  WriteConfig32(*balloon, 4, 512);
  WriteConfig32(*balloon, 0, 0xdeadbeef);
  EXPECT_EQ(ReadConfig32(*balloon, 0), 768u);
  EXPECT_EQ(ReadConfig32(*balloon, 4), 512u);
  // A write straddling num_pages and actual changes only actual's bytes.
  std::array<uint8_t, 4> straddle = {0xff, 0xff, 0x34, 0x12};
  balloon->WriteConfig(2, straddle);
  EXPECT_EQ(ReadConfig32(*balloon, 0), 768u);
  EXPECT_EQ(ReadConfig32(*balloon, 4), 0x1234u);
  balloon->WriteConfig(8, straddle);  // past the end: ignored
  EXPECT_EQ(ReadConfig32(*balloon, 4), 0x1234u);
}

TEST(BalloonTest, TargetChangeRaisesConfigInterrupt) {
  auto balloon = MakeBalloon({.amount_mib = 1});
  // Not active: the target is stored for the driver to read at start.
  ASSERT_TRUE(balloon->SetTargetMib(2).ok());
  EXPECT_EQ(ReadConfig32(*balloon, 0), 512u);
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  EXPECT_EQ(harness.interrupt().config_count(), 0);
  ASSERT_TRUE(balloon->SetTargetMib(8).ok());
  EXPECT_EQ(harness.interrupt().config_count(), 1);
  EXPECT_EQ(ReadConfig32(*balloon, 0), 8u * 256);
  EXPECT_EQ(balloon->Config().amount_mib, 8u);
  // Above guest memory: refused, nothing changes.
  Status too_big = balloon->SetTargetMib(kMemoryMib + 1);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.error().errno_value(), EINVAL);
  EXPECT_EQ(harness.interrupt().config_count(), 1);
  EXPECT_EQ(ReadConfig32(*balloon, 0), 8u * 256);
  ASSERT_TRUE(balloon->SetTargetMib(0).ok());
  EXPECT_EQ(harness.interrupt().config_count(), 2);
  // After a reset the device no longer notifies; actual is back to 0.
  WriteConfig32(*balloon, 4, 100);
  balloon->Reset();
  EXPECT_EQ(ReadConfig32(*balloon, 4), 0u);
  ASSERT_TRUE(balloon->SetTargetMib(4).ok());
  EXPECT_EQ(harness.interrupt().config_count(), 2);
  EXPECT_EQ(ReadConfig32(*balloon, 0), 4u * 256);
}

TEST(BalloonTest, InflateGivesPagesBack) {
  auto balloon = MakeBalloon();
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  const GuestMemory& memory = harness.memory();
  constexpr uint32_t kFirst = 0x800;  // 8 MiB
  for (uint32_t pfn = kFirst - 1; pfn <= kFirst + 20; ++pfn) FillPage(memory, pfn * kPage, 0xa5);
  ASSERT_TRUE(harness.Activate().ok());
  // Two runs (given out of order, with a duplicate) and a single page.
  std::vector<uint32_t> pfns = {kFirst + 3,  kFirst + 1,  kFirst,      kFirst + 2, kFirst + 1,
                                kFirst + 10, kFirst + 12, kFirst + 11, kFirst + 20};
  uint16_t head = Post(harness, Balloon::kInflateQueue, harness.data_base(), PfnBytes(pfns));
  harness.Kick(Balloon::kInflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kInflateQueue, 1));
  EXPECT_EQ(harness.ring(Balloon::kInflateQueue).used_idx(), 1);
  EXPECT_EQ(harness.ring(Balloon::kInflateQueue).used(0).id, head);
  EXPECT_EQ(harness.ring(Balloon::kInflateQueue).used(0).len, 0u);
  // The host memory went back (checked before any read faults the pages in again) ...
  for (uint32_t pfn : pfns) EXPECT_FALSE(Resident(memory, pfn * kPage)) << pfn;
  // ... and the pages read as zero; their neighbours are untouched.
  for (uint32_t pfn : pfns) EXPECT_TRUE(PageIs(memory, pfn * kPage, 0)) << pfn;
  for (uint32_t pfn : {kFirst - 1, kFirst + 4, kFirst + 9, kFirst + 13, kFirst + 19}) {
    EXPECT_TRUE(PageIs(memory, pfn * kPage, 0xa5)) << pfn;
  }
  BalloonCounters counters = balloon->Counters();
  EXPECT_EQ(counters.inflated_pfns, pfns.size());
  EXPECT_EQ(counters.invalid_pfns, 0u);
}

TEST(BalloonTest, InflateSkipsHostilePfns) {
  // Low RAM [0, 16 MiB), a gap standing for the MMIO hole, high RAM [4 GiB, 4 GiB + 1 MiB).
  constexpr uint64_t kHigh = 0x100000000;
  std::array<RegionSpec, 2> regions = {{{0, kMemoryMib << 20}, {kHigh, 1 << 20}}};
  auto balloon = MakeBalloon({}, kMemoryMib + 1);
  DeviceHarness harness(*balloon, MakeGuestMemory(regions), kQueueSize);
  const GuestMemory& memory = harness.memory();
  constexpr uint32_t kLowLast = (kMemoryMib << 20) / kPage - 1;
  constexpr uint32_t kHighFirst = kHigh / kPage;
  constexpr uint32_t kHighLast = kHighFirst + 255;
  for (uint32_t pfn : {kLowLast, kHighFirst, kHighLast}) FillPage(memory, pfn * kPage, 0x3c);
  ASSERT_TRUE(harness.Activate().ok());
  std::vector<uint32_t> pfns = {
      kLowLast + 1,    // just past low RAM
      0xc0000,         // 3 GiB: MMIO
      kHighFirst - 1,  // just below high RAM
      kLowLast,        // valid
      kHighFirst,      // valid
      kHighLast,       // valid
      kHighLast + 1,   // just past high RAM
      0xffffffff,      // the largest PFN: 16 TiB
  };
  std::vector<uint8_t> bytes = PfnBytes(pfns);
  bytes.insert(bytes.end(), {0x01, 0x02, 0x03});  // a partial entry: ignored
  Post(harness, Balloon::kInflateQueue, harness.data_base(), bytes);
  harness.Kick(Balloon::kInflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kInflateQueue, 1));
  EXPECT_EQ(harness.interrupt().needs_reset_count(), 0);
  for (uint32_t pfn : {kLowLast, kHighFirst, kHighLast}) {
    EXPECT_TRUE(PageIs(memory, pfn * kPage, 0)) << pfn;
  }
  BalloonCounters counters = balloon->Counters();
  EXPECT_EQ(counters.inflated_pfns, 3u);
  EXPECT_EQ(counters.invalid_pfns, 5u);
  EXPECT_EQ(
      balloon->Metrics(),
      nlohmann::json(
          {{"inflated_pfns", 3}, {"invalid_pfns", 5}, {"deflated_pfns", 0}, {"stats_reports", 0}}));
}

TEST(BalloonTest, InflatePfnsSplitAcrossDescriptors) {
  auto balloon = MakeBalloon();
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  const GuestMemory& memory = harness.memory();
  FillPage(memory, 0x900 * kPage, 0x11);
  FillPage(memory, 0x901 * kPage, 0x11);
  ASSERT_TRUE(harness.Activate().ok());
  // PFN 0x901 straddles the two buffers: 3 bytes in the first, 1 in the second.
  std::vector<uint8_t> bytes = PfnBytes({0x900, 0x901});
  uint64_t first = harness.data_base();
  uint64_t second = first + kPage;
  ASSERT_TRUE(memory.Write(first, std::span(bytes.data(), 7)).ok());
  ASSERT_TRUE(memory.Write(second, std::span(bytes.data() + 7, 1)).ok());
  std::vector<Buffer> buffers = {{first, 7, false}, {second, 1, false}};
  harness.ring(Balloon::kInflateQueue).AddChain(buffers);
  harness.Kick(Balloon::kInflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kInflateQueue, 1));
  EXPECT_TRUE(PageIs(memory, 0x900 * kPage, 0));
  EXPECT_TRUE(PageIs(memory, 0x901 * kPage, 0));
  EXPECT_EQ(balloon->Counters().inflated_pfns, 2u);
}

TEST(BalloonTest, InflateBoundsPfnsPerBuffer) {
  auto balloon = MakeBalloon();
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  std::vector<uint32_t> pfns(Balloon::kMaxPfnsPerBuffer + 10, 0xa00);
  Post(harness, Balloon::kInflateQueue, harness.data_base(), PfnBytes(pfns));
  harness.Kick(Balloon::kInflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kInflateQueue, 1));
  BalloonCounters counters = balloon->Counters();
  EXPECT_EQ(counters.inflated_pfns, Balloon::kMaxPfnsPerBuffer);
  EXPECT_EQ(counters.invalid_pfns, 10u);
}

TEST(BalloonTest, InflateYieldsAfterWorkBudgetAndGoesOn) {
  auto balloon = MakeBalloon();
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  // Twice the work of one dispatch.
  constexpr int kBuffers = 2 * Balloon::kMaxWorkPerDispatch / Balloon::kMaxPfnsPerBuffer;
  std::vector<uint32_t> pfns(Balloon::kMaxPfnsPerBuffer, 0xa00);
  for (int i = 0; i < kBuffers; ++i) {
    Post(harness, Balloon::kInflateQueue, harness.data_base() + i * 4 * pfns.size(),
         PfnBytes(pfns));
  }
  harness.Kick(Balloon::kInflateQueue);
  harness.Flush();
  // The first dispatch stopped at its budget and signalled the queue event to go on.
  for (int i = 0; i < 10 && harness.ring(Balloon::kInflateQueue).used_idx() < kBuffers; ++i) {
    harness.Flush();
  }
  EXPECT_EQ(harness.ring(Balloon::kInflateQueue).used_idx(), kBuffers);
  EXPECT_EQ(balloon->Counters().inflated_pfns, uint64_t{kBuffers} * Balloon::kMaxPfnsPerBuffer);
}

TEST(BalloonTest, DeflateCompletesBuffers) {
  auto balloon = MakeBalloon();
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  const GuestMemory& memory = harness.memory();
  FillPage(memory, 0xb00 * kPage, 0x77);
  ASSERT_TRUE(harness.Activate().ok());
  // Inflate and deflate one page, then the guest uses it again.
  Post(harness, Balloon::kInflateQueue, harness.data_base(), PfnBytes({0xb00}));
  harness.Kick(Balloon::kInflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kInflateQueue, 1));
  uint16_t head =
      Post(harness, Balloon::kDeflateQueue, harness.data_base() + 64, PfnBytes({0xb00, 0xb01}));
  harness.Kick(Balloon::kDeflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kDeflateQueue, 1));
  EXPECT_EQ(harness.ring(Balloon::kDeflateQueue).used_idx(), 1);
  EXPECT_EQ(harness.ring(Balloon::kDeflateQueue).used(0).id, head);
  EXPECT_EQ(harness.ring(Balloon::kDeflateQueue).used(0).len, 0u);
  EXPECT_TRUE(PageIs(memory, 0xb00 * kPage, 0));
  FillPage(memory, 0xb00 * kPage, 0x78);
  EXPECT_TRUE(PageIs(memory, 0xb00 * kPage, 0x78));
  EXPECT_EQ(balloon->Counters().deflated_pfns, 2u);
}

TEST(BalloonTest, MalformedInflateQueueStopsDevice) {
  auto balloon = MakeBalloon();
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());
  harness.ring(Balloon::kInflateQueue).MakeAvailable(kQueueSize);  // head out of range
  harness.Kick(Balloon::kInflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForNeedsReset());
  // Stopped: the deflate queue is not served either.
  Post(harness, Balloon::kDeflateQueue, harness.data_base(), PfnBytes({1}));
  harness.Kick(Balloon::kDeflateQueue);
  harness.Flush();
  EXPECT_EQ(harness.ring(Balloon::kDeflateQueue).used_idx(), 0);
  EXPECT_EQ(harness.interrupt().needs_reset_count(), 1);
}

TEST(BalloonTest, StatisticsHeldBufferProtocol) {
  auto balloon = MakeBalloon({.amount_mib = 4, .stats_polling_interval_s = kLongInterval});
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate(kBalloonFStatsVq).ok());
  WriteConfig32(*balloon, 4, 300);  // the driver's actual

  // The driver primes statsq with its first report: two known tags, an unknown one, and a
  // partial entry (the start of a SWAP_IN entry) that must be ignored.
  std::vector<uint8_t> report =
      StatBytes({{kBalloonStatFreeMemory, 1000}, {kBalloonStatTotalMemory, 2000}, {42, 7}});
  report.insert(report.end(), {0x00, 0x00, 0x01, 0x02, 0x03});
  uint64_t buffer = harness.data_base();
  uint16_t head = Post(harness, Balloon::kStatsQueue, buffer, report);
  harness.Kick(Balloon::kStatsQueue);
  harness.Flush();
  // Held, not returned.
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used_idx(), 0);
  Result<BalloonStatistics> stats = balloon->Statistics();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->target_pages, 4u * 256);
  EXPECT_EQ(stats->target_mib, 4u);
  EXPECT_EQ(stats->actual_pages, 300u);
  EXPECT_EQ(stats->actual_mib, 1u);
  EXPECT_EQ(stats->free_memory, 1000u);
  EXPECT_EQ(stats->total_memory, 2000u);
  EXPECT_FALSE(stats->swap_in.has_value());
  EXPECT_FALSE(stats->swap_out.has_value());
  EXPECT_FALSE(stats->major_faults.has_value());
  EXPECT_FALSE(stats->available_memory.has_value());
  EXPECT_FALSE(stats->hugetlb_failures.has_value());

  // A new interval polls at once: the held buffer comes back, empty.
  ASSERT_TRUE(balloon->SetStatsInterval(kLongInterval + 1).ok());
  EXPECT_EQ(balloon->Config().stats_polling_interval_s, kLongInterval + 1);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kStatsQueue, 1));
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used_idx(), 1);
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used(0).id, head);
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used(0).len, 0u);

  // The driver refills it; values it leaves out keep their old ones.
  report = StatBytes({{kBalloonStatFreeMemory, 500},
                      {kBalloonStatAvailMemory, 300},
                      {kBalloonStatSwapIn, 1},
                      {kBalloonStatSwapOut, 2},
                      {kBalloonStatMajorFaults, 3},
                      {kBalloonStatMinorFaults, 4},
                      {kBalloonStatDiskCaches, 5},
                      {kBalloonStatHugetlbAlloc, 6},
                      {kBalloonStatHugetlbFail, 7}});
  uint16_t second = Post(harness, Balloon::kStatsQueue, buffer, report);
  harness.Kick(Balloon::kStatsQueue);
  harness.Flush();
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used_idx(), 1);
  stats = balloon->Statistics();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->free_memory, 500u);
  EXPECT_EQ(stats->total_memory, 2000u);
  EXPECT_EQ(stats->available_memory, 300u);
  EXPECT_EQ(stats->swap_in, 1u);
  EXPECT_EQ(stats->swap_out, 2u);
  EXPECT_EQ(stats->major_faults, 3u);
  EXPECT_EQ(stats->minor_faults, 4u);
  EXPECT_EQ(stats->disk_caches, 5u);
  EXPECT_EQ(stats->hugetlb_allocations, 6u);
  EXPECT_EQ(stats->hugetlb_failures, 7u);
  EXPECT_EQ(balloon->Counters().stats_reports, 2u);

  // A non-compliant driver posts another buffer while one is held: the held one comes back.
  Post(harness, Balloon::kStatsQueue, buffer + 256, StatBytes({{kBalloonStatFreeMemory, 9}}));
  harness.Kick(Balloon::kStatsQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kStatsQueue, 2));
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used_idx(), 2);
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used(1).id, second);
  EXPECT_EQ(balloon->Statistics()->free_memory, 9u);
}

TEST(BalloonTest, StatisticsPolledByTimer) {
  auto balloon = MakeBalloon({.stats_polling_interval_s = 1});
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate(kBalloonFStatsVq).ok());
  uint64_t buffer = harness.data_base();
  auto start = std::chrono::steady_clock::now();
  Post(harness, Balloon::kStatsQueue, buffer, StatBytes({{kBalloonStatFreeMemory, 1}}));
  harness.Kick(Balloon::kStatsQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kStatsQueue, 1, std::chrono::seconds(5)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used_idx(), 1);
  // The next poll finds no buffer until the driver posts one; then it returns that one.
  Post(harness, Balloon::kStatsQueue, buffer, StatBytes({{kBalloonStatFreeMemory, 2}}));
  harness.Kick(Balloon::kStatsQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kStatsQueue, 2, std::chrono::seconds(5)));
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used_idx(), 2);
  EXPECT_EQ(balloon->Statistics()->free_memory, 2u);
}

TEST(BalloonTest, StatisticsStateIsFixedAtCreation) {
  auto disabled = MakeBalloon();
  Result<BalloonStatistics> stats = disabled->Statistics();
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.error().errno_value(), EINVAL);
  EXPECT_EQ(disabled->SetStatsInterval(5).error().errno_value(), EINVAL);
  EXPECT_TRUE(disabled->SetStatsInterval(0).ok());  // unchanged
  EXPECT_EQ(disabled->Config().stats_polling_interval_s, 0);

  auto enabled =
      MakeBalloon({.amount_mib = 2, .deflate_on_oom = true, .stats_polling_interval_s = 5});
  EXPECT_EQ(enabled->SetStatsInterval(0).error().errno_value(), EINVAL);
  EXPECT_TRUE(enabled->SetStatsInterval(7).ok());  // not active: nothing to poll yet
  BalloonConfig config = enabled->Config();
  EXPECT_EQ(config.amount_mib, 2u);
  EXPECT_TRUE(config.deflate_on_oom);
  EXPECT_EQ(config.stats_polling_interval_s, 7);
  // Before the driver reports, only the sizes are known.
  stats = enabled->Statistics();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->target_pages, 512u);
  EXPECT_FALSE(stats->free_memory.has_value());
}

TEST(BalloonTest, StatsQueueUnusedWithoutStatsFeature) {
  auto balloon = MakeBalloon({.stats_polling_interval_s = kLongInterval});
  DeviceHarness harness(*balloon, kMemoryMib << 20, kQueueSize);
  ASSERT_TRUE(harness.Activate().ok());  // the driver did not negotiate STATS_VQ
  Post(harness, Balloon::kStatsQueue, harness.data_base(),
       StatBytes({{kBalloonStatFreeMemory, 1}}));
  harness.Kick(Balloon::kStatsQueue);
  ASSERT_TRUE(balloon->SetStatsInterval(kLongInterval + 1).ok());
  harness.Flush();
  EXPECT_EQ(harness.ring(Balloon::kStatsQueue).used_idx(), 0);
  EXPECT_EQ(balloon->Counters().stats_reports, 0u);
  EXPECT_FALSE(balloon->Statistics()->free_memory.has_value());
  // Inflate still works.
  Post(harness, Balloon::kInflateQueue, harness.data_base() + kPage, PfnBytes({0xc00}));
  harness.Kick(Balloon::kInflateQueue);
  ASSERT_TRUE(harness.interrupt().WaitForQueue(Balloon::kInflateQueue, 1));
}

TEST(BalloonTest, ActivateRejectsWrongQueueCount) {
  // With statistics the device has three queues; a transport giving two is refused.
  auto balloon = MakeBalloon({.stats_polling_interval_s = 1});
  GuestMemory memory = MakeGuestMemory();
  std::vector<Queue> queues(2, Queue(Balloon::kQueueSize));
  std::vector<EventFd> events;
  for (int i = 0; i < 2; ++i) events.push_back(std::move(EventFd::Create()).value());
  testing::FakeInterrupt interrupt;
  std::unique_ptr<EventLoop> loop = std::move(EventLoop::Create()).value();
  ActivateContext context{.memory = &memory,
                          .driver_features = kFeatureVersion1,
                          .queues = &queues,
                          .queue_events = events,
                          .interrupt = &interrupt,
                          .loop = loop.get()};
  EXPECT_EQ(balloon->Activate(context).error().errno_value(), EINVAL);
}

}  // namespace
}  // namespace tern::virtio
