// Saving and restoring KVM's VM and vCPU state (Documentation/virt/kvm/api.rst; the order
// follows Firecracker's vstate and QEMU's kvm_arch_put_registers), and its strict JSON form.
#include "arch/x86_64/vm_state.h"

#include <cpuid.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <type_traits>

namespace tern::x86_64 {
namespace {

using Json = nlohmann::json;

constexpr uint32_t kMsrIa32TscDeadline = 0x6e0;

// A TSC frequency this close to the vCPU's needs no KVM_SET_TSC_KHZ: hosts calibrate the same
// CPU model's TSC a little differently at boot (QEMU and Firecracker allow the same 250 ppm).
constexpr uint64_t kTscTolerancePpm = 250;

// `result`, or its error with `context` in front.
template <typename T>
Result<T> In(const std::string& context, Result<T> result) {
  if (!result.ok()) return result.error().WithContext(context);
  return result;
}

// Whether a vCPU running at `current_khz` must be set to `saved_khz`.
bool TscScalingNeeded(uint32_t current_khz, uint32_t saved_khz) {
  uint64_t difference = current_khz > saved_khz ? current_khz - saved_khz : saved_khz - current_khz;
  return difference * 1'000'000 > uint64_t{saved_khz} * kTscTolerancePpm;
}

// Reads the MSRs `indices` names, kMaxMsrsPerIoctl at a time. KVM_GET_MSRS stops at the first
// MSR it refuses: that one is left out and reading resumes after it.
Result<std::vector<kvm_msr_entry>> ReadMsrs(const kvm::Vcpu& vcpu,
                                            std::span<const uint32_t> indices) {
  std::vector<kvm_msr_entry> msrs;
  msrs.reserve(indices.size());
  size_t next = 0;
  while (next < indices.size()) {
    size_t count = std::min(kvm::kMaxMsrsPerIoctl, indices.size() - next);
    TERN_ASSIGN_OR_RETURN(std::vector<kvm_msr_entry> read,
                          vcpu.GetMsrs(indices.subspan(next, count)));
    msrs.insert(msrs.end(), read.begin(), read.end());
    next += read.size();
    if (read.size() < count) ++next;  // KVM refused indices[next]
  }
  return msrs;
}

// Writes `msrs`, kMaxMsrsPerIoctl at a time, IA32_TSC_DEADLINE last: KVM arms the deadline timer
// against the guest TSC, so that must be restored first (Firecracker's DEFERRED_MSRS).
Status WriteMsrs(const kvm::Vcpu& vcpu, std::vector<kvm_msr_entry> msrs) {
  std::stable_partition(msrs.begin(), msrs.end(),
                        [](const kvm_msr_entry& msr) { return msr.index != kMsrIa32TscDeadline; });
  std::span<const kvm_msr_entry> rest(msrs);
  while (!rest.empty()) {
    size_t count = std::min(kvm::kMaxMsrsPerIoctl, rest.size());
    TERN_RETURN_IF_ERROR(vcpu.SetMsrs(rest.first(count)));
    rest = rest.subspan(count);
  }
  return Ok();
}

// A binary JSON value of `value`'s bytes.
template <typename T>
Json Binary(const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  return Json::binary(std::vector<uint8_t>(bytes, bytes + sizeof(T)));
}

bool IsUnsigned(const Json& value) {
  return value.is_number_unsigned() || (value.is_number_integer() && value.get<int64_t>() >= 0);
}

// Strict reading of one JSON object: refuses non-objects and keys outside `keys`; every read
// key is required and typed. Errors are EINVAL and name `what` and the key.
class Reader {
 public:
  static Result<Reader> Of(const Json& json, std::string what,
                           std::initializer_list<const char*> keys) {
    if (!json.is_object()) return Error(what + ": must be a JSON object", EINVAL);
    for (const auto& [key, value] : json.items()) {
      if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; })) {
        return Error(what + ": unknown field `" + key + "`", EINVAL);
      }
    }
    return Reader(json, std::move(what));
  }

  Result<const Json*> Field(const char* key) const {
    auto it = json_->find(key);
    if (it == json_->end()) return Error(what_ + ": missing field `" + key + "`", EINVAL);
    return &*it;
  }

  // A binary of exactly sizeof(T) bytes, copied into `out`.
  template <typename T>
  Status Struct(const char* key, T& out) const {
    static_assert(std::is_trivially_copyable_v<T>);
    TERN_ASSIGN_OR_RETURN(const Json* value, Field(key));
    if (!value->is_binary() || value->get_binary().size() != sizeof(T)) {
      return Invalid(key, "binary of " + std::to_string(sizeof(T)) + " bytes");
    }
    std::memcpy(&out, value->get_binary().data(), sizeof(T));
    return Ok();
  }

  // A binary of min..max bytes, a multiple of `multiple`.
  Status Bytes(const char* key, size_t min, size_t max, size_t multiple,
               std::vector<uint8_t>& out) const {
    TERN_ASSIGN_OR_RETURN(const Json* value, Field(key));
    if (!value->is_binary() || value->get_binary().size() < min ||
        value->get_binary().size() > max || value->get_binary().size() % multiple != 0) {
      return Invalid(key, "binary of " + std::to_string(min) + ".." + std::to_string(max) +
                              " bytes, a multiple of " + std::to_string(multiple));
    }
    const auto& bytes = value->get_binary();
    out.assign(bytes.begin(), bytes.end());
    return Ok();
  }

  Status Unsigned(const char* key, uint64_t max, uint64_t& out) const {
    TERN_ASSIGN_OR_RETURN(const Json* value, Field(key));
    if (!IsUnsigned(*value) || value->get<uint64_t>() > max) {
      return Invalid(key, "an integer in 0.." + std::to_string(max));
    }
    out = value->get<uint64_t>();
    return Ok();
  }

  Status Uint32(const char* key, uint32_t& out) const {
    uint64_t wide = 0;
    TERN_RETURN_IF_ERROR(Unsigned(key, std::numeric_limits<uint32_t>::max(), wide));
    out = static_cast<uint32_t>(wide);
    return Ok();
  }

  Status String(const char* key, size_t max, std::string& out) const {
    TERN_ASSIGN_OR_RETURN(const Json* value, Field(key));
    const auto printable = [](char c) { return c >= 0x20 && c < 0x7f; };
    if (!value->is_string() || value->get_ref<const std::string&>().empty() ||
        value->get_ref<const std::string&>().size() > max ||
        !std::all_of(value->get_ref<const std::string&>().begin(),
                     value->get_ref<const std::string&>().end(), printable)) {
      return Invalid(key, "a string of 1.." + std::to_string(max) + " printable characters");
    }
    out = value->get<std::string>();
    return Ok();
  }

  // An array of at most `max` elements.
  Result<const Json*> Array(const char* key, size_t max) const {
    TERN_ASSIGN_OR_RETURN(const Json* value, Field(key));
    if (!value->is_array() || value->size() > max) {
      return Invalid(key, "an array of at most " + std::to_string(max) + " elements");
    }
    return value;
  }

  const std::string& what() const { return what_; }

 private:
  Reader(const Json& json, std::string what) : json_(&json), what_(std::move(what)) {}

  Error Invalid(const char* key, const std::string& expected) const {
    return Error(what_ + ": field `" + key + "` must be " + expected, EINVAL);
  }

  const Json* json_;
  std::string what_;
};

Json CpuidEntryToJson(const kvm_cpuid_entry2& entry) {
  return {{"function", entry.function},
          {"index", entry.index},
          {"flags", entry.flags},
          {"eax", entry.eax},
          {"ebx", entry.ebx},
          {"ecx", entry.ecx},
          {"edx", entry.edx}};
}

Result<kvm_cpuid_entry2> CpuidEntryFromJson(const Json& json, const std::string& what) {
  TERN_ASSIGN_OR_RETURN(
      Reader reader,
      Reader::Of(json, what, {"function", "index", "flags", "eax", "ebx", "ecx", "edx"}));
  kvm_cpuid_entry2 entry{};
  TERN_RETURN_IF_ERROR(reader.Uint32("function", entry.function));
  TERN_RETURN_IF_ERROR(reader.Uint32("index", entry.index));
  TERN_RETURN_IF_ERROR(reader.Uint32("flags", entry.flags));
  TERN_RETURN_IF_ERROR(reader.Uint32("eax", entry.eax));
  TERN_RETURN_IF_ERROR(reader.Uint32("ebx", entry.ebx));
  TERN_RETURN_IF_ERROR(reader.Uint32("ecx", entry.ecx));
  TERN_RETURN_IF_ERROR(reader.Uint32("edx", entry.edx));
  return entry;
}

Result<kvm_msr_entry> MsrFromJson(const Json& json, const std::string& what) {
  TERN_ASSIGN_OR_RETURN(Reader reader, Reader::Of(json, what, {"index", "data"}));
  kvm_msr_entry msr{};
  TERN_RETURN_IF_ERROR(reader.Uint32("index", msr.index));
  uint64_t data = 0;
  TERN_RETURN_IF_ERROR(reader.Unsigned("data", std::numeric_limits<uint64_t>::max(), data));
  msr.data = data;
  return msr;
}

Result<VcpuState> ParseVcpuState(const Json& json) {
  TERN_ASSIGN_OR_RETURN(Reader reader,
                        Reader::Of(json, "vCPU state",
                                   {"cpuid", "regs", "sregs", "xsave", "xcrs", "lapic", "mp_state",
                                    "vcpu_events", "debugregs", "msrs", "tsc_khz"}));
  VcpuState state;
  TERN_ASSIGN_OR_RETURN(const Json* cpuid, reader.Array("cpuid", kMaxSavedCpuidEntries));
  for (size_t i = 0; i < cpuid->size(); ++i) {
    TERN_ASSIGN_OR_RETURN(
        kvm_cpuid_entry2 entry,
        CpuidEntryFromJson((*cpuid)[i], reader.what() + ": cpuid[" + std::to_string(i) + "]"));
    state.cpuid.push_back(entry);
  }
  TERN_RETURN_IF_ERROR(reader.Struct("regs", state.regs));
  TERN_RETURN_IF_ERROR(reader.Struct("sregs", state.sregs));
  TERN_RETURN_IF_ERROR(
      reader.Bytes("xsave", sizeof(kvm_xsave), kMaxSavedXsaveBytes, sizeof(uint32_t), state.xsave));
  TERN_RETURN_IF_ERROR(reader.Struct("xcrs", state.xcrs));
  if (state.xcrs.nr_xcrs > KVM_MAX_XCRS) {
    return Error(reader.what() + ": field `xcrs` holds " + std::to_string(state.xcrs.nr_xcrs) +
                     " XCRs, more than " + std::to_string(KVM_MAX_XCRS),
                 EINVAL);
  }
  TERN_RETURN_IF_ERROR(reader.Struct("lapic", state.lapic));
  TERN_RETURN_IF_ERROR(reader.Struct("mp_state", state.mp_state));
  TERN_RETURN_IF_ERROR(reader.Struct("vcpu_events", state.vcpu_events));
  TERN_RETURN_IF_ERROR(reader.Struct("debugregs", state.debugregs));
  TERN_ASSIGN_OR_RETURN(const Json* msrs, reader.Array("msrs", kMaxSavedMsrs));
  for (size_t i = 0; i < msrs->size(); ++i) {
    TERN_ASSIGN_OR_RETURN(kvm_msr_entry msr, MsrFromJson((*msrs)[i], reader.what() + ": msrs[" +
                                                                         std::to_string(i) + "]"));
    state.msrs.push_back(msr);
  }
  TERN_RETURN_IF_ERROR(reader.Uint32("tsc_khz", state.tsc_khz));
  return state;
}

Status IrqchipFromJson(const Reader& reader, const char* key, uint32_t chip_id, kvm_irqchip& out) {
  TERN_RETURN_IF_ERROR(reader.Struct(key, out));
  if (out.chip_id != chip_id) {
    return Error(reader.what() + ": field `" + key + "` holds irqchip " +
                     std::to_string(out.chip_id) + ", not " + std::to_string(chip_id),
                 EINVAL);
  }
  return Ok();
}

Result<VmState> ParseVmState(const Json& json) {
  TERN_ASSIGN_OR_RETURN(
      Reader reader,
      Reader::Of(json, "VM state", {"pic_master", "pic_slave", "ioapic", "pit", "clock"}));
  VmState state;
  TERN_RETURN_IF_ERROR(
      IrqchipFromJson(reader, "pic_master", KVM_IRQCHIP_PIC_MASTER, state.pic_master));
  TERN_RETURN_IF_ERROR(
      IrqchipFromJson(reader, "pic_slave", KVM_IRQCHIP_PIC_SLAVE, state.pic_slave));
  TERN_RETURN_IF_ERROR(IrqchipFromJson(reader, "ioapic", KVM_IRQCHIP_IOAPIC, state.ioapic));
  TERN_RETURN_IF_ERROR(reader.Struct("pit", state.pit));
  TERN_RETURN_IF_ERROR(reader.Struct("clock", state.clock));
  return state;
}

Result<CpuIdentity> ParseCpuIdentity(const Json& json) {
  TERN_ASSIGN_OR_RETURN(
      Reader reader, Reader::Of(json, "CPU identity", {"vendor", "family", "model", "stepping"}));
  CpuIdentity identity;
  TERN_RETURN_IF_ERROR(reader.String("vendor", 12, identity.vendor));
  TERN_RETURN_IF_ERROR(reader.Uint32("family", identity.family));
  TERN_RETURN_IF_ERROR(reader.Uint32("model", identity.model));
  TERN_RETURN_IF_ERROR(reader.Uint32("stepping", identity.stepping));
  return identity;
}

// Runs a parser, turning any exception (none is expected: every access is checked first) into
// an EINVAL error, so that hostile input can never throw out of the *FromJson functions.
template <typename T, typename Parse>
Result<T> NoThrow(const char* what, Parse parse) {
  try {
    return parse();
  } catch (const std::exception& e) {
    return Error(std::string(what) + ": " + e.what(), EINVAL);
  }
}

std::string Describe(const CpuIdentity& identity) {
  return identity.vendor + " family " + std::to_string(identity.family) + " model " +
         std::to_string(identity.model) + " stepping " + std::to_string(identity.stepping);
}

}  // namespace

Result<VcpuState> SaveVcpuState(const kvm::Kvm& kvm, const kvm::Vcpu& vcpu,
                                const kvm::CpuidEntries& cpuid) {
  const std::string context = "saving vCPU " + std::to_string(vcpu.id());
  VcpuState state;
  state.cpuid = cpuid;
  TERN_ASSIGN_OR_RETURN(int xsave2_size, In(context, kvm.CheckExtension(KVM_CAP_XSAVE2)));
  TERN_ASSIGN_OR_RETURN(std::vector<uint32_t> msr_indices, In(context, kvm.GetMsrIndexList()));
  // KVM_GET_MP_STATE first: it lets the LAPIC process pending INIT/SIPI, which changes the
  // state read after it.
  TERN_ASSIGN_OR_RETURN(state.mp_state, In(context, vcpu.GetMpState()));
  TERN_ASSIGN_OR_RETURN(state.regs, In(context, vcpu.GetRegs()));
  TERN_ASSIGN_OR_RETURN(state.sregs, In(context, vcpu.GetSregs()));
  TERN_ASSIGN_OR_RETURN(state.xsave,
                        In(context, vcpu.GetXsave(static_cast<size_t>(std::max(xsave2_size, 0)))));
  TERN_ASSIGN_OR_RETURN(state.xcrs, In(context, vcpu.GetXcrs()));
  TERN_ASSIGN_OR_RETURN(state.debugregs, In(context, vcpu.GetDebugRegs()));
  TERN_ASSIGN_OR_RETURN(state.lapic, In(context, vcpu.GetLapic()));
  TERN_ASSIGN_OR_RETURN(state.tsc_khz, In(context, vcpu.GetTscKhz()));
  TERN_ASSIGN_OR_RETURN(state.msrs, In(context, ReadMsrs(vcpu, msr_indices)));
  // Events last: the other reads may still change what is pending.
  TERN_ASSIGN_OR_RETURN(state.vcpu_events, In(context, vcpu.GetVcpuEvents()));
  return state;
}

Status RestoreVcpuState(const kvm::Vcpu& vcpu, const VcpuState& state) {
  const std::string context = "restoring vCPU " + std::to_string(vcpu.id());
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetCpuid2(state.cpuid)));
  if (state.tsc_khz != 0) {
    TERN_ASSIGN_OR_RETURN(uint32_t current_khz, In(context, vcpu.GetTscKhz()));
    if (current_khz != 0 && TscScalingNeeded(current_khz, state.tsc_khz)) {
      TERN_RETURN_IF_ERROR(In(context + ": TSC of " + std::to_string(state.tsc_khz) +
                                  " kHz (this host's: " + std::to_string(current_khz) + " kHz)",
                              vcpu.SetTscKhz(state.tsc_khz)));
    }
  }
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetMpState(state.mp_state)));
  // KVM_SET_REGS and KVM_SET_SREGS drop pending exceptions and interrupts: before the events.
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetRegs(state.regs)));
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetSregs(state.sregs)));
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetXsave(state.xsave)));
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetXcrs(state.xcrs)));
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetDebugRegs(state.debugregs)));
  // After KVM_SET_SREGS, which sets the APIC base (and so xAPIC or x2APIC mode).
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetLapic(state.lapic)));
  // After the LAPIC: KVM arms the TSC-deadline timer only in a configured LAPIC.
  TERN_RETURN_IF_ERROR(In(context, WriteMsrs(vcpu, state.msrs)));
  TERN_RETURN_IF_ERROR(In(context, vcpu.SetVcpuEvents(state.vcpu_events)));
  return Ok();
}

Result<VmState> SaveVmState(const kvm::Vm& vm) {
  const std::string context = "saving VM state";
  VmState state;
  TERN_ASSIGN_OR_RETURN(state.pic_master, In(context, vm.GetIrqchip(KVM_IRQCHIP_PIC_MASTER)));
  TERN_ASSIGN_OR_RETURN(state.pic_slave, In(context, vm.GetIrqchip(KVM_IRQCHIP_PIC_SLAVE)));
  TERN_ASSIGN_OR_RETURN(state.ioapic, In(context, vm.GetIrqchip(KVM_IRQCHIP_IOAPIC)));
  TERN_ASSIGN_OR_RETURN(state.pit, In(context, vm.GetPit2()));
  TERN_ASSIGN_OR_RETURN(state.clock, In(context, vm.GetClock()));
  return state;
}

Status RestoreVmState(const kvm::Vm& vm, const VmState& state) {
  const std::string context = "restoring VM state";
  TERN_RETURN_IF_ERROR(In(context + " (PIC master)", vm.SetIrqchip(state.pic_master)));
  TERN_RETURN_IF_ERROR(In(context + " (PIC slave)", vm.SetIrqchip(state.pic_slave)));
  TERN_RETURN_IF_ERROR(In(context + " (IOAPIC)", vm.SetIrqchip(state.ioapic)));
  TERN_RETURN_IF_ERROR(In(context, vm.SetPit2(state.pit)));
  kvm_clock_data clock{};
  clock.clock = state.clock.clock;
  return In(context, vm.SetClock(clock));
}

nlohmann::json ToJson(const VcpuState& state) {
  Json cpuid = Json::array();
  for (const kvm_cpuid_entry2& entry : state.cpuid) cpuid.push_back(CpuidEntryToJson(entry));
  Json msrs = Json::array();
  for (const kvm_msr_entry& msr : state.msrs) {
    msrs.push_back({{"index", msr.index}, {"data", msr.data}});
  }
  return {{"cpuid", std::move(cpuid)},
          {"regs", Binary(state.regs)},
          {"sregs", Binary(state.sregs)},
          {"xsave", Json::binary(state.xsave)},
          {"xcrs", Binary(state.xcrs)},
          {"lapic", Binary(state.lapic)},
          {"mp_state", Binary(state.mp_state)},
          {"vcpu_events", Binary(state.vcpu_events)},
          {"debugregs", Binary(state.debugregs)},
          {"msrs", std::move(msrs)},
          {"tsc_khz", state.tsc_khz}};
}

Result<VcpuState> VcpuStateFromJson(const nlohmann::json& json) {
  return NoThrow<VcpuState>("vCPU state", [&] { return ParseVcpuState(json); });
}

nlohmann::json ToJson(const VmState& state) {
  return {{"pic_master", Binary(state.pic_master)},
          {"pic_slave", Binary(state.pic_slave)},
          {"ioapic", Binary(state.ioapic)},
          {"pit", Binary(state.pit)},
          {"clock", Binary(state.clock)}};
}

Result<VmState> VmStateFromJson(const nlohmann::json& json) {
  return NoThrow<VmState>("VM state", [&] { return ParseVmState(json); });
}

CpuIdentity HostCpuIdentity() {
  CpuIdentity identity;
  unsigned int eax, ebx, ecx, edx;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx)) {
    char vendor[12];  // EBX, EDX, ECX: "Genu" "ineI" "ntel"
    std::memcpy(vendor, &ebx, 4);
    std::memcpy(vendor + 4, &edx, 4);
    std::memcpy(vendor + 8, &ecx, 4);
    identity.vendor.assign(vendor, sizeof(vendor));
  }
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
    // CPUID.1:EAX: stepping [3:0], model [7:4], family [11:8], extended model [19:16],
    // extended family [27:20] (Intel SDM vol. 2A, CPUID; AMD APM vol. 3, E.4.1).
    uint32_t family = (eax >> 8) & 0xf;
    uint32_t model = (eax >> 4) & 0xf;
    identity.family = family == 0xf ? family + ((eax >> 20) & 0xff) : family;
    identity.model = family == 0x6 || family == 0xf ? (((eax >> 16) & 0xf) << 4) | model : model;
    identity.stepping = eax & 0xf;
  }
  return identity;
}

nlohmann::json ToJson(const CpuIdentity& identity) {
  return {{"vendor", identity.vendor},
          {"family", identity.family},
          {"model", identity.model},
          {"stepping", identity.stepping}};
}

Result<CpuIdentity> CpuIdentityFromJson(const nlohmann::json& json) {
  return NoThrow<CpuIdentity>("CPU identity", [&] { return ParseCpuIdentity(json); });
}

Status CheckSameCpu(const CpuIdentity& snapshot, const CpuIdentity& host) {
  if (snapshot.vendor == host.vendor && snapshot.family == host.family &&
      snapshot.model == host.model && snapshot.stepping == host.stepping) {
    return Ok();
  }
  return Error("snapshot was taken on " + Describe(snapshot) + "; this host is " + Describe(host),
               EINVAL);
}

}  // namespace tern::x86_64
