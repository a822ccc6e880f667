// Unit tests for the ACPI sleep registers: only an S5 request with SLP_EN powers off.
#include "devices/acpi_sleep.h"

#include <gtest/gtest.h>

#include <array>
#include <random>

#include "arch/x86_64/layout.h"

namespace tern {
namespace {

constexpr uint8_t kSlpEn = 0x20;

uint8_t SleepValue(uint8_t sleep_type, bool enable) {
  return static_cast<uint8_t>(sleep_type << 2) | (enable ? kSlpEn : 0);
}

class AcpiSleepTest : public ::testing::Test {
 protected:
  void WriteControl(uint8_t value) {
    device_.Write(AcpiSleep::kControlOffset, std::span<const uint8_t>(&value, 1));
  }

  int power_offs_ = 0;
  AcpiSleep device_{[this] { ++power_offs_; }};
};

TEST_F(AcpiSleepTest, S5WithSleepEnablePowersOff) {
  WriteControl(SleepValue(x86_64::kS5SleepType, true));
  EXPECT_EQ(power_offs_, 1);
  // Reserved bits do not change the request.
  WriteControl(SleepValue(x86_64::kS5SleepType, true) | 0xc3);
  EXPECT_EQ(power_offs_, 2);
}

TEST_F(AcpiSleepTest, S5WithoutSleepEnableDoesNothing) {
  WriteControl(SleepValue(x86_64::kS5SleepType, false));
  WriteControl(SleepValue(x86_64::kS5SleepType, false) | 0xc3);
  EXPECT_EQ(power_offs_, 0);
}

TEST_F(AcpiSleepTest, OtherSleepTypesDoNothing) {
  for (uint8_t type = 0; type < 8; ++type) {
    if (type == x86_64::kS5SleepType) continue;
    WriteControl(SleepValue(type, true));
    WriteControl(SleepValue(type, false));
  }
  EXPECT_EQ(power_offs_, 0);
}

TEST_F(AcpiSleepTest, StatusRegisterIgnoresWrites) {
  uint8_t value = SleepValue(x86_64::kS5SleepType, true);
  device_.Write(AcpiSleep::kStatusOffset, std::span<const uint8_t>(&value, 1));
  EXPECT_EQ(power_offs_, 0);
  uint8_t wak_sts = 0x80;
  device_.Write(AcpiSleep::kStatusOffset, std::span<const uint8_t>(&wak_sts, 1));
  uint8_t status = 0xee;
  device_.Read(AcpiSleep::kStatusOffset, std::span<uint8_t>(&status, 1));
  EXPECT_EQ(status, 0x00);
}

TEST_F(AcpiSleepTest, RegistersReadZero) {
  WriteControl(SleepValue(3, true));
  std::array<uint8_t, 8> data;
  for (uint64_t offset = 0; offset <= AcpiSleep::kRangeSize; ++offset) {
    for (size_t size : {1, 2, 4, 8}) {
      data.fill(0xee);
      device_.Read(offset, std::span<uint8_t>(data.data(), size));
      for (size_t i = 0; i < size; ++i) EXPECT_EQ(data[i], 0) << offset << "/" << size;
    }
  }
}

TEST_F(AcpiSleepTest, WideWriteActsOnControlByte) {
  std::array<uint8_t, 2> control_and_status = {SleepValue(x86_64::kS5SleepType, true), 0x80};
  device_.Write(AcpiSleep::kControlOffset, control_and_status);
  EXPECT_EQ(power_offs_, 1);
}

TEST_F(AcpiSleepTest, HostileAccessesNeverCrash) {
  std::mt19937_64 rng(7);
  int expected = 0;
  for (int iter = 0; iter < 100000; ++iter) {
    uint64_t offset = rng() % (AcpiSleep::kRangeSize + 1);
    if (iter % 101 == 0) offset = UINT64_MAX - (rng() % 8);
    size_t size = size_t{1} << (rng() % 4);
    std::array<uint8_t, 8> data;
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    if (rng() % 2) {
      device_.Read(offset, std::span<uint8_t>(data.data(), size));
    } else {
      if (offset == 0 && (data[0] & 0x3c) == SleepValue(x86_64::kS5SleepType, true)) ++expected;
      device_.Write(offset, std::span<const uint8_t>(data.data(), size));
    }
  }
  EXPECT_EQ(power_offs_, expected);
}

TEST(AcpiSleepNullTest, EmptyCallbackIsIgnored) {
  AcpiSleep device(nullptr);
  uint8_t value = SleepValue(x86_64::kS5SleepType, true);
  device.Write(AcpiSleep::kControlOffset, std::span<const uint8_t>(&value, 1));
}

}  // namespace
}  // namespace tern
