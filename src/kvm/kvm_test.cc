// Unit tests for the host check that refuses KVM without hardware virtualization (PVM), and,
// where /dev/kvm is usable, for the interrupt-routing ioctls against a real VM.
#include "kvm/kvm.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace tern::kvm {
namespace {

std::string MakeSysModuleDir(std::initializer_list<const char*> modules) {
  char templ[] = "/tmp/tern-sysmodule-XXXXXX";
  std::string dir = ::mkdtemp(templ);
  for (const char* module : modules) ::mkdir((dir + "/" + module).c_str(), 0755);
  return dir;
}

TEST(HardwareVirtualizationTest, RefusesPvmWithOneLineHint) {
  auto status = CheckHardwareVirtualization(MakeSysModuleDir({"kvm", "kvm_pvm"}));
  ASSERT_FALSE(status.ok());
  const std::string& message = status.error().message();
  EXPECT_NE(message.find("PVM"), std::string::npos);
  EXPECT_NE(message.find("test host"), std::string::npos);
  EXPECT_EQ(message.find('\n'), std::string::npos);
}

TEST(HardwareVirtualizationTest, RefusesHostWithoutVendorModule) {
  auto status = CheckHardwareVirtualization(MakeSysModuleDir({"kvm"}));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("VT-x/AMD-V"), std::string::npos);
}

// A VM with the in-kernel irqchip, or nullopt where /dev/kvm is absent or unusable.
std::optional<Vm> VmWithIrqchip() {
  auto kvm = Kvm::Open();
  if (!kvm.ok()) return std::nullopt;
  auto vm = kvm->CreateVm();
  if (!vm.ok() || !vm->CreateIrqchip().ok()) return std::nullopt;
  return std::move(vm).value();
}

TEST(VmInterruptTest, GsiRoutingIrqfdAndIoeventfd) {
  std::optional<Vm> vm = VmWithIrqchip();
  if (!vm) GTEST_SKIP() << "no usable /dev/kvm";
  auto event = EventFd::Create();
  ASSERT_TRUE(event.ok());
  kvm_irq_routing_entry routes[2] = {};
  routes[0].gsi = 4;
  routes[0].type = KVM_IRQ_ROUTING_IRQCHIP;
  routes[0].u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
  routes[0].u.irqchip.pin = 4;
  routes[1].gsi = 24;
  routes[1].type = KVM_IRQ_ROUTING_MSI;
  routes[1].u.msi.address_lo = 0xfee00000;
  routes[1].u.msi.data = 0x41;
  Status routed = vm->SetGsiRouting(routes);
  ASSERT_TRUE(routed.ok()) << routed.error().ToString();
  ASSERT_TRUE(vm->Irqfd(*event, 24).ok());
  EXPECT_FALSE(vm->Irqfd(*event, 24).ok());  // EBUSY: already bound
  ASSERT_TRUE(vm->IrqfdDeassign(*event, 24).ok());
  EXPECT_TRUE(vm->Irqfd(*event, 24).ok());

  Status assigned = vm->Ioeventfd(*event, 0xc0001000, 4);
  ASSERT_TRUE(assigned.ok()) << assigned.error().ToString();
  EXPECT_EQ(vm->Ioeventfd(*event, 0xc0001000, 4).error().errno_value(), EEXIST);
  EXPECT_TRUE(vm->Ioeventfd(*event, 0xc0001000, 4, /*deassign=*/true).ok());
  EXPECT_FALSE(vm->Ioeventfd(*event, 0xc0001000, 4, /*deassign=*/true).ok());  // ENOENT

  kvm_irq_routing_entry bad = routes[1];
  bad.gsi = 4096;  // beyond KVM_MAX_IRQ_ROUTES
  EXPECT_EQ(vm->SetGsiRouting(std::span(&bad, 1)).error().errno_value(), EINVAL);
}

}  // namespace
}  // namespace tern::kvm
