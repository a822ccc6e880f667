// Unit tests for the snapshot state of VMs and vCPUs: JSON (CBOR) round trips, refusal of
// hostile JSON, the CPU identity check, and, where /dev/kvm is usable, Save -> Restore into a
// fresh VM -> Save giving the same state.
#include "arch/x86_64/vm_state.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/regs.h"
#include "kvm/kvm_test_util.h"

namespace tern::x86_64 {
namespace {

using Json = nlohmann::json;

// Fills `value` with bytes that differ per position and per `seed`.
template <typename T>
void Fill(T& value, uint8_t seed) {
  auto* bytes = reinterpret_cast<uint8_t*>(&value);
  for (size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7);
}

template <typename T>
bool SameBytes(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

VcpuState PatternVcpuState() {
  VcpuState state;
  for (uint32_t i = 0; i < 3; ++i) {
    kvm_cpuid_entry2 entry{};
    entry.function = i == 2 ? 0x80000001 : i;
    entry.index = i;
    entry.flags = i == 1 ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
    entry.eax = 0xffffffff;
    entry.ebx = 0x756e6547 + i;
    entry.ecx = 0;
    entry.edx = 1u << 31;
    state.cpuid.push_back(entry);
  }
  Fill(state.regs, 1);
  Fill(state.sregs, 2);
  state.xsave.resize(4096 + 64);
  for (size_t i = 0; i < state.xsave.size(); ++i) state.xsave[i] = static_cast<uint8_t>(i * 13);
  Fill(state.xcrs, 3);
  state.xcrs.nr_xcrs = 1;
  Fill(state.lapic, 4);
  state.mp_state.mp_state = KVM_MP_STATE_HALTED;
  Fill(state.vcpu_events, 5);
  Fill(state.debugregs, 6);
  state.msrs = {{0x10, 0, 0x123456789abcdef0}, {0x6e0, 0, ~uint64_t{0}}, {0xc0000080, 0, 0}};
  state.tsc_khz = 2'445'434;
  return state;
}

VmState PatternVmState() {
  VmState state;
  Fill(state.pic_master, 7);
  state.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  Fill(state.pic_slave, 8);
  state.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  Fill(state.ioapic, 9);
  state.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  Fill(state.pit, 10);
  Fill(state.clock, 11);
  return state;
}

void ExpectSameVcpuState(const VcpuState& a, const VcpuState& b) {
  ASSERT_EQ(a.cpuid.size(), b.cpuid.size());
  for (size_t i = 0; i < a.cpuid.size(); ++i) EXPECT_TRUE(SameBytes(a.cpuid[i], b.cpuid[i])) << i;
  EXPECT_TRUE(SameBytes(a.regs, b.regs));
  EXPECT_TRUE(SameBytes(a.sregs, b.sregs));
  EXPECT_EQ(a.xsave, b.xsave);
  EXPECT_TRUE(SameBytes(a.xcrs, b.xcrs));
  EXPECT_TRUE(SameBytes(a.lapic, b.lapic));
  EXPECT_TRUE(SameBytes(a.mp_state, b.mp_state));
  EXPECT_TRUE(SameBytes(a.vcpu_events, b.vcpu_events));
  EXPECT_TRUE(SameBytes(a.debugregs, b.debugregs));
  ASSERT_EQ(a.msrs.size(), b.msrs.size());
  for (size_t i = 0; i < a.msrs.size(); ++i) EXPECT_TRUE(SameBytes(a.msrs[i], b.msrs[i])) << i;
  EXPECT_EQ(a.tsc_khz, b.tsc_khz);
}

// `json` through CBOR and back, as a snapshot file stores it.
Json ThroughCbor(const Json& json) { return Json::from_cbor(Json::to_cbor(json)); }

TEST(VmStateJsonTest, VcpuStateRoundTripsThroughCbor) {
  VcpuState state = PatternVcpuState();
  auto parsed = VcpuStateFromJson(ThroughCbor(ToJson(state)));
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  ExpectSameVcpuState(state, *parsed);
}

TEST(VmStateJsonTest, VmStateRoundTripsThroughCbor) {
  VmState state = PatternVmState();
  auto parsed = VmStateFromJson(ThroughCbor(ToJson(state)));
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_TRUE(SameBytes(state.pic_master, parsed->pic_master));
  EXPECT_TRUE(SameBytes(state.pic_slave, parsed->pic_slave));
  EXPECT_TRUE(SameBytes(state.ioapic, parsed->ioapic));
  EXPECT_TRUE(SameBytes(state.pit, parsed->pit));
  EXPECT_TRUE(SameBytes(state.clock, parsed->clock));
}

// Expects `result` to be an EINVAL error whose message contains `needle`.
template <typename T>
void ExpectInvalid(const Result<T>& result, const std::string& needle, const std::string& case_) {
  ASSERT_FALSE(result.ok()) << case_;
  EXPECT_EQ(result.error().errno_value(), EINVAL) << case_;
  EXPECT_NE(result.error().message().find(needle), std::string::npos)
      << case_ << ": " << result.error().message();
}

// Values of every JSON type, none of them a valid struct binary.
std::vector<Json> WrongValues() {
  return {
      Json(nullptr), Json(true),     Json(-1),         Json(1.5),
      Json("text"),  Json::object(), Json::array({1}), Json::binary(std::vector<uint8_t>{1, 2, 3})};
}

TEST(VmStateJsonTest, RefusesHostileVcpuState) {
  const Json valid = ToJson(PatternVcpuState());
  ExpectInvalid(VcpuStateFromJson(Json::array()), "JSON object", "array");
  ExpectInvalid(VcpuStateFromJson(Json()), "JSON object", "null");

  for (const auto& [key, value] : valid.items()) {
    Json missing = valid;
    missing.erase(key);
    ExpectInvalid(VcpuStateFromJson(missing), "`" + key + "`", "missing " + key);
    for (const Json& wrong : WrongValues()) {
      Json mutated = valid;
      mutated[key] = wrong;
      // An array where one is expected fails on its first element.
      std::string needle = value.is_array() && wrong.is_array() ? key + "[0]" : "`" + key + "`";
      ExpectInvalid(VcpuStateFromJson(mutated), needle, key + " = " + wrong.dump());
    }
    if (value.is_binary()) {  // one byte short and one byte long
      for (int delta : {-1, 1}) {
        std::vector<uint8_t> bytes = value.get_binary();
        bytes.resize(bytes.size() + delta);
        Json mutated = valid;
        mutated[key] = Json::binary(bytes);
        ExpectInvalid(VcpuStateFromJson(mutated), "`" + key + "`", key + " resized");
      }
    }
  }

  Json unknown = valid;
  unknown["nested_state"] = 1;
  ExpectInvalid(VcpuStateFromJson(unknown), "`nested_state`", "unknown field");

  for (size_t size : {size_t{4092}, size_t{4098}, kMaxSavedXsaveBytes + 4}) {
    Json mutated = valid;
    mutated["xsave"] = Json::binary(std::vector<uint8_t>(size));
    ExpectInvalid(VcpuStateFromJson(mutated), "`xsave`", "xsave of " + std::to_string(size));
  }

  VcpuState many_xcrs = PatternVcpuState();
  many_xcrs.xcrs.nr_xcrs = KVM_MAX_XCRS + 1;
  ExpectInvalid(VcpuStateFromJson(ToJson(many_xcrs)), "`xcrs`", "17 xcrs");

  VcpuState too_many = PatternVcpuState();
  too_many.cpuid.resize(kMaxSavedCpuidEntries + 1);
  ExpectInvalid(VcpuStateFromJson(ToJson(too_many)), "`cpuid`", "257 cpuid entries");
  too_many = PatternVcpuState();
  too_many.msrs.resize(kMaxSavedMsrs + 1);
  ExpectInvalid(VcpuStateFromJson(ToJson(too_many)), "`msrs`", "1025 msrs");

  struct Case {
    const char* array;
    const char* key;
    Json value;  // null: erase the key
    const char* needle;
  };
  const Case entry_cases[] = {
      {"cpuid", "eax", Json(), "cpuid[0]: missing field `eax`"},
      {"cpuid", "eax", Json(uint64_t{1} << 32), "cpuid[0]: field `eax`"},
      {"cpuid", "eax", Json(-1), "cpuid[0]: field `eax`"},
      {"cpuid", "eax", Json("0"), "cpuid[0]: field `eax`"},
      {"cpuid", "padding", Json(0), "cpuid[0]: unknown field `padding`"},
      {"msrs", "index", Json(uint64_t{1} << 32), "msrs[0]: field `index`"},
      {"msrs", "data", Json(-1), "msrs[0]: field `data`"},
      {"msrs", "data", Json(0.5), "msrs[0]: field `data`"},
      {"msrs", "data", Json(), "msrs[0]: missing field `data`"},
  };
  for (const Case& c : entry_cases) {
    Json mutated = valid;
    Json& entry = mutated[c.array][0];
    if (c.value.is_null()) {
      entry.erase(c.key);
    } else {
      entry[c.key] = c.value;
    }
    ExpectInvalid(VcpuStateFromJson(mutated), c.needle, c.needle);
  }
  Json not_object = valid;
  not_object["msrs"][1] = 7;
  ExpectInvalid(VcpuStateFromJson(not_object), "msrs[1]: must be a JSON object", "msr 7");

  Json big_khz = valid;
  big_khz["tsc_khz"] = uint64_t{1} << 32;
  ExpectInvalid(VcpuStateFromJson(big_khz), "`tsc_khz`", "tsc_khz 2^32");
}

TEST(VmStateJsonTest, RefusesHostileVmState) {
  const Json valid = ToJson(PatternVmState());
  ExpectInvalid(VmStateFromJson(Json(3)), "JSON object", "number");
  for (const auto& [key, value] : valid.items()) {
    Json missing = valid;
    missing.erase(key);
    ExpectInvalid(VmStateFromJson(missing), "`" + key + "`", "missing " + key);
    for (const Json& wrong : WrongValues()) {
      Json mutated = valid;
      mutated[key] = wrong;
      ExpectInvalid(VmStateFromJson(mutated), "`" + key + "`", key + " = " + wrong.dump());
    }
    std::vector<uint8_t> longer = value.get_binary();
    longer.push_back(0);
    Json mutated = valid;
    mutated[key] = Json::binary(longer);
    ExpectInvalid(VmStateFromJson(mutated), "`" + key + "`", key + " one byte long");
  }
  VmState swapped = PatternVmState();
  std::swap(swapped.pic_master, swapped.ioapic);
  ExpectInvalid(VmStateFromJson(ToJson(swapped)), "`pic_master` holds irqchip 2", "swapped");
}

TEST(CpuIdentityTest, JsonRoundTripAndHostileInput) {
  CpuIdentity identity{"AuthenticAMD", 25, 1, 1};
  auto parsed = CpuIdentityFromJson(ThroughCbor(ToJson(identity)));
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->vendor, "AuthenticAMD");
  EXPECT_EQ(parsed->family, 25u);
  EXPECT_EQ(parsed->model, 1u);
  EXPECT_EQ(parsed->stepping, 1u);

  const Json valid = ToJson(identity);
  for (const auto& [key, value] : valid.items()) {
    Json missing = valid;
    missing.erase(key);
    ExpectInvalid(CpuIdentityFromJson(missing), "`" + key + "`", "missing " + key);
    for (const Json& wrong : WrongValues()) {
      if (value.is_string() && wrong.is_string()) continue;  // "text" is a vendor; see below
      Json mutated = valid;
      mutated[key] = wrong;
      ExpectInvalid(CpuIdentityFromJson(mutated), "`" + key + "`", key + " = " + wrong.dump());
    }
  }
  for (const char* vendor : {"", "GenuineIntelX", "Genuine\nntel"}) {
    Json mutated = valid;
    mutated["vendor"] = vendor;
    ExpectInvalid(CpuIdentityFromJson(mutated), "`vendor`", vendor);
  }
  ExpectInvalid(CpuIdentityFromJson(Json::array()), "JSON object", "array");
}

TEST(CpuIdentityTest, CheckSameCpu) {
  CpuIdentity amd{"AuthenticAMD", 25, 1, 1};
  CpuIdentity intel{"GenuineIntel", 6, 85, 7};
  EXPECT_TRUE(CheckSameCpu(intel, intel).ok());
  Status different = CheckSameCpu(amd, intel);
  ASSERT_FALSE(different.ok());
  EXPECT_EQ(different.error().errno_value(), EINVAL);
  EXPECT_EQ(different.error().message(),
            "snapshot was taken on AuthenticAMD family 25 model 1 stepping 1; this host is "
            "GenuineIntel family 6 model 85 stepping 7");
  CpuIdentity other_stepping = intel;
  other_stepping.stepping = 4;
  EXPECT_FALSE(CheckSameCpu(other_stepping, intel).ok());
  CpuIdentity other_model = intel;
  other_model.model = 106;
  EXPECT_FALSE(CheckSameCpu(other_model, intel).ok());
}

TEST(CpuIdentityTest, HostIdentity) {
  CpuIdentity host = HostCpuIdentity();
  EXPECT_EQ(host.vendor.size(), 12u);
  EXPECT_GT(host.family, 0u);
  EXPECT_TRUE(CpuIdentityFromJson(ToJson(host)).ok());
  EXPECT_TRUE(CheckSameCpu(host, HostCpuIdentity()).ok());
}

// Sets up vCPU 0 of `t` as Tern does for booting: CPUID, boot registers, FPU, MSRs, LAPIC.
kvm::CpuidEntries SetUpLikeBoot(const kvm::TestVm& t) {
  auto supported = t.kvm.GetSupportedCpuid();
  EXPECT_TRUE(supported.ok());
  if (!supported.ok()) return {};
  kvm::CpuidEntries cpuid = BuildCpuid(*supported, 0, 1, CpuidOptions{});
  EXPECT_TRUE(t.vcpu.SetCpuid2(cpuid).ok());
  EXPECT_TRUE(t.vcpu.SetRegs(BootRegs(0x1000000)).ok());
  auto sregs = t.vcpu.GetSregs();
  EXPECT_TRUE(sregs.ok());
  if (sregs.ok()) {
    EXPECT_TRUE(t.vcpu.SetSregs(BootSregs(*sregs)).ok());
  }
  Status common = SetupVcpuCommon(t.vcpu);
  EXPECT_TRUE(common.ok()) << common.error().ToString();
  return cpuid;
}

TEST(VmStateKvmTest, SaveRestoreSaveGivesTheSameVcpuState) {
  std::optional<kvm::TestVm> a = kvm::MakeTestVm();
  std::optional<kvm::TestVm> b = kvm::MakeTestVm();
  if (!a || !b) GTEST_SKIP() << "no usable /dev/kvm";
  kvm::CpuidEntries cpuid = SetUpLikeBoot(*a);
  ASSERT_FALSE(cpuid.empty());
  kvm_debugregs debugregs{};
  debugregs.db[1] = 0x2000;
  debugregs.dr6 = 0xffff0ff0;
  debugregs.dr7 = 0x400;
  ASSERT_TRUE(a->vcpu.SetDebugRegs(debugregs).ok());

  auto saved = SaveVcpuState(a->kvm, a->vcpu, cpuid);
  TERN_SKIP_IF_UNSUPPORTED(saved);
  ASSERT_TRUE(saved.ok()) << saved.error().ToString();
  EXPECT_FALSE(saved->msrs.empty());
  EXPECT_GT(saved->tsc_khz, 0u);

  // Through the snapshot's JSON, into a fresh VM.
  auto parsed = VcpuStateFromJson(ThroughCbor(ToJson(*saved)));
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  Status restored = RestoreVcpuState(b->vcpu, *parsed);
  ASSERT_TRUE(restored.ok()) << restored.error().ToString();

  auto again = SaveVcpuState(b->kvm, b->vcpu, cpuid);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_TRUE(SameBytes(saved->regs, again->regs));
  EXPECT_TRUE(SameBytes(saved->sregs, again->sregs));
  EXPECT_TRUE(SameBytes(saved->lapic, again->lapic));
  EXPECT_TRUE(SameBytes(saved->mp_state, again->mp_state));
  EXPECT_TRUE(SameBytes(saved->xcrs, again->xcrs));
  EXPECT_TRUE(SameBytes(saved->debugregs, again->debugregs));
  EXPECT_TRUE(SameBytes(saved->vcpu_events, again->vcpu_events));
  EXPECT_EQ(saved->xsave, again->xsave);
  EXPECT_EQ(saved->tsc_khz, again->tsc_khz);
  EXPECT_EQ(b->vcpu.GetCpuid2()->size(), cpuid.size());
  ASSERT_EQ(saved->msrs.size(), again->msrs.size());
  for (size_t i = 0; i < saved->msrs.size(); ++i) {
    EXPECT_EQ(saved->msrs[i].index, again->msrs[i].index);
    if (saved->msrs[i].index == 0x10) {  // IA32_TSC went on counting
      EXPECT_GE(again->msrs[i].data, saved->msrs[i].data);
    } else {
      EXPECT_EQ(saved->msrs[i].data, again->msrs[i].data) << std::hex << saved->msrs[i].index;
    }
  }
}

TEST(VmStateKvmTest, RestoreSetsTheSavedTscFrequency) {
  std::optional<kvm::TestVm> a = kvm::MakeTestVm();
  if (!a) GTEST_SKIP() << "no usable /dev/kvm";
  kvm::CpuidEntries cpuid = SetUpLikeBoot(*a);
  auto saved = SaveVcpuState(a->kvm, a->vcpu, cpuid);
  TERN_SKIP_IF_UNSUPPORTED(saved);
  ASSERT_TRUE(saved.ok()) << saved.error().ToString();
  if (saved->tsc_khz == 0) GTEST_SKIP() << "KVM does not know this host's TSC frequency";
  auto scaling = a->kvm.CheckExtension(KVM_CAP_TSC_CONTROL);
  ASSERT_TRUE(scaling.ok());

  // Faster than this host: KVM scales, or without TSC scaling catches up.
  VcpuState faster = *saved;
  faster.tsc_khz = saved->tsc_khz + saved->tsc_khz / 10;
  std::optional<kvm::TestVm> b = kvm::MakeTestVm();
  ASSERT_TRUE(b);
  Status restored = RestoreVcpuState(b->vcpu, faster);
  ASSERT_TRUE(restored.ok()) << restored.error().ToString();
  EXPECT_EQ(*b->vcpu.GetTscKhz(), faster.tsc_khz);

  // Slower: only with TSC scaling; else the error names the step.
  VcpuState slower = *saved;
  slower.tsc_khz = saved->tsc_khz / 2;
  std::optional<kvm::TestVm> c = kvm::MakeTestVm();
  ASSERT_TRUE(c);
  restored = RestoreVcpuState(c->vcpu, slower);
  if (*scaling > 0) {
    ASSERT_TRUE(restored.ok()) << restored.error().ToString();
    EXPECT_EQ(*c->vcpu.GetTscKhz(), slower.tsc_khz);
  } else {
    ASSERT_FALSE(restored.ok());
    EXPECT_NE(restored.error().message().find("restoring vCPU 0: TSC of"), std::string::npos)
        << restored.error().message();
  }

  // Within 250 ppm: left alone.
  VcpuState close = *saved;
  close.tsc_khz = saved->tsc_khz + saved->tsc_khz / 10'000;
  std::optional<kvm::TestVm> d = kvm::MakeTestVm();
  ASSERT_TRUE(d);
  ASSERT_TRUE(RestoreVcpuState(d->vcpu, close).ok());
  EXPECT_EQ(*d->vcpu.GetTscKhz(), saved->tsc_khz);
}

TEST(VmStateKvmTest, RestoreErrorsNameTheStep) {
  std::optional<kvm::TestVm> a = kvm::MakeTestVm();
  if (!a) GTEST_SKIP() << "no usable /dev/kvm";
  kvm::CpuidEntries cpuid = SetUpLikeBoot(*a);
  auto saved = SaveVcpuState(a->kvm, a->vcpu, cpuid);
  TERN_SKIP_IF_UNSUPPORTED(saved);
  ASSERT_TRUE(saved.ok()) << saved.error().ToString();

  VcpuState bad_xcr0 = *saved;
  bad_xcr0.xcrs.xcrs[0].value = 0;  // XCR0 without x87 state is invalid
  std::optional<kvm::TestVm> b = kvm::MakeTestVm();
  ASSERT_TRUE(b);
  Status restored = RestoreVcpuState(b->vcpu, bad_xcr0);
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.error().message(), "restoring vCPU 0: KVM_SET_XCRS");

  std::ifstream ignore_msrs("/sys/module/kvm/parameters/ignore_msrs");
  std::string ignoring;
  ignore_msrs >> ignoring;
  if (ignoring == "Y") return;  // KVM takes any MSR
  VcpuState unknown_msr = *saved;
  unknown_msr.msrs.push_back({0xdeadbeef, 0, 1});
  std::optional<kvm::TestVm> c = kvm::MakeTestVm();
  ASSERT_TRUE(c);
  restored = RestoreVcpuState(c->vcpu, unknown_msr);
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.error().message(), "restoring vCPU 0: KVM_SET_MSRS: MSR 0xdeadbeef refused");
}

TEST(VmStateKvmTest, SaveRestoreSaveGivesTheSameVmState) {
  std::optional<kvm::TestVm> a = kvm::MakeTestVm();
  std::optional<kvm::TestVm> b = kvm::MakeTestVm();
  if (!a || !b) GTEST_SKIP() << "no usable /dev/kvm";
  // Away from the defaults: a masked PIC line, an IOAPIC route, a PIT count.
  auto pic = a->vm.GetIrqchip(KVM_IRQCHIP_PIC_MASTER);
  TERN_SKIP_IF_UNSUPPORTED(pic);
  ASSERT_TRUE(pic.ok()) << pic.error().ToString();
  pic->chip.pic.imr = 0xfb;
  ASSERT_TRUE(a->vm.SetIrqchip(*pic).ok());
  auto ioapic = a->vm.GetIrqchip(KVM_IRQCHIP_IOAPIC);
  ASSERT_TRUE(ioapic.ok());
  ioapic->chip.ioapic.redirtbl[4].bits = 0x30;  // vector 0x30, fixed, unmasked
  ASSERT_TRUE(a->vm.SetIrqchip(*ioapic).ok());
  auto pit = a->vm.GetPit2();
  ASSERT_TRUE(pit.ok());
  pit->channels[2].count = 0x1234;
  ASSERT_TRUE(a->vm.SetPit2(*pit).ok());

  auto saved = SaveVmState(a->vm);
  TERN_SKIP_IF_UNSUPPORTED(saved);
  ASSERT_TRUE(saved.ok()) << saved.error().ToString();
  auto parsed = VmStateFromJson(ThroughCbor(ToJson(*saved)));
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  Status restored = RestoreVmState(b->vm, *parsed);
  ASSERT_TRUE(restored.ok()) << restored.error().ToString();

  auto again = SaveVmState(b->vm);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_TRUE(SameBytes(saved->pic_master, again->pic_master));
  EXPECT_TRUE(SameBytes(saved->pic_slave, again->pic_slave));
  EXPECT_TRUE(SameBytes(saved->ioapic, again->ioapic));
  EXPECT_EQ(again->pic_master.chip.pic.imr, 0xfb);
  EXPECT_EQ(again->ioapic.chip.ioapic.redirtbl[4].bits, 0x30u);
  // KVM_SET_PIT2 reloads each channel's count now: all but the load time carries over.
  for (int i = 0; i < 3; ++i) {
    kvm_pit_channel_state expected = saved->pit.channels[i];
    expected.count_load_time = again->pit.channels[i].count_load_time;
    EXPECT_TRUE(SameBytes(expected, again->pit.channels[i])) << "PIT channel " << i;
  }
  EXPECT_EQ(again->pit.channels[2].count, 0x1234u);
  EXPECT_EQ(saved->pit.flags, again->pit.flags);
  // kvmclock resumes from the saved value (a fresh VM's starts near 0).
  EXPECT_GE(again->clock.clock, saved->clock.clock);
  EXPECT_LT(again->clock.clock, saved->clock.clock + 60'000'000'000);
}

}  // namespace
}  // namespace tern::x86_64
