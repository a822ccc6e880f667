// Unit tests for the ACPI GED event register: latching, read-to-clear per byte, the interrupt,
// hostile accesses and concurrent presses and reads.
#include "devices/acpi_ged.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

namespace tern {
namespace {

// Counts Trigger() calls; fails them while `fail` is set.
class FakeInterrupt : public Interrupt {
 public:
  Status Trigger() override {
    ++count;
    if (fail) return Error("injected failure", EIO);
    return Ok();
  }
  std::atomic<int> count{0};
  std::atomic<bool> fail{false};
};

class AcpiGedTest : public ::testing::Test {
 protected:
  AcpiGedTest() {
    auto interrupt = std::make_unique<FakeInterrupt>();
    irq_ = interrupt.get();
    ged_ = std::make_unique<AcpiGed>(std::move(interrupt));
  }

  uint32_t Read32(uint64_t offset = AcpiGed::kEventOffset) {
    std::array<uint8_t, 4> data;
    ged_->Read(offset, data);
    return data[0] | (data[1] << 8) | (data[2] << 16) | (uint32_t{data[3]} << 24);
  }

  uint8_t Read8(uint64_t offset) {
    uint8_t value = 0xee;
    ged_->Read(offset, std::span<uint8_t>(&value, 1));
    return value;
  }

  FakeInterrupt* irq_ = nullptr;
  std::unique_ptr<AcpiGed> ged_;
};

TEST_F(AcpiGedTest, StartsWithNoEvents) {
  EXPECT_EQ(Read32(), 0u);
  EXPECT_EQ(ged_->PendingEvents(), 0u);
  EXPECT_EQ(irq_->count, 0);
}

TEST_F(AcpiGedTest, PressLatchesTheBitAndInterruptsOnce) {
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  EXPECT_EQ(irq_->count, 1);
  EXPECT_EQ(ged_->PendingEvents(), AcpiGed::kPowerButtonEvent);
  EXPECT_EQ(Read32(), AcpiGed::kPowerButtonEvent);
  // Read-to-clear.
  EXPECT_EQ(Read32(), 0u);
  EXPECT_EQ(ged_->PendingEvents(), 0u);
  EXPECT_EQ(irq_->count, 1);
}

TEST_F(AcpiGedTest, PressesBeforeAReadCoalesce) {
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  EXPECT_EQ(irq_->count, 2);
  EXPECT_EQ(Read32(), 1u);
  EXPECT_EQ(Read32(), 0u);
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  EXPECT_EQ(Read32(), 1u);
}

TEST_F(AcpiGedTest, OnlyTheBytesReadAreCleared) {
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  // Bytes 1..3 hold no events and do not clear byte 0.
  EXPECT_EQ(Read8(1), 0);
  EXPECT_EQ(Read8(3), 0);
  std::array<uint8_t, 2> upper = {0xee, 0xee};
  ged_->Read(2, upper);
  EXPECT_EQ(upper, (std::array<uint8_t, 2>{0, 0}));
  EXPECT_EQ(ged_->PendingEvents(), 1u);
  // A byte read of byte 0 consumes the event.
  EXPECT_EQ(Read8(0), 1);
  EXPECT_EQ(ged_->PendingEvents(), 0u);
  // A 16-bit read at offset 0 does too.
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  std::array<uint8_t, 2> low = {0xee, 0xee};
  ged_->Read(0, low);
  EXPECT_EQ(low, (std::array<uint8_t, 2>{1, 0}));
  EXPECT_EQ(ged_->PendingEvents(), 0u);
}

TEST_F(AcpiGedTest, WideAndOutOfRangeReadsFillZeros) {
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  std::array<uint8_t, 8> wide;
  wide.fill(0xee);
  ged_->Read(0, wide);
  EXPECT_EQ(wide, (std::array<uint8_t, 8>{1, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(ged_->PendingEvents(), 0u);
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  for (uint64_t offset : {uint64_t{4}, uint64_t{0x800}, uint64_t{0xffc}, UINT64_MAX - 3}) {
    wide.fill(0xee);
    ged_->Read(offset, wide);
    EXPECT_EQ(wide, (std::array<uint8_t, 8>{})) << offset;
  }
  EXPECT_EQ(ged_->PendingEvents(), 1u) << "reads outside the register must not clear it";
  ged_->Read(0, std::span<uint8_t>());  // an empty access
  EXPECT_EQ(ged_->PendingEvents(), 1u);
}

TEST_F(AcpiGedTest, WritesAreIgnored) {
  const std::array<uint8_t, 4> ones = {0xff, 0xff, 0xff, 0xff};
  ged_->Write(0, ones);
  EXPECT_EQ(ged_->PendingEvents(), 0u) << "a write must not raise events";
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  ged_->Write(0, ones);
  const std::array<uint8_t, 4> zeros = {};
  ged_->Write(0, zeros);
  EXPECT_EQ(ged_->PendingEvents(), 1u) << "a write must not clear events";
  EXPECT_EQ(irq_->count, 1);
}

TEST_F(AcpiGedTest, FailedTriggerKeepsTheEventLatched) {
  irq_->fail = true;
  Status status = ged_->PressPowerButton();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), EIO);
  EXPECT_EQ(ged_->PendingEvents(), 1u);
  irq_->fail = false;
  ASSERT_TRUE(ged_->PressPowerButton().ok());
  EXPECT_EQ(Read32(), 1u);
}

TEST(AcpiGedNullInterruptTest, LatchesWithoutAnInterrupt) {
  AcpiGed ged(nullptr);
  ASSERT_TRUE(ged.PressPowerButton().ok());
  EXPECT_EQ(ged.PendingEvents(), 1u);
}

TEST_F(AcpiGedTest, HostileAccessesNeverCrash) {
  std::mt19937_64 rng(11);
  std::array<uint8_t, 16> data;
  for (int iter = 0; iter < 100000; ++iter) {
    uint64_t offset = rng() % 16;
    if (iter % 97 == 0) offset = UINT64_MAX - (rng() % 16);
    const size_t size = rng() % (data.size() + 1);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    if (iter % 13 == 0) {
      ASSERT_TRUE(ged_->PressPowerButton().ok());
    }
    if (rng() % 2) {
      ged_->Read(offset, std::span<uint8_t>(data.data(), size));
      for (size_t i = 0; i < size; ++i) {
        if (offset + i != 0) {
          ASSERT_EQ(data[i], 0) << offset << "+" << i;
        }
      }
    } else {
      ged_->Write(offset, std::span<const uint8_t>(data.data(), size));
    }
    ASSERT_EQ(ged_->PendingEvents() & ~AcpiGed::kPowerButtonEvent, 0u);
  }
}

// Each press, made while vCPU threads poll the register, is seen by exactly one read.
TEST_F(AcpiGedTest, ConcurrentPressesAreEachSeenOnce) {
  constexpr int kPresses = 2000;
  std::atomic<bool> stop{false};
  std::atomic<int> seen{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      std::array<uint8_t, 8> data;
      while (!stop.load()) {
        const size_t size = size_t{1} << (r % 3);  // 1, 2 and 4-byte reads
        ged_->Read(0, std::span<uint8_t>(data.data(), size));
        if (data[0] & AcpiGed::kPowerButtonEvent) ++seen;
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool timed_out = false;
  for (int i = 0; i < kPresses && !timed_out; ++i) {
    ASSERT_TRUE(ged_->PressPowerButton().ok());
    while (seen.load() < i + 1 && !timed_out) {
      std::this_thread::yield();
      timed_out = std::chrono::steady_clock::now() > deadline;
    }
  }
  stop = true;
  for (auto& reader : readers) reader.join();
  ASSERT_FALSE(timed_out) << "a press was lost";
  EXPECT_EQ(seen.load(), kPresses) << "a press was seen twice";
  EXPECT_EQ(ged_->PendingEvents(), 0u);
  EXPECT_EQ(irq_->count, kPresses);
}

}  // namespace
}  // namespace tern
