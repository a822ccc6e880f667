// Unit tests for the host check that refuses KVM without hardware virtualization (PVM), and,
// where /dev/kvm is usable, for the interrupt-routing and state (snapshot) ioctls against a
// real VM and vCPU.
#include "kvm/kvm.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>

#include "kvm/kvm_test_util.h"

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

TEST(KvmStateTest, MsrIndexListNamesTheTsc) {
  auto kvm = Kvm::Open();
  if (!kvm.ok()) GTEST_SKIP() << "no usable /dev/kvm";
  auto list = kvm->GetMsrIndexList();
  TERN_SKIP_IF_UNSUPPORTED(list);
  ASSERT_TRUE(list.ok()) << list.error().ToString();
  EXPECT_NE(std::find(list->begin(), list->end(), 0x10u), list->end());  // IA32_TSC
}

TEST(KvmStateTest, RegsSregsFpuDebugRegsAndEventsRoundTrip) {
  std::optional<TestVm> t = MakeTestVm();
  if (!t) GTEST_SKIP() << "no usable /dev/kvm";
  auto regs = t->vcpu.GetRegs();
  ASSERT_TRUE(regs.ok());
  regs->rip = 0x1000;
  regs->rax = 42;
  ASSERT_TRUE(t->vcpu.SetRegs(*regs).ok());
  EXPECT_EQ(t->vcpu.GetRegs()->rip, 0x1000u);
  EXPECT_EQ(t->vcpu.GetRegs()->rax, 42u);

  auto sregs = t->vcpu.GetSregs();
  ASSERT_TRUE(sregs.ok());
  ASSERT_TRUE(t->vcpu.SetSregs(*sregs).ok());
  auto again = t->vcpu.GetSregs();
  EXPECT_EQ(std::memcmp(&*again, &*sregs, sizeof(kvm_sregs)), 0);

  auto fpu = t->vcpu.GetFpu();
  TERN_SKIP_IF_UNSUPPORTED(fpu);
  ASSERT_TRUE(fpu.ok()) << fpu.error().ToString();
  EXPECT_EQ(fpu->fcw, 0x37f);  // x87 control word after reset (SDM vol. 1 §8.1.5)

  auto debugregs = t->vcpu.GetDebugRegs();
  TERN_SKIP_IF_UNSUPPORTED(debugregs);
  ASSERT_TRUE(debugregs.ok()) << debugregs.error().ToString();
  debugregs->db[0] = 0x1000;
  Status set_debugregs = t->vcpu.SetDebugRegs(*debugregs);
  ASSERT_TRUE(set_debugregs.ok()) << set_debugregs.error().ToString();
  EXPECT_EQ(t->vcpu.GetDebugRegs()->db[0], 0x1000u);

  auto events = t->vcpu.GetVcpuEvents();
  TERN_SKIP_IF_UNSUPPORTED(events);
  ASSERT_TRUE(events.ok()) << events.error().ToString();
  Status set_events = t->vcpu.SetVcpuEvents(*events);
  ASSERT_TRUE(set_events.ok()) << set_events.error().ToString();
  auto events_again = t->vcpu.GetVcpuEvents();
  EXPECT_EQ(std::memcmp(&*events_again, &*events, sizeof(kvm_vcpu_events)), 0);
}

TEST(KvmStateTest, MpStateLapicXsaveAndXcrsRoundTrip) {
  std::optional<TestVm> t = MakeTestVm();
  if (!t) GTEST_SKIP() << "no usable /dev/kvm";
  auto mp_state = t->vcpu.GetMpState();
  TERN_SKIP_IF_UNSUPPORTED(mp_state);
  ASSERT_TRUE(mp_state.ok()) << mp_state.error().ToString();
  EXPECT_EQ(mp_state->mp_state, static_cast<uint32_t>(KVM_MP_STATE_RUNNABLE));  // the BSP
  ASSERT_TRUE(t->vcpu.SetMpState({KVM_MP_STATE_HALTED}).ok());
  EXPECT_EQ(t->vcpu.GetMpState()->mp_state, static_cast<uint32_t>(KVM_MP_STATE_HALTED));

  auto lapic = t->vcpu.GetLapic();
  ASSERT_TRUE(lapic.ok());
  uint32_t lint0 = 7 << 8;  // LVT LINT0 (0x350) delivery mode ExtINT
  std::memcpy(&lapic->regs[0x350], &lint0, sizeof(lint0));
  ASSERT_TRUE(t->vcpu.SetLapic(*lapic).ok());
  auto lapic_again = t->vcpu.GetLapic();
  EXPECT_EQ(std::memcmp(&*lapic_again, &*lapic, sizeof(kvm_lapic_state)), 0);

  auto xsave2_size = t->kvm.CheckExtension(KVM_CAP_XSAVE2);
  ASSERT_TRUE(xsave2_size.ok());
  auto xsave = t->vcpu.GetXsave(static_cast<size_t>(*xsave2_size));
  TERN_SKIP_IF_UNSUPPORTED(xsave);
  ASSERT_TRUE(xsave.ok()) << xsave.error().ToString();
  ASSERT_GE(xsave->size(), sizeof(kvm_xsave));
  Status set_xsave = t->vcpu.SetXsave(*xsave);
  ASSERT_TRUE(set_xsave.ok()) << set_xsave.error().ToString();
  EXPECT_EQ(*t->vcpu.GetXsave(static_cast<size_t>(*xsave2_size)), *xsave);
  std::vector<uint8_t> short_area(100);
  EXPECT_EQ(t->vcpu.SetXsave(short_area).error().errno_value(), EINVAL);

  auto xcrs = t->vcpu.GetXcrs();
  TERN_SKIP_IF_UNSUPPORTED(xcrs);
  ASSERT_TRUE(xcrs.ok()) << xcrs.error().ToString();
  ASSERT_GE(xcrs->nr_xcrs, 1u);
  EXPECT_EQ(xcrs->xcrs[0].xcr, 0u);        // XCR0
  EXPECT_EQ(xcrs->xcrs[0].value & 1, 1u);  // x87 state is always enabled
  Status set_xcrs = t->vcpu.SetXcrs(*xcrs);
  EXPECT_TRUE(set_xcrs.ok()) << set_xcrs.error().ToString();
}

TEST(KvmStateTest, MsrsReadAPrefixAndTscKhzRoundTrips) {
  std::optional<TestVm> t = MakeTestVm();
  if (!t) GTEST_SKIP() << "no usable /dev/kvm";
  constexpr uint32_t kSysenterCs = 0x174;
  constexpr uint32_t kSysenterEsp = 0x175;
  kvm_msr_entry entry{};
  entry.index = kSysenterCs;
  entry.data = 0x10;
  ASSERT_TRUE(t->vcpu.SetMsrs(std::span(&entry, 1)).ok());
  const uint32_t indices[] = {kSysenterCs, kSysenterEsp};
  auto msrs = t->vcpu.GetMsrs(indices);
  ASSERT_TRUE(msrs.ok()) << msrs.error().ToString();
  ASSERT_EQ(msrs->size(), 2u);
  EXPECT_EQ((*msrs)[0].index, kSysenterCs);
  EXPECT_EQ((*msrs)[0].data, 0x10u);

  // KVM stops at an MSR it does not know (unless the kvm module ignores unknown MSRs).
  std::ifstream ignore_msrs("/sys/module/kvm/parameters/ignore_msrs");
  std::string ignoring;
  ignore_msrs >> ignoring;
  if (ignoring != "Y") {
    const uint32_t with_unknown[] = {kSysenterCs, 0xdeadbeef, kSysenterEsp};
    auto prefix = t->vcpu.GetMsrs(with_unknown);
    ASSERT_TRUE(prefix.ok()) << prefix.error().ToString();
    EXPECT_EQ(prefix->size(), 1u);
  }

  auto khz = t->vcpu.GetTscKhz();
  TERN_SKIP_IF_UNSUPPORTED(khz);
  ASSERT_TRUE(khz.ok()) << khz.error().ToString();
  EXPECT_GT(*khz, 0u);
  Status set_khz = t->vcpu.SetTscKhz(*khz);
  ASSERT_TRUE(set_khz.ok()) << set_khz.error().ToString();
  EXPECT_EQ(*t->vcpu.GetTscKhz(), *khz);
}

TEST(KvmStateTest, Cpuid2ReturnsWhatWasSet) {
  std::optional<TestVm> t = MakeTestVm();
  if (!t) GTEST_SKIP() << "no usable /dev/kvm";
  auto empty = t->vcpu.GetCpuid2();
  TERN_SKIP_IF_UNSUPPORTED(empty);
  ASSERT_TRUE(empty.ok()) << empty.error().ToString();
  EXPECT_TRUE(empty->empty());
  auto supported = t->kvm.GetSupportedCpuid();
  ASSERT_TRUE(supported.ok());
  ASSERT_TRUE(t->vcpu.SetCpuid2(*supported).ok());
  auto cpuid = t->vcpu.GetCpuid2();
  ASSERT_TRUE(cpuid.ok());
  ASSERT_EQ(cpuid->size(), supported->size());
  EXPECT_EQ((*cpuid)[0].function, (*supported)[0].function);
}

TEST(KvmStateTest, IrqchipsPitAndClockRoundTrip) {
  std::optional<TestVm> t = MakeTestVm();
  if (!t) GTEST_SKIP() << "no usable /dev/kvm";
  for (uint32_t chip : {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC}) {
    auto irqchip = t->vm.GetIrqchip(chip);
    TERN_SKIP_IF_UNSUPPORTED(irqchip);
    ASSERT_TRUE(irqchip.ok()) << irqchip.error().ToString();
    EXPECT_EQ(irqchip->chip_id, chip);
    ASSERT_TRUE(t->vm.SetIrqchip(*irqchip).ok());
    auto again = t->vm.GetIrqchip(chip);
    EXPECT_EQ(std::memcmp(&*again, &*irqchip, sizeof(kvm_irqchip)), 0);
  }
  EXPECT_EQ(t->vm.GetIrqchip(3).error().errno_value(), EINVAL);

  auto pit = t->vm.GetPit2();
  TERN_SKIP_IF_UNSUPPORTED(pit);
  ASSERT_TRUE(pit.ok()) << pit.error().ToString();
  pit->channels[2].count = 0x1234;
  ASSERT_TRUE(t->vm.SetPit2(*pit).ok());
  EXPECT_EQ(t->vm.GetPit2()->channels[2].count, 0x1234u);

  auto clock = t->vm.GetClock();
  TERN_SKIP_IF_UNSUPPORTED(clock);
  ASSERT_TRUE(clock.ok()) << clock.error().ToString();
  kvm_clock_data later{};
  later.clock = clock->clock + 1'000'000'000'000;  // 1000 s ahead
  Status set_clock = t->vm.SetClock(later);
  ASSERT_TRUE(set_clock.ok()) << set_clock.error().ToString();
  EXPECT_GE(t->vm.GetClock()->clock, later.clock);
}

TEST(KvmStateTest, DirtyLogOfALoggingSlot) {
  std::optional<TestVm> t = MakeTestVm();
  if (!t) GTEST_SKIP() << "no usable /dev/kvm";
  constexpr size_t kPages = 80;  // more than one bitmap word
  auto memory = Mapping::Map(kPages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  ASSERT_TRUE(memory.ok());
  ASSERT_TRUE(
      t->vm.SetUserMemoryRegion(0, 0, kPages * 4096, memory->data(), KVM_MEM_LOG_DIRTY_PAGES).ok());
  auto bitmap = t->vm.GetDirtyLog(0, kPages);
  TERN_SKIP_IF_UNSUPPORTED(bitmap);
  ASSERT_TRUE(bitmap.ok()) << bitmap.error().ToString();
  EXPECT_EQ(bitmap->size(), 2u);

  // A slot without KVM_MEM_LOG_DIRTY_PAGES has no log.
  auto other = Mapping::Map(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(t->vm.SetUserMemoryRegion(1, 1 << 20, 4096, other->data()).ok());
  EXPECT_EQ(t->vm.GetDirtyLog(1, 1).error().errno_value(), ENOENT);
}

}  // namespace
}  // namespace tern::kvm
