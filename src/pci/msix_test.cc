// Unit tests for MSI-X: the capability bytes (PCI 3.0 §6.8.2 Figure 6-10), table and PBA
// accesses, masking, pending bits and delivery through a recording MsiDelivery.
#include "pci/msix.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace tern::pci {
namespace {

// Records SetMessage and Signal calls in order.
class FakeDelivery : public MsiDelivery {
 public:
  struct Event {
    bool signal;
    uint16_t vector;
    MsiMessage message;
    bool operator==(const Event&) const = default;
  };
  Status SetMessage(uint16_t vector, const MsiMessage& message) override {
    std::lock_guard lock(mutex);
    events.push_back({false, vector, message});
    return Ok();
  }
  Status Signal(uint16_t vector) override {
    std::lock_guard lock(mutex);
    events.push_back({true, vector, {}});
    return Ok();
  }
  std::vector<Event> Take() {
    std::lock_guard lock(mutex);
    return std::exchange(events, {});
  }

  std::mutex mutex;
  std::vector<Event> events;
};

using Event = FakeDelivery::Event;

class MsixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto msix = Msix::Create(
        {.num_vectors = 3, .bar = 2, .table_offset = 0x2000, .pba_offset = 0x3000}, delivery_);
    ASSERT_TRUE(msix.ok()) << msix.error().ToString();
    msix_ = std::move(msix).value();
  }

  void WriteTable32(uint64_t offset, uint32_t value) {
    const uint8_t bytes[4] = {uint8_t(value), uint8_t(value >> 8), uint8_t(value >> 16),
                              uint8_t(value >> 24)};
    msix_->WriteTable(offset, bytes);
  }
  uint32_t ReadTable32(uint64_t offset) {
    uint8_t bytes[4];
    msix_->ReadTable(offset, bytes);
    return bytes[0] | bytes[1] << 8 | bytes[2] << 16 | uint32_t{bytes[3]} << 24;
  }
  uint64_t ReadPba64() {
    uint8_t bytes[8];
    msix_->ReadPba(0, bytes);
    uint64_t value = 0;
    for (int i = 0; i < 8; ++i) value |= uint64_t{bytes[i]} << (8 * i);
    return value;
  }
  // Programs vector `v` with a LAPIC address and `data`, as Linux does (masked, then unmasked).
  void Program(uint16_t v, uint32_t data, bool unmask = true) {
    WriteTable32(v * 16 + 0, 0xfee00000);
    WriteTable32(v * 16 + 4, 0);
    WriteTable32(v * 16 + 8, data);
    if (unmask) WriteTable32(v * 16 + 12, 0);
  }

  std::shared_ptr<FakeDelivery> delivery_ = std::make_shared<FakeDelivery>();
  std::unique_ptr<Msix> msix_;
};

TEST_F(MsixTest, CapabilityDescribesTableAndPba) {
  ConfigSpace config(PciIdentity{.vendor_id = 0x1af4});
  auto cap = msix_->AddCapability(config);
  ASSERT_TRUE(cap.ok());
  EXPECT_EQ(config.Read8(*cap), 0x11);
  EXPECT_EQ(config.Read16(*cap + 2), 0x0002);   // table size N-1, disabled, unmasked
  EXPECT_EQ(config.Read32(*cap + 4), 0x2002u);  // table offset | BIR 2
  EXPECT_EQ(config.Read32(*cap + 8), 0x3002u);  // PBA offset | BIR 2
  config.Write(*cap, std::vector<uint8_t>{0xff, 0xff, 0xff, 0xff});
  EXPECT_EQ(config.Read16(*cap + 2), 0xc002);  // only enable and function mask are writable
  EXPECT_EQ(config.Read32(*cap + 4), 0x2002u);
  EXPECT_EQ(msix_->table_bytes(), 48u);
  EXPECT_EQ(msix_->pba_bytes(), 8u);
}

TEST_F(MsixTest, TableResetsMaskedAndRoundTrips) {
  for (uint16_t v = 0; v < 3; ++v) EXPECT_EQ(ReadTable32(v * 16 + 12), 1u);
  WriteTable32(16, 0xfee01003);  // bits 1:0 of the address are reserved
  WriteTable32(20, 0x12345678);
  WriteTable32(24, 0x4041);
  WriteTable32(28, 0xfffffffe);  // only the mask bit is writable
  EXPECT_EQ(ReadTable32(16), 0xfee01000u);
  EXPECT_EQ(ReadTable32(20), 0x12345678u);
  EXPECT_EQ(ReadTable32(24), 0x4041u);
  EXPECT_EQ(ReadTable32(28), 0u);
  uint8_t qword[8];
  msix_->ReadTable(16, qword);
  EXPECT_EQ(qword[0], 0x00);
  EXPECT_EQ(qword[3], 0xfe);
  EXPECT_EQ(qword[4], 0x78);
  const uint8_t data_and_control[8] = {0x41, 0x40, 0, 0, 1, 0, 0, 0};
  msix_->WriteTable(40, data_and_control);  // qword write: vector 2 data + control
  EXPECT_EQ(ReadTable32(40), 0x4041u);
  EXPECT_EQ(ReadTable32(44), 1u);
}

TEST_F(MsixTest, BadTableAndPbaAccessesAreIgnored) {
  uint8_t bytes[4] = {0xaa, 0xaa, 0xaa, 0xaa};
  msix_->ReadTable(2, bytes);  // misaligned
  EXPECT_EQ(bytes[0], 0);
  msix_->WriteTable(48, std::vector<uint8_t>(4, 0));  // past the table
  msix_->WriteTable(44, std::vector<uint8_t>(8, 0));  // straddles the end
  msix_->WriteTable(12, std::vector<uint8_t>(2, 0));  // word access
  msix_->WriteTable(UINT64_MAX - 3, std::vector<uint8_t>(4, 0));
  EXPECT_EQ(ReadTable32(12), 1u);
  EXPECT_EQ(ReadTable32(44), 1u);
  uint8_t pba[4] = {0xaa, 0xaa, 0xaa, 0xaa};
  msix_->ReadPba(8, pba);
  EXPECT_EQ(pba[0], 0);
  EXPECT_TRUE(delivery_->Take().empty());
}

TEST_F(MsixTest, TriggerDeliversOnlyWhenEnabledAndUnmasked) {
  Program(0, 0x41);
  EXPECT_TRUE(msix_->Trigger(0).ok());  // MSI-X still disabled: pending
  EXPECT_EQ(ReadPba64(), 1u);
  EXPECT_TRUE(delivery_->Take().empty());
  msix_->SetMessageControl(Msix::kMessageControlEnable);  // enabling delivers the pending one
  EXPECT_EQ(delivery_->Take(), (std::vector<Event>{{false, 0, {0xfee00000, 0x41}}, {true, 0, {}}}));
  EXPECT_EQ(ReadPba64(), 0u);
  EXPECT_TRUE(msix_->Trigger(0).ok());  // same message: no new route
  EXPECT_EQ(delivery_->Take(), (std::vector<Event>{{true, 0, {}}}));
  EXPECT_EQ(msix_->Trigger(3).error().errno_value(), EINVAL);
  EXPECT_TRUE(msix_->enabled());
}

TEST_F(MsixTest, VectorMaskHoldsInterruptUntilUnmasked) {
  msix_->SetMessageControl(Msix::kMessageControlEnable);
  Program(1, 0x51, /*unmask=*/false);
  EXPECT_TRUE(msix_->masked(1));
  EXPECT_TRUE(msix_->Trigger(1).ok());
  EXPECT_TRUE(msix_->Trigger(1).ok());  // still one pending bit
  EXPECT_EQ(ReadPba64(), 2u);
  EXPECT_TRUE(delivery_->Take().empty());
  WriteTable32(16 + 12, 0);  // unmask: deliver once, clear the pending bit
  EXPECT_EQ(delivery_->Take(), (std::vector<Event>{{false, 1, {0xfee00000, 0x51}}, {true, 1, {}}}));
  EXPECT_EQ(ReadPba64(), 0u);
  EXPECT_FALSE(msix_->masked(1));
}

TEST_F(MsixTest, FunctionMaskHoldsEveryVector) {
  Program(0, 0x41);
  Program(2, 0x43);
  msix_->SetMessageControl(Msix::kMessageControlEnable | Msix::kMessageControlFunctionMask);
  EXPECT_TRUE(msix_->masked(0));
  EXPECT_TRUE(msix_->Trigger(0).ok());
  EXPECT_TRUE(msix_->Trigger(2).ok());
  EXPECT_EQ(ReadPba64(), 5u);
  EXPECT_TRUE(delivery_->Take().empty());
  msix_->SetMessageControl(Msix::kMessageControlEnable);
  EXPECT_EQ(delivery_->Take(), (std::vector<Event>{{false, 0, {0xfee00000, 0x41}},
                                                   {true, 0, {}},
                                                   {false, 2, {0xfee00000, 0x43}},
                                                   {true, 2, {}}}));
  EXPECT_EQ(ReadPba64(), 0u);
}

TEST_F(MsixTest, ReprogrammedMessageIsSentBeforeTheNextSignal) {
  msix_->SetMessageControl(Msix::kMessageControlEnable);
  Program(0, 0x41);
  EXPECT_TRUE(msix_->Trigger(0).ok());
  WriteTable32(12, 1);
  Program(0, 0x42);  // e.g. the guest moved the IRQ to another CPU
  EXPECT_TRUE(msix_->Trigger(0).ok());
  EXPECT_EQ(delivery_->Take(), (std::vector<Event>{{false, 0, {0xfee00000, 0x41}},
                                                   {true, 0, {}},
                                                   {false, 0, {0xfee00000, 0x42}},
                                                   {true, 0, {}}}));
}

TEST(MsixCreateTest, RejectsBadLayouts) {
  auto delivery = std::make_shared<FakeDelivery>();
  EXPECT_FALSE(Msix::Create({.num_vectors = 0}, delivery).ok());
  EXPECT_FALSE(Msix::Create({.num_vectors = 2049, .pba_offset = 0x8000}, delivery).ok());
  EXPECT_FALSE(Msix::Create({.num_vectors = 1, .bar = 6, .pba_offset = 0x800}, delivery).ok());
  EXPECT_FALSE(
      Msix::Create({.num_vectors = 1, .table_offset = 4, .pba_offset = 0x800}, delivery).ok());
  EXPECT_FALSE(Msix::Create({.num_vectors = 4, .table_offset = 0, .pba_offset = 0x30}, delivery)
                   .ok());  // PBA inside the table
  EXPECT_FALSE(Msix::Create({.num_vectors = 1, .pba_offset = 0x800}, nullptr).ok());
  EXPECT_TRUE(
      Msix::Create({.num_vectors = 2048, .table_offset = 0, .pba_offset = 0x8000}, delivery).ok());
}

// vCPU threads mask and unmask while a device thread triggers: every trigger is delivered or
// left pending, and after the final unmask nothing is pending.
TEST(MsixConcurrencyTest, TriggersRaceWithMasking) {
  auto delivery = std::make_shared<FakeDelivery>();
  auto msix = Msix::Create({.num_vectors = 1, .table_offset = 0, .pba_offset = 0x800}, delivery);
  ASSERT_TRUE(msix.ok());
  (*msix)->SetMessageControl(Msix::kMessageControlEnable);
  std::atomic<bool> done{false};
  std::thread device([&] {
    for (int i = 0; i < 2000; ++i) EXPECT_TRUE((*msix)->Trigger(0).ok());
    done = true;
  });
  for (int i = 0; !done; ++i) {
    const uint8_t control[4] = {static_cast<uint8_t>(i % 2 == 0), 0, 0, 0};
    (*msix)->WriteTable(12, control);
  }
  device.join();
  const uint8_t unmask[4] = {};
  (*msix)->WriteTable(12, unmask);
  uint8_t pba[8];
  (*msix)->ReadPba(0, pba);
  EXPECT_EQ(pba[0], 0);
  EXPECT_FALSE(delivery->Take().empty());
}

}  // namespace
}  // namespace tern::pci
