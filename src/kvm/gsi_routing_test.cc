// Unit tests for GsiRouting and MsiVectors against a recording IrqTarget: the committed table
// always starts with KVM's default irqchip routes, MSI routes follow the vectors' messages, and
// GSIs, irqfds and routes are released with the vectors.
#include "kvm/gsi_routing.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>
#include <vector>

namespace tern::kvm {
namespace {

class RecordingTarget : public IrqTarget {
 public:
  Status SetGsiRouting(std::span<const kvm_irq_routing_entry> entries) override {
    if (fail_routing) return Error("KVM_SET_GSI_ROUTING: injected", EINVAL);
    tables.emplace_back(entries.begin(), entries.end());
    return Ok();
  }
  Status Irqfd(const EventFd& event, uint32_t gsi) override {
    if (irqfd_budget-- == 0) return Error("KVM_IRQFD: injected", ENOMEM);
    irqfds.insert({event.fd(), gsi});
    return Ok();
  }
  Status IrqfdDeassign(const EventFd& event, uint32_t gsi) override {
    EXPECT_EQ(irqfds.erase({event.fd(), gsi}), 1u) << "deassigning an unbound irqfd";
    return Ok();
  }

  std::vector<std::vector<kvm_irq_routing_entry>> tables;
  std::set<std::pair<int, uint32_t>> irqfds;  // (eventfd, gsi)
  int irqfd_budget = -1;                      // irqfds until one fails; -1: never
  bool fail_routing = false;
};

// The first 40 entries must be KVM's default_routing[] (arch/x86/kvm/irq_comm.c).
void ExpectDefaultIrqchipRoutes(const std::vector<kvm_irq_routing_entry>& table) {
  ASSERT_GE(table.size(), 40u);
  size_t i = 0;
  for (uint32_t gsi = 0; gsi < 24; ++gsi) {
    EXPECT_EQ(table[i].gsi, gsi);
    EXPECT_EQ(table[i].type, uint32_t{KVM_IRQ_ROUTING_IRQCHIP});
    EXPECT_EQ(table[i].u.irqchip.irqchip, uint32_t{KVM_IRQCHIP_IOAPIC});
    EXPECT_EQ(table[i].u.irqchip.pin, gsi);
    ++i;
    if (gsi >= 16) continue;
    EXPECT_EQ(table[i].gsi, gsi);
    EXPECT_EQ(table[i].u.irqchip.irqchip,
              static_cast<uint32_t>(gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE));
    EXPECT_EQ(table[i].u.irqchip.pin, gsi % 8);
    ++i;
  }
}

class GsiRoutingTest : public ::testing::Test {
 protected:
  std::shared_ptr<RecordingTarget> target_ = std::make_shared<RecordingTarget>();
  std::shared_ptr<GsiRouting> routing_ = GsiRouting::Create(target_);
};

TEST_F(GsiRoutingTest, TableKeepsTheIrqchipRoutes) {
  std::vector<kvm_irq_routing_entry> entries = routing_->Entries();
  EXPECT_EQ(entries.size(), 40u);
  ExpectDefaultIrqchipRoutes(entries);
  EXPECT_TRUE(target_->tables.empty()) << "nothing is committed before an MSI route exists";
}

TEST_F(GsiRoutingTest, VectorsGetGsisFrom24WithIrqfds) {
  auto first = routing_->AllocateMsiVectors(3);
  auto second = routing_->AllocateMsiVectors(2);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ((*first)->size(), 3);
  EXPECT_EQ((*first)->gsi(0), 24u);
  EXPECT_EQ((*first)->gsi(2), 26u);
  EXPECT_EQ((*second)->gsi(0), 27u);
  EXPECT_EQ(target_->irqfds.size(), 5u);
  EXPECT_EQ(target_->irqfds.count({(*first)->event(1).fd(), 25u}), 1u);
  EXPECT_EQ(routing_->AllocateMsiVectors(0).error().errno_value(), EINVAL);
}

TEST_F(GsiRoutingTest, SetMessageCommitsTheWholeTable) {
  auto vectors = routing_->AllocateMsiVectors(2);
  ASSERT_TRUE(vectors.ok());
  ASSERT_TRUE((*vectors)->SetMessage(1, {.address = 0x1'fee0'1000, .data = 0x4041}).ok());
  ASSERT_EQ(target_->tables.size(), 1u);
  std::vector<kvm_irq_routing_entry> table = target_->tables.back();
  ASSERT_EQ(table.size(), 41u);
  ExpectDefaultIrqchipRoutes(table);
  EXPECT_EQ(table[40].gsi, 25u);
  EXPECT_EQ(table[40].type, uint32_t{KVM_IRQ_ROUTING_MSI});
  EXPECT_EQ(table[40].u.msi.address_lo, 0xfee01000u);
  EXPECT_EQ(table[40].u.msi.address_hi, 0x1u);
  EXPECT_EQ(table[40].u.msi.data, 0x4041u);
  EXPECT_EQ(table[40].flags, 0u);

  ASSERT_TRUE((*vectors)->SetMessage(0, {.address = 0xfee00000, .data = 0x30}).ok());
  ASSERT_TRUE((*vectors)->SetMessage(1, {.address = 0xfee02000, .data = 0x31}).ok());
  table = target_->tables.back();
  ASSERT_EQ(table.size(), 42u);  // vector 1's route replaced, not duplicated
  EXPECT_EQ(table[40].gsi, 24u);
  EXPECT_EQ(table[41].gsi, 25u);
  EXPECT_EQ(table[41].u.msi.address_lo, 0xfee02000u);
  EXPECT_EQ(table[41].u.msi.data, 0x31u);
  EXPECT_EQ((*vectors)->SetMessage(2, {}).error().errno_value(), EINVAL);
}

TEST_F(GsiRoutingTest, FailedCommitKeepsThePreviousRoute) {
  auto vectors = routing_->AllocateMsiVectors(1);
  ASSERT_TRUE(vectors.ok());
  ASSERT_TRUE((*vectors)->SetMessage(0, {.address = 0xfee00000, .data = 0x30}).ok());
  target_->fail_routing = true;
  EXPECT_FALSE((*vectors)->SetMessage(0, {.address = 0xfee00000, .data = 0x99}).ok());
  std::vector<kvm_irq_routing_entry> entries = routing_->Entries();
  ASSERT_EQ(entries.size(), 41u);
  EXPECT_EQ(entries[40].u.msi.data, 0x30u);
  target_->fail_routing = false;
}

TEST_F(GsiRoutingTest, SignalWritesTheVectorsEventFd) {
  auto vectors = routing_->AllocateMsiVectors(2);
  ASSERT_TRUE(vectors.ok());
  ASSERT_TRUE((*vectors)->Signal(1).ok());
  ASSERT_TRUE((*vectors)->Signal(1).ok());
  auto count = (*vectors)->event(1).Read();
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, 2u);
  EXPECT_FALSE((*vectors)->event(0).Read().ok());  // EAGAIN: never signalled
  EXPECT_EQ((*vectors)->Signal(2).error().errno_value(), EINVAL);
}

TEST_F(GsiRoutingTest, DestroyingVectorsReleasesEverything) {
  auto vectors = routing_->AllocateMsiVectors(2);
  ASSERT_TRUE(vectors.ok());
  ASSERT_TRUE((*vectors)->SetMessage(0, {.address = 0xfee00000, .data = 0x30}).ok());
  vectors = Error("dropped");
  EXPECT_TRUE(target_->irqfds.empty());
  EXPECT_EQ(target_->tables.back().size(), 40u);  // committed without the MSI route
  auto again = routing_->AllocateMsiVectors(1);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->gsi(0), 24u);  // GSI reused
}

TEST_F(GsiRoutingTest, RunsOutOfGsisCleanly) {
  auto all = routing_->AllocateMsiVectors(GsiRouting::kMaxGsi - GsiRouting::kFirstMsiGsi + 1);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)->gsi((*all)->size() - 1), GsiRouting::kMaxGsi);
  EXPECT_EQ(routing_->AllocateMsiVectors(1).error().errno_value(), ENOSPC);
}

TEST_F(GsiRoutingTest, IrqfdFailureUndoesThePartialAllocation) {
  target_->irqfd_budget = 2;
  EXPECT_EQ(routing_->AllocateMsiVectors(4).error().errno_value(), ENOMEM);
  EXPECT_TRUE(target_->irqfds.empty());
  target_->irqfd_budget = -1;
  auto vectors = routing_->AllocateMsiVectors(1);
  ASSERT_TRUE(vectors.ok());
  EXPECT_EQ((*vectors)->gsi(0), 24u);
}

}  // namespace
}  // namespace tern::kvm
