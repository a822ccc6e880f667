// Unit tests for Bus: range insertion rules and dispatch of accesses to device offsets.
#include "devices/bus.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

namespace tern {
namespace {

// Records accesses; reads return `fill` + byte index.
class RecordingDevice : public BusDevice {
 public:
  struct Access {
    bool write;
    uint64_t offset;
    std::vector<uint8_t> data;
  };

  explicit RecordingDevice(uint8_t fill = 0x10) : fill_(fill) {}

  void Read(uint64_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(fill_ + i);
    accesses.push_back({false, offset, std::vector<uint8_t>(data.begin(), data.end())});
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    accesses.push_back({true, offset, std::vector<uint8_t>(data.begin(), data.end())});
  }

  std::vector<Access> accesses;

 private:
  uint8_t fill_;
};

class BusTest : public ::testing::Test {
 protected:
  BusTest() {
    device_ = std::make_shared<RecordingDevice>();
    EXPECT_TRUE(bus_.Insert(device_, 0x10, 0x10).ok());  // [0x10, 0x20)
  }

  int InsertErrno(uint64_t base, uint64_t size) {
    Status status = bus_.Insert(std::make_shared<RecordingDevice>(), base, size);
    return status.ok() ? 0 : status.error().errno_value();
  }

  Bus bus_{"test"};
  std::shared_ptr<RecordingDevice> device_;
};

TEST_F(BusTest, RejectsOverlaps) {
  EXPECT_EQ(InsertErrno(0x10, 0x10), EEXIST);   // identical
  EXPECT_EQ(InsertErrno(0x10, 0x01), EEXIST);   // same base, shorter
  EXPECT_EQ(InsertErrno(0x08, 0x09), EEXIST);   // [0x08, 0x11): overlaps the start
  EXPECT_EQ(InsertErrno(0x1f, 0x02), EEXIST);   // [0x1f, 0x21): overlaps the end
  EXPECT_EQ(InsertErrno(0x12, 0x04), EEXIST);   // inside
  EXPECT_EQ(InsertErrno(0x00, 0x100), EEXIST);  // around
}

TEST_F(BusTest, AllowsAdjacentRanges) {
  EXPECT_EQ(InsertErrno(0x00, 0x10), 0);  // ends where the device starts
  EXPECT_EQ(InsertErrno(0x20, 0x10), 0);  // starts where the device ends
  EXPECT_EQ(InsertErrno(0x1f, 0x01), EEXIST);
  EXPECT_EQ(InsertErrno(0x0f, 0x01), EEXIST);  // now taken by [0x00, 0x10)
  EXPECT_EQ(InsertErrno(0x30, 0x01), 0);
}

TEST_F(BusTest, RejectsEmptyAndWrappingRanges) {
  EXPECT_EQ(InsertErrno(0x100, 0), EINVAL);
  EXPECT_EQ(InsertErrno(UINT64_MAX, 2), EINVAL);
  EXPECT_EQ(InsertErrno(UINT64_MAX - 0xf, 0x20), EINVAL);
  EXPECT_EQ(InsertErrno(UINT64_MAX - 0xf, 0x10), EINVAL);  // end = 2^64 is not representable
  EXPECT_EQ(InsertErrno(UINT64_MAX - 0xf, 0xf), 0);
}

TEST_F(BusTest, DispatchesWithOffsetInsideRange) {
  std::array<uint8_t, 4> data{};
  EXPECT_TRUE(bus_.Read(0x13, data));
  EXPECT_EQ(data, (std::array<uint8_t, 4>{0x10, 0x11, 0x12, 0x13}));
  std::array<uint8_t, 2> value = {0xab, 0xcd};
  EXPECT_TRUE(bus_.Write(0x1e, value));  // the last two bytes of the range
  uint8_t first;
  EXPECT_TRUE(bus_.Read(0x10, std::span<uint8_t>(&first, 1)));
  ASSERT_EQ(device_->accesses.size(), 3u);
  EXPECT_FALSE(device_->accesses[0].write);
  EXPECT_EQ(device_->accesses[0].offset, 3u);
  EXPECT_EQ(device_->accesses[0].data.size(), 4u);
  EXPECT_TRUE(device_->accesses[1].write);
  EXPECT_EQ(device_->accesses[1].offset, 0xeu);
  EXPECT_EQ(device_->accesses[1].data, (std::vector<uint8_t>{0xab, 0xcd}));
  EXPECT_EQ(device_->accesses[2].offset, 0u);
}

TEST_F(BusTest, DispatchesToTheRightDeviceAmongMany) {
  std::vector<std::shared_ptr<RecordingDevice>> devices;
  const uint64_t bases[] = {0x3f8, 0x60, 0x600, 0x40, 0x1000};  // out of order
  for (size_t i = 0; i < std::size(bases); ++i) {
    devices.push_back(std::make_shared<RecordingDevice>(static_cast<uint8_t>(0x80 + i)));
    ASSERT_TRUE(bus_.Insert(devices.back(), bases[i], 8).ok());
  }
  for (size_t i = 0; i < std::size(bases); ++i) {
    uint8_t value = 0;
    EXPECT_TRUE(bus_.Read(bases[i] + 7, std::span<uint8_t>(&value, 1)));
    EXPECT_EQ(value, 0x80 + i);
    ASSERT_EQ(devices[i]->accesses.size(), 1u);
    EXPECT_EQ(devices[i]->accesses[0].offset, 7u);
  }
  EXPECT_TRUE(device_->accesses.empty());
}

TEST_F(BusTest, AccessesStraddlingADeviceEndAreUnclaimed) {
  std::array<uint8_t, 4> data{};
  EXPECT_FALSE(bus_.Read(0x1e, data));  // [0x1e, 0x22) crosses the end
  EXPECT_EQ(data, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  data.fill(0);
  EXPECT_FALSE(bus_.Read(0x0e, data));  // [0x0e, 0x12) crosses the start
  EXPECT_EQ(data, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  EXPECT_FALSE(bus_.Write(0x1d, std::span<const uint8_t>(data.data(), 4)));
  // Across the boundary between two adjacent devices: neither gets it.
  auto next = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus_.Insert(next, 0x20, 0x10).ok());
  EXPECT_FALSE(bus_.Read(0x1f, std::span<uint8_t>(data.data(), 2)));
  EXPECT_FALSE(bus_.Write(0x1f, std::span<const uint8_t>(data.data(), 2)));
  EXPECT_TRUE(device_->accesses.empty());
  EXPECT_TRUE(next->accesses.empty());
}

TEST_F(BusTest, AccessesOutsideAllRangesAreUnclaimed) {
  std::array<uint8_t, 8> data{};
  EXPECT_FALSE(bus_.Read(0x0, std::span<uint8_t>(data.data(), 1)));
  EXPECT_EQ(data[0], 0xff);
  EXPECT_FALSE(bus_.Read(0x20, data));
  EXPECT_EQ(data, (std::array<uint8_t, 8>{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
  EXPECT_FALSE(bus_.Write(0x0f, std::span<const uint8_t>(data.data(), 1)));
  EXPECT_FALSE(bus_.Write(UINT64_MAX, std::span<const uint8_t>(data.data(), 1)));
  EXPECT_TRUE(device_->accesses.empty());
}

TEST_F(BusTest, AccessesNearTheTopOfTheAddressSpaceDoNotWrap) {
  auto top = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus_.Insert(top, UINT64_MAX - 0xf, 0xf).ok());  // [2^64 - 16, 2^64 - 1)
  std::array<uint8_t, 8> data{};
  EXPECT_FALSE(bus_.Read(UINT64_MAX - 3, data));  // would wrap past 2^64
  EXPECT_FALSE(bus_.Read(UINT64_MAX, std::span<uint8_t>(data.data(), 1)));
  EXPECT_TRUE(bus_.Read(UINT64_MAX - 8, std::span<uint8_t>(data.data(), 8)));
  ASSERT_EQ(top->accesses.size(), 1u);
  EXPECT_EQ(top->accesses[0].offset, 7u);
}

TEST_F(BusTest, RemoveFreesTheRangeForAnotherDevice) {
  EXPECT_EQ(bus_.Remove(0x11).error().errno_value(), ENOENT);  // not a range's base
  EXPECT_EQ(bus_.Remove(0x20).error().errno_value(), ENOENT);
  ASSERT_TRUE(bus_.Remove(0x10).ok());
  uint8_t value = 0;
  EXPECT_FALSE(bus_.Read(0x10, std::span<uint8_t>(&value, 1)));
  EXPECT_TRUE(device_->accesses.empty());
  EXPECT_EQ(bus_.Remove(0x10).error().errno_value(), ENOENT);
  auto other = std::make_shared<RecordingDevice>(0x40);
  ASSERT_TRUE(bus_.Insert(other, 0x18, 0x10).ok());  // overlaps the removed range
  EXPECT_TRUE(bus_.Read(0x18, std::span<uint8_t>(&value, 1)));
  EXPECT_EQ(value, 0x40);
}

// A device that moves itself on the bus from inside an access, as a PCI BAR write does.
class MovingDevice : public BusDevice {
 public:
  MovingDevice(Bus& bus, uint64_t base) : bus_(bus), base_(base) {}
  void Read(uint64_t, std::span<uint8_t> data) override { data[0] = 0x5a; }
  void Write(uint64_t, std::span<const uint8_t> data) override {
    ASSERT_TRUE(bus_.Remove(base_).ok());
    base_ = data[0];
    ASSERT_TRUE(bus_.Insert(self.lock(), base_, 1).ok());
  }
  std::weak_ptr<MovingDevice> self;

 private:
  Bus& bus_;
  uint64_t base_;
};

TEST(BusReentryTest, ADeviceMayMoveItselfDuringAnAccess) {
  Bus bus("test");
  auto device = std::make_shared<MovingDevice>(bus, 0x80);
  device->self = device;
  ASSERT_TRUE(bus.Insert(device, 0x80, 1).ok());
  const uint8_t new_base = 0x90;
  EXPECT_TRUE(bus.Write(0x80, std::span<const uint8_t>(&new_base, 1)));
  uint8_t value = 0;
  EXPECT_FALSE(bus.Read(0x80, std::span<uint8_t>(&value, 1)));
  EXPECT_TRUE(bus.Read(0x90, std::span<uint8_t>(&value, 1)));
  EXPECT_EQ(value, 0x5a);
}

// One reader dispatches while another thread keeps inserting and removing a second range: the
// stable device answers every access. The reader starts only after the mover's first cycle and
// the mover runs until the reader is done, so the two always overlap however they are scheduled.
TEST(BusConcurrencyTest, DispatchIsSafeWhileRangesChange) {
  Bus bus("test");
  auto stable = std::make_shared<RecordingDevice>(0x20);
  ASSERT_TRUE(bus.Insert(stable, 0x1000, 0x10).ok());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> cycles{0};
  std::thread mover([&] {
    auto moving = std::make_shared<RecordingDevice>(0x30);
    for (uint64_t i = 0; !stop; ++i) {
      EXPECT_TRUE(bus.Insert(moving, 0x2000 + (i % 4) * 0x100, 0x10).ok());
      EXPECT_TRUE(bus.Remove(0x2000 + (i % 4) * 0x100).ok());
      ++cycles;
    }
  });
  while (cycles == 0) std::this_thread::yield();
  uint64_t wrong = 0;
  for (int i = 0; i < 20000; ++i) {
    uint8_t value = 0;
    if (!bus.Read(0x1000, std::span<uint8_t>(&value, 1)) || value != 0x20) ++wrong;
  }
  stop = true;
  mover.join();
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(stable->accesses.size(), 20000u);
}

}  // namespace
}  // namespace tern
