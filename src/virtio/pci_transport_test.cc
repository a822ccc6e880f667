// Tests of the virtio-pci modern transport: capabilities, feature negotiation, the status
// machine, queue registers, notifications and MSI-X interrupts, driven as a guest driver would.
#include "virtio/pci_transport.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <thread>

#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

constexpr uint64_t kFeatureTest = 1ull << 3;

class FakeDevice : public VirtioDevice {
 public:
  uint32_t device_type() const override { return kDeviceTypeEntropy; }
  uint64_t device_features() const override {
    return kFeatureVersion1 | kFeatureEventIdx | kFeatureTest;
  }
  std::vector<uint16_t> queue_max_sizes() const override { return {256, 64}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(offset + i);
  }
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override {
    last_config_write = {offset, data[0]};
  }
  Status Activate(const ActivateContext& context) override {
    ++activations;
    features = context.driver_features;
    ready.clear();
    for (const Queue& queue : *context.queues) ready.push_back(queue.ready());
    return activate_result;
  }
  void Reset() override {
    ++resets;
    if (on_reset) on_reset();
  }

  int activations = 0;
  int resets = 0;
  uint64_t features = 0;
  std::vector<bool> ready;
  std::pair<uint64_t, uint8_t> last_config_write{};
  Status activate_result = Ok();
  std::function<void()> on_reset;  // what else Reset() does
};

class FakeMsi : public pci::MsiDelivery {
 public:
  Status SetMessage(uint16_t vector, const pci::MsiMessage& message) override {
    messages[vector] = message;
    return Ok();
  }
  Status Signal(uint16_t vector) override {
    ++signals[vector];
    return Ok();
  }
  std::map<uint16_t, pci::MsiMessage> messages;
  std::map<uint16_t, int> signals;
};

struct Registration {
  int fd;
  uint64_t address;
  bool deassign;
};

class VirtioPciTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(loop).value();
    auto pci =
        VirtioPciDevice::Create(device_, memory_, *loop_, msi_,
                                [this](const EventFd& event, uint64_t address, bool deassign) {
                                  registrations_.push_back({event.fd(), address, deassign});
                                  return Ok();
                                });
    ASSERT_TRUE(pci.ok()) << pci.error().ToString();
    pci_ = std::move(pci).value();
  }

  uint64_t Read(uint64_t offset, size_t size) {
    uint8_t data[8] = {};
    pci_->ReadBar(0, offset, std::span(data, size));
    uint64_t value = 0;
    std::memcpy(&value, data, size);
    return value;
  }
  void Write(uint64_t offset, size_t size, uint64_t value) {
    uint8_t data[8];
    std::memcpy(data, &value, 8);
    pci_->WriteBar(0, offset, std::span<const uint8_t>(data, size));
  }
  uint32_t ReadConfig(uint16_t offset, size_t size = 4) {
    uint8_t data[4] = {};
    pci_->ReadConfig(offset, std::span(data, size));
    uint32_t value = 0;
    std::memcpy(&value, data, size);
    return value;
  }
  void WriteConfig(uint16_t offset, size_t size, uint32_t value) {
    uint8_t data[4];
    std::memcpy(data, &value, 4);
    pci_->WriteConfig(offset, std::span<const uint8_t>(data, size));
  }
  // Config offsets of the vendor-specific capabilities by cfg_type, and of MSI-X.
  std::map<uint8_t, uint16_t> Capabilities() {
    std::map<uint8_t, uint16_t> caps;
    for (uint16_t at = ReadConfig(pci::kCapabilitiesPointerOffset, 1); at != 0;
         at = ReadConfig(at + 1, 1)) {
      uint8_t id = ReadConfig(at, 1);
      caps[id == pci::kCapabilityIdMsix ? 0x11 : ReadConfig(at + 3, 1)] = at;
    }
    return caps;
  }
  void Negotiate(uint64_t features) {
    Write(0x14, 1, kStatusAcknowledge | kStatusDriver);
    Write(0x08, 4, 0);
    Write(0x0c, 4, features & 0xffffffff);
    Write(0x08, 4, 1);
    Write(0x0c, 4, features >> 32);
    Write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  // Enables MSI-X with every vector unmasked, vector v sending data 0x40 + v.
  void EnableMsix() {
    WriteConfig(Capabilities()[0x11] + 2, 2, pci::Msix::kMessageControlEnable);
    for (uint32_t vector = 0; vector < 3; ++vector) {
      Write(kMsixTableOffset + 16 * vector, 4, 0xfee00000);
      Write(kMsixTableOffset + 16 * vector + 8, 4, 0x40 + vector);
      Write(kMsixTableOffset + 16 * vector + 12, 4, 0);  // unmask
    }
  }
  // Negotiates, sets queue 0 up and sets DRIVER_OK.
  void Activate() {
    int activations = device_->activations;
    Negotiate(kFeatureVersion1);
    SetUpQueue(0, 0x10000);
    Write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    ASSERT_EQ(device_->activations, activations + 1);
  }
  // Sets queue `index` up on rings inside guest memory and enables it.
  void SetUpQueue(uint16_t index, uint64_t base) {
    Write(0x16, 2, index);
    Write(0x18, 2, 16);
    Write(0x20, 4, base);  // desc, in two 32-bit halves as Linux writes it
    Write(0x24, 4, 0);
    Write(0x28, 8, base + 0x1000);
    Write(0x30, 8, base + 0x2000);
    Write(0x1c, 2, 1);
  }

  GuestMemory memory_ = testing::MakeGuestMemory(1 << 20);
  std::unique_ptr<EventLoop> loop_;
  std::shared_ptr<FakeDevice> device_ = std::make_shared<FakeDevice>();
  std::shared_ptr<FakeMsi> msi_ = std::make_shared<FakeMsi>();
  std::vector<Registration> registrations_;
  std::shared_ptr<VirtioPciDevice> pci_;
};

TEST_F(VirtioPciTest, IdentifiesAsModernVirtioDevice) {
  EXPECT_EQ(ReadConfig(0, 2), 0x1af4u);
  EXPECT_EQ(ReadConfig(2, 2), 0x1040u + kDeviceTypeEntropy);
  EXPECT_EQ(ReadConfig(pci::kRevisionIdOffset, 1), 1u);
  EXPECT_GE(ReadConfig(pci::kSubsystemIdOffset, 2), 0x40u);
  ASSERT_EQ(pci_->bars().size(), 1u);
  EXPECT_TRUE(pci_->bars()[0].is_64bit);
  EXPECT_EQ(pci_->bars()[0].size, kBarSize);
}

TEST_F(VirtioPciTest, CapabilitiesPointIntoBarZero) {
  auto caps = Capabilities();
  struct Expect {
    uint8_t type;
    uint32_t offset;
  };
  for (Expect e : {Expect{1, kCommonCfgOffset}, Expect{2, kNotifyOffset}, Expect{3, kIsrOffset},
                   Expect{4, kDeviceCfgOffset}}) {
    ASSERT_TRUE(caps.count(e.type)) << "cfg_type " << int(e.type);
    uint16_t at = caps[e.type];
    EXPECT_EQ(ReadConfig(at + 4, 1), 0u);  // bar
    EXPECT_EQ(ReadConfig(at + 8), e.offset);
    EXPECT_GT(ReadConfig(at + 12), 0u);
  }
  EXPECT_EQ(ReadConfig(caps[2] + 16), kNotifyOffMultiplier);
  EXPECT_TRUE(caps.count(5));                            // VIRTIO_PCI_CAP_PCI_CFG
  EXPECT_TRUE(caps.count(0x11));                         // MSI-X
  EXPECT_EQ(ReadConfig(caps[0x11] + 2, 2) & 0x7ff, 2u);  // table size 3 = 2 queues + config
}

TEST_F(VirtioPciTest, NegotiatesFeaturesThirtyTwoBitsAtATime) {
  Write(0x00, 4, 0);
  EXPECT_EQ(Read(0x04, 4), (kFeatureEventIdx | kFeatureTest) & 0xffffffff);
  Write(0x00, 4, 1);
  EXPECT_EQ(Read(0x04, 4), 1u);  // VIRTIO_F_VERSION_1 is bit 32
  Write(0x00, 4, 7);
  EXPECT_EQ(Read(0x04, 4), 0u);
  Negotiate(kFeatureVersion1 | kFeatureTest);
  EXPECT_TRUE(Read(0x14, 1) & kStatusFeaturesOk);
}

TEST_F(VirtioPciTest, RefusesFeaturesOkWithoutVersion1OrWithUnofferedBits) {
  Negotiate(kFeatureTest);
  EXPECT_FALSE(Read(0x14, 1) & kStatusFeaturesOk);
  Write(0x14, 1, 0);
  Negotiate(kFeatureVersion1 | (1ull << 5));
  EXPECT_FALSE(Read(0x14, 1) & kStatusFeaturesOk);
  // DRIVER_OK without FEATURES_OK does not activate the device.
  Write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  EXPECT_EQ(device_->activations, 0);
}

TEST_F(VirtioPciTest, QueueRegistersAndActivation) {
  EXPECT_EQ(Read(0x12, 2), 2u);  // num_queues
  Write(0x16, 2, 1);
  EXPECT_EQ(Read(0x18, 2), 64u);  // queue_size starts at the maximum
  EXPECT_EQ(Read(0x1e, 2), 1u);   // queue_notify_off
  Negotiate(kFeatureVersion1 | kFeatureEventIdx);
  SetUpQueue(0, 0x10000);
  EXPECT_EQ(Read(0x1c, 2), 1u);
  EXPECT_EQ(Read(0x20, 8), 0x10000u);
  EXPECT_EQ(Read(0x2c, 4), 0u);  // high half of queue_driver
  Write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(device_->activations, 1);
  EXPECT_EQ(device_->features, kFeatureVersion1 | kFeatureEventIdx);
  EXPECT_EQ(device_->ready, (std::vector<bool>{true, false}));
  // Queue registers are frozen after DRIVER_OK.
  Write(0x16, 2, 0);
  Write(0x18, 2, 2);
  EXPECT_EQ(Read(0x18, 2), 16u);
}

TEST_F(VirtioPciTest, InvalidQueueSetsDeviceNeedsReset) {
  Negotiate(kFeatureVersion1);
  Write(0x16, 2, 0);
  Write(0x18, 2, 3);  // not a power of two
  Write(0x1c, 2, 1);
  EXPECT_EQ(Read(0x1c, 2), 0u);
  EXPECT_TRUE(Read(0x14, 1) & kStatusDeviceNeedsReset);
  Write(0x18, 2, 16);
  Write(0x20, 8, 0xfffff000);  // rings outside guest memory
  Write(0x1c, 2, 1);
  EXPECT_EQ(Read(0x1c, 2), 0u);
  // Writes past the queues and of odd sizes are ignored.
  Write(0x16, 2, 9);
  Write(0x18, 2, 16);
  EXPECT_EQ(Read(0x18, 2), 0u);
  Write(0x14, 2, 0xffff);
  EXPECT_EQ(Read(0x14, 1) & kStatusDriverOk, 0u);
}

TEST_F(VirtioPciTest, FailedActivationSetsDeviceNeedsReset) {
  device_->activate_result = Error("backend gone", EIO);
  Negotiate(kFeatureVersion1);
  SetUpQueue(0, 0x10000);
  Write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_TRUE(Read(0x14, 1) & kStatusDeviceNeedsReset);
  EXPECT_EQ(Read(kIsrOffset, 1), 2u);  // configuration change
  Write(0x14, 1, 0);
  EXPECT_EQ(Read(0x14, 1), 0u);
}

TEST_F(VirtioPciTest, ResetReturnsToInitialState) {
  Negotiate(kFeatureVersion1);
  SetUpQueue(0, 0x10000);
  Write(0x1a, 2, 1);
  Write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  Write(0x14, 1, 0);
  EXPECT_EQ(device_->resets, 1);
  EXPECT_EQ(Read(0x14, 1), 0u);
  Write(0x16, 2, 0);
  EXPECT_EQ(Read(0x1c, 2), 0u);
  EXPECT_EQ(Read(0x18, 2), 256u);
  EXPECT_EQ(Read(0x1a, 2), kNoVector);
  EXPECT_EQ(Read(0x20, 8), 0u);
}

TEST_F(VirtioPciTest, BarMovesReregisterQueueNotifyEventFds) {
  ASSERT_TRUE(pci_->BarMoved(0, 0, 0xc0000000).ok());
  ASSERT_EQ(registrations_.size(), 2u);
  EXPECT_EQ(registrations_[1].address, 0xc0000000 + kNotifyOffset + kNotifyOffMultiplier);
  ASSERT_TRUE(pci_->BarMoved(0, 0xc0000000, 0xd0000000).ok());
  ASSERT_EQ(registrations_.size(), 6u);
  EXPECT_TRUE(registrations_[2].deassign);
  EXPECT_EQ(registrations_[2].address, 0xc0000000 + kNotifyOffset);
  EXPECT_FALSE(registrations_[5].deassign);
  EXPECT_EQ(registrations_[5].address, 0xd0000000 + kNotifyOffset + kNotifyOffMultiplier);
}

TEST_F(VirtioPciTest, NotifyRegionWriteKicksTheQueueEventFd) {
  Write(kNotifyOffset + kNotifyOffMultiplier, 4, 1);      // a size the ioeventfd does not match
  Write(kNotifyOffset + 2 * kNotifyOffMultiplier, 2, 2);  // past the queues: ignored
  std::vector<int> kicked;
  for (const Registration& r : registrations_) kicked.push_back(r.fd);
  ASSERT_TRUE(pci_->BarMoved(0, 0, 0xc0000000).ok());
  uint64_t count = 0;
  ASSERT_EQ(::read(registrations_[1].fd, &count, 8), 8);
  EXPECT_EQ(count, 1u);
  EXPECT_EQ(::read(registrations_[0].fd, &count, 8), -1);  // queue 0 was not kicked
}

TEST_F(VirtioPciTest, InterruptsUseMsixVectorsOnceEnabled) {
  Write(0x10, 2, 2);  // config_msix_vector
  Write(0x16, 2, 1);
  Write(0x1a, 2, 1);  // queue 1 → vector 1
  Write(0x16, 2, 0);
  Write(0x1a, 2, 3);  // out of range: NO_VECTOR
  EXPECT_EQ(Read(0x1a, 2), kNoVector);
  EXPECT_EQ(Read(0x10, 2), 2u);
  // Before MSI-X is enabled only the ISR records the interrupt.
  ASSERT_TRUE(pci_->NotifyQueue(1).ok());
  EXPECT_TRUE(msi_->signals.empty());
  EXPECT_EQ(Read(kIsrOffset, 1), 1u);
  EXPECT_EQ(Read(kIsrOffset, 1), 0u);  // reading clears it
  EnableMsix();
  ASSERT_TRUE(pci_->NotifyQueue(1).ok());
  ASSERT_TRUE(pci_->NotifyConfig().ok());
  ASSERT_TRUE(pci_->NotifyQueue(0).ok());  // NO_VECTOR: nothing sent
  EXPECT_EQ(msi_->signals[1], 1);
  EXPECT_EQ(msi_->signals[2], 1);
  EXPECT_EQ(msi_->signals.count(0), 0u);
  EXPECT_EQ(msi_->messages[1].data, 0x41u);
  EXPECT_FALSE(pci_->NotifyQueue(7).ok());
}

TEST_F(VirtioPciTest, DeviceReportsNeedsReset) {
  EnableMsix();
  Write(0x10, 2, 2);  // config_msix_vector
  Activate();
  uint8_t running = kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk;
  uint8_t generation = Read(0x15, 1);
  ASSERT_TRUE(pci_->NotifyNeedsReset().ok());
  EXPECT_EQ(Read(0x14, 1), running | kStatusDeviceNeedsReset);
  EXPECT_EQ(pci_->device_status(), running | kStatusDeviceNeedsReset);
  EXPECT_EQ(msi_->signals[2], 1);  // configuration change notification
  EXPECT_EQ(Read(kIsrOffset, 1), 2u);
  EXPECT_NE(Read(0x15, 1), generation);
  // The driver cannot clear it other than by a reset (Linux writes the status it read back).
  Write(0x14, 1, running | kStatusDeviceNeedsReset);
  Write(0x14, 1, running);
  EXPECT_EQ(Read(0x14, 1), running | kStatusDeviceNeedsReset);
  Write(0x14, 1, 0);
  EXPECT_EQ(device_->resets, 1);
  EXPECT_EQ(Read(0x14, 1), 0u);
  // Works again: the driver cannot set it either.
  Activate();
  Write(0x14, 1, running | kStatusDeviceNeedsReset);
  EXPECT_EQ(Read(0x14, 1), running);
}

TEST_F(VirtioPciTest, NeedsResetWithoutMsixOnlySetsTheIsr) {
  ASSERT_TRUE(pci_->NotifyNeedsReset().ok());
  EXPECT_TRUE(msi_->signals.empty());
  EXPECT_EQ(Read(kIsrOffset, 1), 2u);
  EXPECT_EQ(Read(0x14, 1), kStatusDeviceNeedsReset);
  Write(0x14, 1, 0);
  EXPECT_EQ(Read(0x14, 1), 0u);
}

// A device's Reset() waits for its event loop (RunSync), whose handler is reporting an error
// meanwhile: NotifyNeedsReset() must not wait for the vCPU thread, which holds the register
// lock while it waits in Reset().
TEST_F(VirtioPciTest, NeedsResetFromTheLoopDuringResetDoesNotDeadlock) {
  std::thread loop_thread([this] { loop_->Run(); });
  std::thread::id ran_on;  // wait until RunSync() goes through the loop thread
  while (ran_on == std::thread::id() || ran_on == std::this_thread::get_id()) {
    loop_->RunSync([&] { ran_on = std::this_thread::get_id(); });
  }
  Activate();
  bool reported = false;
  device_->on_reset = [&] { loop_->RunSync([&] { reported = pci_->NotifyNeedsReset().ok(); }); };
  std::promise<void> reset_done;
  std::thread vcpu([&] {
    Write(0x14, 1, 0);
    reset_done.set_value();
  });
  if (reset_done.get_future().wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    std::fprintf(stderr, "deadlock: driver reset and NotifyNeedsReset() wait for each other\n");
    std::abort();  // the threads cannot be joined
  }
  vcpu.join();
  loop_->Stop();
  loop_thread.join();
  EXPECT_TRUE(reported);
  EXPECT_EQ(device_->resets, 1);
  // The report belonged to the activation the reset ended.
  EXPECT_EQ(Read(0x14, 1), 0u);
}

TEST_F(VirtioPciTest, DeviceConfigIsForwarded) {
  EXPECT_EQ(Read(kDeviceCfgOffset + 5, 1), 5u);
  Write(kDeviceCfgOffset + 3, 1, 0xab);
  EXPECT_EQ(device_->last_config_write, (std::pair<uint64_t, uint8_t>{3, 0xab}));
}

TEST_F(VirtioPciTest, PciCfgCapabilityReachesBarZero) {
  uint16_t cap = Capabilities()[5];
  WriteConfig(cap + 4, 1, 0);     // bar
  WriteConfig(cap + 8, 4, 0x12);  // offset: num_queues
  WriteConfig(cap + 12, 4, 2);    // length
  EXPECT_EQ(ReadConfig(cap + 16, 2), 2u);
  WriteConfig(cap + 8, 4, 0x16);  // queue_select
  WriteConfig(cap + 16, 2, 1);
  EXPECT_EQ(Read(0x16, 2), 1u);
  WriteConfig(cap + 8, 4, kBarSize - 1);   // outside BAR 0 with length 2: not forwarded,
  EXPECT_EQ(ReadConfig(cap + 16, 2), 0u);  // reads the capability's own (unwritten) bytes
}

// A function's state restores into a fresh function of the same device: registers, queues,
// MSI-X, and the device re-activated, with each ready queue kicked and notified.
TEST_F(VirtioPciTest, StateRestoresIntoAFreshFunctionAndReactivates) {
  EnableMsix();
  Negotiate(kFeatureVersion1 | kFeatureEventIdx);
  SetUpQueue(0, 0x10000);
  Write(0x16, 2, 0);
  Write(0x1a, 2, 1);  // queue 0 -> vector 1
  Write(0x14, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  nlohmann::json state = pci_->SaveState();

  auto device = std::make_shared<FakeDevice>();
  auto msi = std::make_shared<FakeMsi>();
  auto fresh = VirtioPciDevice::Create(device, memory_, *loop_, msi,
                                       [](const EventFd&, uint64_t, bool) { return Ok(); });
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->RestoreState(state).ok());
  EXPECT_EQ(device->activations, 1);
  EXPECT_EQ(device->features, kFeatureVersion1 | kFeatureEventIdx);
  EXPECT_EQ(device->ready, (std::vector<bool>{true, false}));
  EXPECT_EQ((*fresh)->device_status(),
            kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  EXPECT_EQ(msi->signals[1], 1);  // queue 0's used buffer notification, re-sent
  EXPECT_EQ(msi->messages[1].data, 0x41u);
  EXPECT_EQ((*fresh)->SaveState()["queues"], state["queues"]);
  // A second restore into the now active function is refused.
  EXPECT_FALSE((*fresh)->RestoreState(state).ok());
}

TEST_F(VirtioPciTest, MalformedStatesAreRefused) {
  Activate();
  nlohmann::json state = pci_->SaveState();
  std::vector<std::function<void(nlohmann::json&)>> breakers = {
      [](nlohmann::json& s) { s["device_type"] = 99; },
      [](nlohmann::json& s) {
        s["config_space"] = nlohmann::json::binary({1, 2, 3});
      },
      [](nlohmann::json& s) { s["queues"].erase(0); },
      [](nlohmann::json& s) { s["msix"] = nlohmann::json::array(); },
      [](nlohmann::json& s) { s["driver_features"] = ~0ull; },
      [](nlohmann::json& s) { s["status"] = 256; },
      [](nlohmann::json& s) { s.erase("isr"); },
      [](nlohmann::json& s) { s["queues"][0]["size"] = 5; },
      [](nlohmann::json& s) { s["queue_vectors"][0] = 70000; },
  };
  for (size_t i = 0; i < breakers.size(); ++i) {
    nlohmann::json bad = state;
    breakers[i](bad);
    auto device = std::make_shared<FakeDevice>();
    auto fresh = VirtioPciDevice::Create(device, memory_, *loop_, std::make_shared<FakeMsi>(),
                                         [](const EventFd&, uint64_t, bool) { return Ok(); });
    ASSERT_TRUE(fresh.ok());
    EXPECT_FALSE((*fresh)->RestoreState(bad).ok()) << "breaker " << i;
    EXPECT_EQ(device->activations, 0) << "breaker " << i;
  }
}

}  // namespace
}  // namespace tern::virtio
