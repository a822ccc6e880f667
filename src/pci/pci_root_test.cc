// Unit tests for PciRoot: configuration mechanism #1 and ECAM decoding (PCI 3.0 §3.2.2.3.2,
// PCIe 4.0 §7.2.2), the host bridge, absent functions, BAR assignment and BAR moves on the
// MMIO bus.
#include "pci/pci_root.h"

#include <gtest/gtest.h>

#include <mutex>
#include <tuple>
#include <vector>

namespace tern::pci {
namespace {

constexpr AddressWindow kMmio32{0xc0000000, 0x20000000};
constexpr AddressWindow kMmio64{0x100000000, 0x1000000000};

// A function with a 16 KiB 32-bit BAR 0 and a 64 KiB 64-bit prefetchable BAR 2. BAR reads
// return index << 4 | offset in each byte; BarMoved calls are recorded.
class FakeDevice : public PciDevice {
 public:
  using Move = std::tuple<uint8_t, uint64_t, uint64_t>;

  explicit FakeDevice(bool with_bars = true)
      : config_(PciIdentity{.vendor_id = 0x1af4, .device_id = 0x1041, .class_code = 0xff0000}) {
    if (!with_bars) return;
    EXPECT_TRUE(config_.AddBar({.index = 0, .size = 0x4000}).ok());
    EXPECT_TRUE(
        config_.AddBar({.index = 2, .size = 0x10000, .is_64bit = true, .prefetchable = true}).ok());
  }
  void ReadConfig(uint16_t offset, std::span<uint8_t> data) override { config_.Read(offset, data); }
  void WriteConfig(uint16_t offset, std::span<const uint8_t> data) override {
    config_.Write(offset, data);
  }
  std::vector<BarRequest> bars() const override { return config_.bars(); }
  void ReadBar(uint8_t index, uint64_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i)
      data[i] = static_cast<uint8_t>(index << 4 | (offset + i));
  }
  void WriteBar(uint8_t index, uint64_t offset, std::span<const uint8_t> data) override {
    std::lock_guard lock(mutex_);
    writes.push_back({index, offset, data.size()});
  }
  Status BarMoved(uint8_t index, uint64_t old_gpa, uint64_t new_gpa) override {
    moves.push_back({index, old_gpa, new_gpa});
    return fail_moves ? Status(Error("injected", EBUSY)) : Ok();
  }

  ConfigSpace config_;
  std::vector<Move> moves;
  std::vector<Move> writes;  // (index, offset, size)
  bool fail_moves = false;

 private:
  std::mutex mutex_;
};

class PciRootTest : public ::testing::Test {
 protected:
  uint32_t CamRead(uint8_t device, uint16_t reg, size_t size = 4, uint8_t function = 0,
                   uint8_t bus = 0) {
    CamSelect(bus, device, function, reg);
    uint8_t bytes[4] = {};
    io_.Read(4 + (reg & 3), std::span(bytes, size));
    return Le(std::span(bytes, size));
  }
  void CamSelect(uint8_t bus, uint8_t device, uint8_t function, uint16_t reg) {
    Write(io_, 0, 0x80000000u | bus << 16 | device << 11 | function << 8 | (reg & 0xfc), 4);
  }
  uint32_t EcamRead(uint8_t device, uint16_t reg, size_t size = 4) {
    uint8_t bytes[4] = {};
    ecam_.Read(uint64_t{device} << 15 | reg, std::span(bytes, size));
    return Le(std::span(bytes, size));
  }
  void EcamWrite(uint8_t device, uint16_t reg, uint32_t value, size_t size = 4) {
    Write(ecam_, uint64_t{device} << 15 | reg, value, size);
  }
  static void Write(BusDevice& target, uint64_t offset, uint32_t value, size_t size) {
    const uint8_t bytes[4] = {uint8_t(value), uint8_t(value >> 8), uint8_t(value >> 16),
                              uint8_t(value >> 24)};
    target.Write(offset, std::span(bytes, size));
  }
  static uint32_t Le(std::span<const uint8_t> bytes) {
    uint32_t value = 0;
    for (size_t i = 0; i < bytes.size(); ++i) value |= uint32_t{bytes[i]} << (8 * i);
    return value;
  }
  // The byte an MMIO read at `address` returns, or nullopt when nothing claims it.
  std::optional<uint8_t> MmioByte(uint64_t address) {
    uint8_t value = 0;
    if (!mmio_.Read(address, std::span(&value, 1))) return std::nullopt;
    return value;
  }
  std::shared_ptr<FakeDevice> Add() {
    auto device = std::make_shared<FakeDevice>();
    auto number = root_->AddDevice(device);
    EXPECT_TRUE(number.ok()) << number.error().ToString();
    return device;
  }

  Bus mmio_{"mmio"};
  std::shared_ptr<PciRoot> root_ = std::make_shared<PciRoot>(mmio_, kMmio32, kMmio64);
  PciConfigIo io_{root_};
  PciConfigMmio ecam_{root_};
};

TEST_F(PciRootTest, HostBridgeIsDeviceZero) {
  EXPECT_EQ(CamRead(0, 0x00), 0x0d578086u);
  EXPECT_EQ(CamRead(0, 0x08), 0x06000000u);      // class 06/00/00, revision 0
  EXPECT_EQ(CamRead(0, 0x0c) >> 16 & 0xff, 0u);  // header type 0, single function
  EXPECT_EQ(EcamRead(0, 0x00), 0x0d578086u);
  EXPECT_EQ(EcamRead(0, 0x10), 0u);  // no BARs
}

TEST_F(PciRootTest, ConfigAddressRegister) {
  Write(io_, 0, 0x80000000, 4);  // Linux's pci_check_type1() probe
  uint8_t bytes[4];
  io_.Read(0, bytes);
  EXPECT_EQ(Le(bytes), 0x80000000u);
  Write(io_, 0, 0xffffffff, 4);
  io_.Read(0, bytes);
  EXPECT_EQ(Le(bytes), 0x80fffffcu);  // reserved bits read as zero
  Write(io_, 3, 0x01, 1);             // byte writes to 0xcf8..0xcfb are not CONFIG_ADDRESS
  io_.Read(0, bytes);
  EXPECT_EQ(Le(bytes), 0x80fffffcu);
  io_.Read(1, std::span(bytes, 2));
  EXPECT_EQ(Le(std::span(bytes, 2)), 0xffffu);
}

TEST_F(PciRootTest, DataPortTakesBytesAndWordsAtTheirOffsets) {
  EXPECT_EQ(CamRead(0, 0x00, 2), 0x8086u);
  EXPECT_EQ(CamRead(0, 0x02, 2), 0x0d57u);
  EXPECT_EQ(CamRead(0, 0x03, 1), 0x0du);
  EXPECT_EQ(CamRead(0, 0x0b, 1), 0x06u);
  // A word at 0xcfd would straddle two registers' bytes unaligned: all-ones.
  CamSelect(0, 0, 0, 0);
  uint8_t bytes[2];
  io_.Read(5, bytes);
  EXPECT_EQ(Le(bytes), 0xffffu);
  io_.Read(7, bytes);  // past the end of the data port
  EXPECT_EQ(Le(bytes), 0xffffu);
}

TEST_F(PciRootTest, AbsentFunctionsReadAllOnes) {
  EXPECT_EQ(CamRead(5, 0x00), 0xffffffffu);
  EXPECT_EQ(CamRead(0, 0x00, 4, /*function=*/1), 0xffffffffu);
  EXPECT_EQ(CamRead(0, 0x00, 4, 0, /*bus=*/1), 0xffffffffu);
  Write(io_, 0, 0x00000000, 4);  // enable bit clear
  uint8_t bytes[4];
  io_.Read(4, bytes);
  EXPECT_EQ(Le(bytes), 0xffffffffu);
  EXPECT_EQ(EcamRead(31, 0x00), 0xffffffffu);
  EXPECT_EQ(EcamRead(0, 0x02, 4), 0xffffffffu);  // misaligned dword
  uint8_t qword[8];
  ecam_.Read(0, qword);  // ECAM takes 1, 2 or 4 bytes only
  EXPECT_EQ(qword[0], 0xff);
  ecam_.Read(uint64_t{1} << 20, std::span(qword, 4));  // bus 1
  EXPECT_EQ(Le(std::span(qword, 4)), 0xffffffffu);
  ecam_.Read(~uint64_t{0} - 3, std::span(qword, 4));
  EXPECT_EQ(Le(std::span(qword, 4)), 0xffffffffu);
  // Writes to absent functions go nowhere.
  EcamWrite(9, 0x04, 0xffff, 2);
  EXPECT_EQ(EcamRead(9, 0x04, 2), 0xffffu);
}

TEST_F(PciRootTest, AddDeviceAssignsNaturallyAlignedBars) {
  auto first = std::make_shared<FakeDevice>();
  auto second = std::make_shared<FakeDevice>();
  auto n1 = root_->AddDevice(first);
  auto n2 = root_->AddDevice(second);
  ASSERT_TRUE(n1.ok() && n2.ok());
  EXPECT_EQ(*n1, 1);
  EXPECT_EQ(*n2, 2);
  EXPECT_EQ(EcamRead(1, 0x00), 0x10411af4u);
  EXPECT_EQ(first->config_.BarAddress(0), 0xc0000000u);
  EXPECT_EQ(second->config_.BarAddress(0), 0xc0004000u);
  EXPECT_EQ(first->config_.BarAddress(2), 0x100000000u);
  EXPECT_EQ(second->config_.BarAddress(2), 0x100010000u);
  EXPECT_EQ(EcamRead(2, 0x18), 0x0001000cu);  // 64-bit prefetchable, low half
  EXPECT_EQ(EcamRead(2, 0x1c), 0x1u);
  EXPECT_EQ(first->moves, (std::vector<FakeDevice::Move>{{0, 0, 0xc0000000}, {2, 0, 0x100000000}}));
  // Memory decoding is off after reset: nothing on the MMIO bus yet.
  EXPECT_EQ(MmioByte(0xc0000000), std::nullopt);
}

TEST_F(PciRootTest, MemorySpaceEnablePutsBarsOnTheBus) {
  auto device = Add();
  EcamWrite(1, 0x04, kCommandMemorySpace | kCommandBusMaster, 2);
  EXPECT_EQ(MmioByte(0xc0000005), 0x05);  // BAR 0, offset 5
  EXPECT_EQ(MmioByte(0xc0003fff), 0xff);
  EXPECT_EQ(MmioByte(0xc0004000), std::nullopt);
  EXPECT_EQ(MmioByte(0x100000001), 0x21);  // BAR 2, offset 1
  const uint8_t value[4] = {};
  EXPECT_TRUE(mmio_.Write(0x100000008, value));
  EXPECT_EQ(device->writes, (std::vector<FakeDevice::Move>{{2, 8, 4}}));
  EcamWrite(1, 0x04, 0, 2);
  EXPECT_EQ(MmioByte(0xc0000005), std::nullopt);
  EXPECT_EQ(device->moves.size(), 2u);  // enabling and disabling decode moves nothing
}

TEST_F(PciRootTest, SizingDoesNotMoveBars) {
  auto device = Add();
  EcamWrite(1, 0x04, kCommandMemorySpace, 2);
  // Linux's __pci_read_base() with decoding left on: all-ones, read the mask, restore.
  const uint32_t low = EcamRead(1, 0x18), high = EcamRead(1, 0x1c);
  EcamWrite(1, 0x18, 0xffffffff);
  EXPECT_EQ(EcamRead(1, 0x18), 0xffff000cu);
  EcamWrite(1, 0x18, low);
  EcamWrite(1, 0x1c, 0xffffffff);
  EXPECT_EQ(EcamRead(1, 0x1c), 0xffffffffu);
  EcamWrite(1, 0x1c, high);
  EcamWrite(1, 0x10, 0xffffffff);
  EXPECT_EQ(EcamRead(1, 0x10), 0xffffc000u);
  EcamWrite(1, 0x10, 0xc0000000);
  EXPECT_EQ(device->moves.size(), 2u);
  EXPECT_EQ(MmioByte(0xc0000001), 0x01);
  EXPECT_EQ(MmioByte(0x100000001), 0x21);
}

TEST_F(PciRootTest, GuestReassignmentMovesTheBar) {
  auto device = Add();
  EcamWrite(1, 0x04, kCommandMemorySpace, 2);
  // As Linux's pci_std_update_resource(): decoding off, both halves, decoding on.
  EcamWrite(1, 0x04, 0, 2);
  EcamWrite(1, 0x18, 0x00200000);
  EcamWrite(1, 0x1c, 0x2);
  EcamWrite(1, 0x10, 0xd0000000);
  EXPECT_EQ(device->moves.size(), 2u) << "no move while decoding is off";
  EcamWrite(1, 0x04, kCommandMemorySpace, 2);
  EXPECT_EQ(device->moves, (std::vector<FakeDevice::Move>{{0, 0, 0xc0000000},
                                                          {2, 0, 0x100000000},
                                                          {0, 0xc0000000, 0xd0000000},
                                                          {2, 0x100000000, 0x200200000}}));
  EXPECT_EQ(MmioByte(0xc0000001), std::nullopt);
  EXPECT_EQ(MmioByte(0x100000001), std::nullopt);
  EXPECT_EQ(MmioByte(0xd0000001), 0x01);
  EXPECT_EQ(MmioByte(0x200200001), 0x21);
}

TEST_F(PciRootTest, BarOutsideTheWindowsIsNotMapped) {
  auto device = Add();
  EcamWrite(1, 0x04, kCommandMemorySpace, 2);
  EcamWrite(1, 0x10, 0xfec00000);  // onto the IOAPIC
  EXPECT_EQ(MmioByte(0xc0000001), std::nullopt);
  EXPECT_EQ(MmioByte(0xfec00001), std::nullopt);
  EXPECT_EQ(device->moves.size(), 2u);
  EcamWrite(1, 0x10, 0xc0000000);  // back where it was
  EXPECT_EQ(MmioByte(0xc0000001), 0x01);
  EXPECT_EQ(device->moves.size(), 2u);
}

TEST_F(PciRootTest, OverlappingBarsStayOffTheBus) {
  auto first = Add();
  auto second = Add();
  EcamWrite(1, 0x04, kCommandMemorySpace, 2);
  EcamWrite(2, 0x04, kCommandMemorySpace, 2);
  second->fail_moves = true;       // a BarMoved error is logged; the move still happens
  EcamWrite(2, 0x10, 0xc0000000);  // onto the first device's BAR 0
  EXPECT_EQ(second->moves.back(), (FakeDevice::Move{0, 0xc0004000, 0xc0000000}));
  EXPECT_EQ(MmioByte(0xc0000001), 0x01);  // still the first device
  EXPECT_EQ(MmioByte(0xc0004001), std::nullopt);
  EXPECT_TRUE(first->writes.empty());
}

TEST_F(PciRootTest, BusHoldsThirtyOneDevices) {
  for (int i = 1; i < 32; ++i) {
    auto number = root_->AddDevice(std::make_shared<FakeDevice>(/*with_bars=*/false));
    ASSERT_TRUE(number.ok());
    EXPECT_EQ(*number, i);
  }
  auto full = root_->AddDevice(std::make_shared<FakeDevice>(false));
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().errno_value(), ENOSPC);
}

TEST(PciRootWindowTest, BarsThatDoNotFitFailAndSixtyFourBitFallsBackBelow4GiB) {
  Bus mmio("mmio");
  PciRoot root(mmio, AddressWindow{0xc0000000, 0x20000}, AddressWindow{});
  auto device = std::make_shared<FakeDevice>();
  ASSERT_TRUE(root.AddDevice(device).ok());
  EXPECT_EQ(device->config_.BarAddress(0), 0xc0000000u);
  EXPECT_EQ(device->config_.BarAddress(2), 0xc0010000u);  // 64-bit BAR in the 32-bit window
  auto second = root.AddDevice(std::make_shared<FakeDevice>());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().errno_value(), ENOSPC);
  // The failed device did not take a slot.
  auto third = root.AddDevice(std::make_shared<FakeDevice>(false));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(*third, 2);
}

TEST(PciRootWindowTest, BarMovedErrorFailsAddDevice) {
  Bus mmio("mmio");
  PciRoot root(mmio, kMmio32, kMmio64);
  auto device = std::make_shared<FakeDevice>();
  device->fail_moves = true;
  EXPECT_EQ(root.AddDevice(device).error().errno_value(), EBUSY);
}

}  // namespace
}  // namespace tern::pci
