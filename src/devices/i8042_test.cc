// Unit tests for the i8042 keyboard controller: reset paths, command replies, status bits.
#include "devices/i8042.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <random>

namespace tern {
namespace {

constexpr uint64_t kData = I8042::kDataOffset;
constexpr uint64_t kCommand = I8042::kCommandOffset;

// Status bits.
constexpr uint8_t kObf = 0x01, kIbf = 0x02, kSys = 0x04, kCmd = 0x08, kUnlocked = 0x10, kAux = 0x20;

class FakeInterrupt : public Interrupt {
 public:
  Status Trigger() override {
    ++count_;
    return Ok();
  }
  int count() const { return count_.load(); }

 private:
  std::atomic<int> count_{0};
};

class I8042Test : public ::testing::Test {
 protected:
  I8042Test() {
    auto interrupt = std::make_unique<FakeInterrupt>();
    irq_ = interrupt.get();
    device_ = std::make_unique<I8042>([this] { ++resets_; }, std::move(interrupt));
  }

  uint8_t In(uint64_t offset) {
    uint8_t value = 0xee;
    device_->Read(offset, std::span<uint8_t>(&value, 1));
    return value;
  }
  void Out(uint64_t offset, uint8_t value) {
    device_->Write(offset, std::span<const uint8_t>(&value, 1));
  }
  // Sends `command` and returns its one-byte reply, checking OBF around it.
  uint8_t Query(uint8_t command) {
    Out(kCommand, command);
    EXPECT_TRUE(In(kCommand) & kObf) << std::hex << int{command};
    uint8_t reply = In(kData);
    EXPECT_FALSE(In(kCommand) & kObf);
    return reply;
  }

  int resets_ = 0;
  FakeInterrupt* irq_ = nullptr;
  std::unique_ptr<I8042> device_;
};

TEST_F(I8042Test, InitialStatus) {
  uint8_t status = In(kCommand);
  EXPECT_EQ(status & (kObf | kIbf | kAux), 0);
  EXPECT_EQ(status & (kSys | kUnlocked), kSys | kUnlocked);
  EXPECT_EQ(In(kData), 0x00);  // nothing waiting
}

TEST_F(I8042Test, PulseResetCommandCallsReset) {
  Out(kCommand, 0xfe);
  EXPECT_EQ(resets_, 1);
  Out(kCommand, 0xfe);
  EXPECT_EQ(resets_, 2);
}

TEST_F(I8042Test, OtherWritesDoNotReset) {
  Out(kCommand, 0xff);  // pulses no line
  Out(kCommand, 0xfd);  // pulses bit 1 (A20), not reset
  Out(kData, 0xfe);     // to the keyboard, not a command
  for (uint64_t offset = 1; offset <= 3; ++offset) Out(offset, 0xfe);
  EXPECT_EQ(resets_, 0);
  Out(kCommand, 0xf0);  // pulses all four lines, reset included
  EXPECT_EQ(resets_, 1);
}

TEST_F(I8042Test, OutputPortWriteWithResetBitClearResets) {
  EXPECT_EQ(Query(0xd0) & 0x01, 0x01);  // running
  Out(kCommand, 0xd1);
  Out(kData, 0xdf);  // A20 on, reset line high
  EXPECT_EQ(resets_, 0);
  EXPECT_EQ(Query(0xd0), 0xdf);
  Out(kCommand, 0xd1);
  Out(kData, 0xde);
  EXPECT_EQ(resets_, 1);
}

TEST_F(I8042Test, ResetCallbackMayUseTheDevice) {
  uint8_t seen_status = 0;
  I8042* device = nullptr;
  I8042 self_using([&] { device->Read(kCommand, std::span<uint8_t>(&seen_status, 1)); });
  device = &self_using;
  uint8_t fe = 0xfe;
  self_using.Write(kCommand, std::span<const uint8_t>(&fe, 1));  // would deadlock if locked
  EXPECT_EQ(seen_status & kSys, kSys);
}

TEST_F(I8042Test, SelfTestAndInterfaceTests) {
  EXPECT_EQ(Query(0xaa), 0x55);
  EXPECT_EQ(Query(0xab), 0x00);
  EXPECT_EQ(Query(0xa9), 0x00);
  EXPECT_EQ(In(kData), 0x00);  // reply consumed
}

TEST_F(I8042Test, CommandByteRoundTrip) {
  uint8_t initial = Query(0x20);
  EXPECT_EQ(initial & 0x04, 0x04);  // system flag
  Out(kCommand, 0x60);
  EXPECT_TRUE(In(kCommand) & kCmd);
  Out(kData, 0x47);
  EXPECT_FALSE(In(kCommand) & kCmd);
  EXPECT_EQ(Query(0x20), 0x47);
  Out(kCommand, 0x60);
  Out(kData, 0x00);
  EXPECT_EQ(Query(0x20), 0x00);
  Out(kData, 0x47);  // no pending command: goes to the (absent) keyboard
  EXPECT_EQ(Query(0x20), 0x00);
}

TEST_F(I8042Test, NewCommandAbandonsPendingOne) {
  Out(kCommand, 0x60);
  Out(kCommand, 0xae);  // before the data byte arrives
  Out(kData, 0x99);
  EXPECT_NE(Query(0x20), 0x99);
}

TEST_F(I8042Test, KeyboardEnableBits) {
  Out(kCommand, 0xad);
  EXPECT_EQ(Query(0x20) & 0x10, 0x10);
  Out(kCommand, 0xae);
  EXPECT_EQ(Query(0x20) & 0x10, 0x00);
}

TEST_F(I8042Test, NoAuxPortToEnable) {
  // Linux's i8042_check_aux(): the loopback answers from the aux side...
  Out(kCommand, 0xd3);
  Out(kData, 0x5a);
  EXPECT_EQ(In(kCommand) & (kObf | kAux), kObf | kAux);
  EXPECT_EQ(In(kData), 0x5a);
  EXPECT_EQ(In(kCommand) & (kObf | kAux), 0);
  // ...but the aux-disable bit cannot be cleared, so the port is reported absent.
  Out(kCommand, 0xa7);
  EXPECT_EQ(Query(0x20) & 0x20, 0x20);
  Out(kCommand, 0xa8);
  EXPECT_EQ(Query(0x20) & 0x20, 0x20);
  // Bytes for the aux device are dropped.
  Out(kCommand, 0xd4);
  Out(kData, 0xff);
  EXPECT_FALSE(In(kCommand) & kObf);
}

TEST_F(I8042Test, KeyboardInterruptFollowsCommandByte) {
  Out(kCommand, 0x60);
  Out(kData, 0x01);  // keyboard interrupt enabled
  EXPECT_EQ(irq_->count(), 0);
  Out(kCommand, 0xd2);
  Out(kData, 0x1c);  // echoed as keyboard data
  EXPECT_EQ(irq_->count(), 1);
  EXPECT_EQ(In(kCommand) & (kObf | kAux), kObf);
  EXPECT_EQ(In(kData), 0x1c);
  Out(kCommand, 0xd3);
  Out(kData, 0x1c);  // aux data: IRQ 12, which this controller does not have
  EXPECT_EQ(irq_->count(), 1);
  In(kData);
  Out(kCommand, 0x60);
  Out(kData, 0x00);
  Out(kCommand, 0x20);
  EXPECT_EQ(irq_->count(), 1);
}

TEST_F(I8042Test, LinuxProbeSequence) {
  // i8042_controller_check(): flush.
  EXPECT_FALSE(In(kCommand) & kObf);
  // i8042_controller_init(): two equal CTR reads, then a write with the keyboard disabled.
  uint8_t ctr = Query(0x20);
  EXPECT_EQ(Query(0x20), ctr);
  ctr = (ctr | 0x10) & ~0x01;
  EXPECT_FALSE(In(kCommand) & kIbf);
  Out(kCommand, 0x60);
  EXPECT_FALSE(In(kCommand) & kIbf);
  Out(kData, ctr);
  EXPECT_TRUE(In(kCommand) & kUnlocked);  // no "Keylock active" warning
  // i8042_enable_kbd_port().
  Out(kCommand, 0x60);
  Out(kData, (ctr & ~0x10) | 0x01);
  EXPECT_EQ(Query(0x20), (ctr & ~0x10) | 0x01);
  // reboot=k: wait for IBF clear, pulse reset.
  EXPECT_FALSE(In(kCommand) & kIbf);
  Out(kCommand, 0xfe);
  EXPECT_EQ(resets_, 1);
}

TEST_F(I8042Test, WideAccessesActAsSequentialByteAccesses) {
  std::array<uint8_t, 2> write = {0x00, 0xfe};
  device_->Write(3, write);  // offset 3 ignored, offset 4 gets the command
  EXPECT_EQ(resets_, 1);
  Out(kCommand, 0xaa);
  std::array<uint8_t, 8> read;
  read.fill(0xee);
  device_->Read(0, read);  // data, three ignored bytes, status, beyond the range
  EXPECT_EQ(read, (std::array<uint8_t, 8>{0x55, 0, 0, 0, kSys | kUnlocked | kCmd, 0, 0, 0}));
}

TEST_F(I8042Test, HostileAccessesNeverCrash) {
  std::mt19937_64 rng(42);
  const uint64_t far_offsets[] = {5, 8, UINT64_MAX - 3, UINT64_MAX};
  for (int iter = 0; iter < 200000; ++iter) {
    uint64_t offset = rng() % (I8042::kRangeSize + 1);
    if (iter % 89 == 0) offset = far_offsets[rng() % std::size(far_offsets)];
    size_t size = size_t{1} << (rng() % 4);
    std::array<uint8_t, 8> data;
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    if (rng() % 2) {
      device_->Read(offset, std::span<uint8_t>(data.data(), size));
    } else {
      device_->Write(offset, std::span<const uint8_t>(data.data(), size));
    }
  }
  EXPECT_GT(resets_, 0);  // random commands hit the pulse range
  In(kData);
  EXPECT_EQ(Query(0xaa), 0x55);
  Out(kCommand, 0x60);
  Out(kData, 0x65);
  EXPECT_EQ(Query(0x20), 0x65);
}

TEST(I8042NullTest, WorksWithoutCallbackOrInterrupt) {
  I8042 device(nullptr);
  uint8_t bytes[] = {0x60, 0x01, 0xfe};
  device.Write(kCommand, std::span<const uint8_t>(&bytes[0], 1));
  device.Write(kData, std::span<const uint8_t>(&bytes[1], 1));
  device.Write(kCommand, std::span<const uint8_t>(&bytes[2], 1));
  uint8_t status = 0;
  device.Read(kCommand, std::span<uint8_t>(&status, 1));
  EXPECT_EQ(status & kObf, 0);
}

TEST_F(I8042Test, StateRoundTripsToANewController) {
  Out(kCommand, 0x60);  // write command byte
  Out(kData, 0x45);
  nlohmann::json state = device_->SaveState();
  I8042 restored(nullptr);
  ASSERT_TRUE(restored.RestoreState(state).ok());
  EXPECT_EQ(restored.SaveState(), state);
  nlohmann::json bad = state;
  bad.erase("command_byte");
  EXPECT_FALSE(restored.RestoreState(bad).ok());
  bad = state;
  bad["extra"] = 1;
  EXPECT_FALSE(restored.RestoreState(bad).ok());
}

}  // namespace
}  // namespace tern
