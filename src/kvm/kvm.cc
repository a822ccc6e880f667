// KVM system, VM and vCPU ioctls.
#include "kvm/kvm.h"

#include <cpuid.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <memory>

namespace tern::kvm {
namespace {

// ioctl() returning its non-negative result, or an Error naming the ioctl.
template <typename Arg>
Result<int> Ioctl(int fd, unsigned long request, const char* name, Arg arg) {
  int ret;
  do {
    ret = ::ioctl(fd, request, arg);
  } while (ret < 0 && errno == EINTR && request != KVM_RUN);
  if (ret < 0) return Error::FromErrno(name);
  return ret;
}

template <typename Arg>
Status IoctlStatus(int fd, unsigned long request, const char* name, Arg arg) {
  auto ret = Ioctl(fd, request, name, arg);
  if (!ret.ok()) return ret.error();
  return Ok();
}

// Capabilities Tern's x86-64 VMs rely on, with their names for the error message.
struct Capability {
  unsigned int cap;
  const char* name;
};
constexpr Capability kRequiredCaps[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
    {KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
};

constexpr int kMaxCpuidEntries = 256;
constexpr unsigned int kCpuidVmx = 1u << 5;  // CPUID.1:ECX.VMX (Intel SDM vol. 2A, CPUID)
constexpr unsigned int kCpuidSvm = 1u << 2;  // CPUID.80000001h:ECX.SVM (AMD APM vol. 3)

// "0x1a0": MSR indices read best in hex, as the SDM lists them.
std::string Hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%x", value);
  return text;
}

// The largest XSAVE area this CPU can need for the features XCR0 can enable, in the standard
// layout KVM's kvm_xsave uses: CPUID.(EAX=0DH,ECX=0):ECX (Intel SDM vol. 1 §13.2); 0 without it.
size_t HostXsaveSize() {
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid_count(0xd, 0, &eax, &ebx, &ecx, &edx)) return 0;
  return ecx;
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

Result<Kvm> Kvm::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Error::FromErrno("open " + path);
  return Kvm(Fd(fd));
}

Result<int> Kvm::GetApiVersion() const {
  return Ioctl(fd(), KVM_GET_API_VERSION, "KVM_GET_API_VERSION", 0);
}

Result<int> Kvm::CheckExtension(unsigned int cap) const {
  return Ioctl(fd(), KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", cap);
}

Result<int> Kvm::GetVcpuMmapSize() const {
  return Ioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", 0);
}

Result<CpuidEntries> Kvm::GetSupportedCpuid() const {
  // kvm_cpuid2 ends in a flexible array: allocate room for kMaxCpuidEntries after the header.
  std::vector<uint8_t> buffer(sizeof(kvm_cpuid2) + kMaxCpuidEntries * sizeof(kvm_cpuid_entry2));
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buffer.data());
  cpuid->nent = kMaxCpuidEntries;
  TERN_RETURN_IF_ERROR(
      IoctlStatus(fd(), KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", cpuid));
  return CpuidEntries(cpuid->entries, cpuid->entries + cpuid->nent);
}

Result<std::vector<uint32_t>> Kvm::GetMsrIndexList() const {
  // kvm_msr_list ends in a flexible array: KVM stores the count in nmsrs and fails with E2BIG
  // when the array is too small for it.
  kvm_msr_list probe{};
  auto ret = Ioctl(fd(), KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST", &probe);
  if (ret.ok()) return std::vector<uint32_t>();  // no MSRs at all
  if (ret.error().errno_value() != E2BIG) return ret.error();
  std::vector<uint32_t> buffer(1 + probe.nmsrs);
  auto* list = reinterpret_cast<kvm_msr_list*>(buffer.data());
  list->nmsrs = probe.nmsrs;
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST", list));
  uint32_t count = std::min(list->nmsrs, probe.nmsrs);
  return std::vector<uint32_t>(buffer.begin() + 1, buffer.begin() + 1 + count);
}

Result<Vm> Kvm::CreateVm() const {
  TERN_ASSIGN_OR_RETURN(int vm_fd, Ioctl(fd(), KVM_CREATE_VM, "KVM_CREATE_VM", 0));
  return Vm(Fd(vm_fd));
}

Status Kvm::CheckRequirements() const {
  TERN_ASSIGN_OR_RETURN(int version, GetApiVersion());
  if (version != KVM_API_VERSION) {
    return Error("KVM API version " + std::to_string(version) + " is not the supported " +
                 std::to_string(KVM_API_VERSION));
  }
  for (const Capability& capability : kRequiredCaps) {
    TERN_ASSIGN_OR_RETURN(int present, CheckExtension(capability.cap));
    if (present <= 0) return Error(std::string("KVM lacks required ") + capability.name);
  }
  return Ok();
}

Status Vm::SetUserMemoryRegion(uint32_t slot, uint64_t guest_phys_addr, uint64_t memory_size,
                               void* userspace_addr, uint32_t flags) const {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = guest_phys_addr;
  region.memory_size = memory_size;
  region.userspace_addr = reinterpret_cast<uint64_t>(userspace_addr);
  return IoctlStatus(fd(), KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region);
}

Status Vm::SetTssAddr(uint64_t address) const {
  return IoctlStatus(fd(), KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", address);
}

Status Vm::SetIdentityMapAddr(uint64_t address) const {
  return IoctlStatus(fd(), KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &address);
}

Status Vm::CreateIrqchip() const {
  return IoctlStatus(fd(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", 0);
}

Status Vm::CreatePit2() const {
  kvm_pit_config config{};
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  return IoctlStatus(fd(), KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &config);
}

Status Vm::Irqfd(const EventFd& event, uint32_t gsi) const {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event.fd());
  irqfd.gsi = gsi;
  return IoctlStatus(fd(), KVM_IRQFD, "KVM_IRQFD", &irqfd);
}

Status Vm::IrqfdDeassign(const EventFd& event, uint32_t gsi) const {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(event.fd());
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  return IoctlStatus(fd(), KVM_IRQFD, "KVM_IRQFD (deassign)", &irqfd);
}

Status Vm::SetGsiRouting(std::span<const kvm_irq_routing_entry> entries) const {
  // kvm_irq_routing ends in a flexible array of entries.
  std::vector<uint8_t> buffer(sizeof(kvm_irq_routing) + entries.size_bytes());
  auto* routing = reinterpret_cast<kvm_irq_routing*>(buffer.data());
  routing->nr = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(), routing->entries);
  return IoctlStatus(fd(), KVM_SET_GSI_ROUTING, "KVM_SET_GSI_ROUTING", routing);
}

Status Vm::Ioeventfd(const EventFd& event, uint64_t address, uint32_t length, bool deassign) const {
  kvm_ioeventfd ioeventfd{};
  ioeventfd.addr = address;
  ioeventfd.len = length;
  ioeventfd.fd = event.fd();
  ioeventfd.flags = deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0;
  return IoctlStatus(fd(), KVM_IOEVENTFD, deassign ? "KVM_IOEVENTFD (deassign)" : "KVM_IOEVENTFD",
                     &ioeventfd);
}

Result<Vcpu> Vm::CreateVcpu(uint32_t id, int mmap_size) const {
  TERN_ASSIGN_OR_RETURN(int vcpu_fd, Ioctl(fd(), KVM_CREATE_VCPU, "KVM_CREATE_VCPU", id));
  Fd owned(vcpu_fd);
  auto run = Mapping::Map(mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
  if (!run.ok()) return run.error().WithContext("mmap kvm_run");
  return Vcpu(id, std::move(owned), std::move(run).value());
}

Result<kvm_irqchip> Vm::GetIrqchip(uint32_t chip_id) const {
  kvm_irqchip irqchip{};
  irqchip.chip_id = chip_id;
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", &irqchip));
  return irqchip;
}

Status Vm::SetIrqchip(const kvm_irqchip& irqchip) const {
  return IoctlStatus(fd(), KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", &irqchip);
}

Result<kvm_pit_state2> Vm::GetPit2() const {
  kvm_pit_state2 pit{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_PIT2, "KVM_GET_PIT2", &pit));
  return pit;
}

Status Vm::SetPit2(const kvm_pit_state2& pit) const {
  return IoctlStatus(fd(), KVM_SET_PIT2, "KVM_SET_PIT2", &pit);
}

Result<kvm_clock_data> Vm::GetClock() const {
  kvm_clock_data clock{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_CLOCK, "KVM_GET_CLOCK", &clock));
  return clock;
}

Status Vm::SetClock(const kvm_clock_data& clock) const {
  return IoctlStatus(fd(), KVM_SET_CLOCK, "KVM_SET_CLOCK", &clock);
}

Result<std::vector<uint64_t>> Vm::GetDirtyLog(uint32_t slot, uint64_t pages) const {
  // KVM writes ALIGN(pages, 64) / 8 bytes: whole 64-bit words.
  std::vector<uint64_t> bitmap((pages + 63) / 64);
  kvm_dirty_log log{};
  log.slot = slot;
  log.dirty_bitmap = bitmap.data();
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_DIRTY_LOG, "KVM_GET_DIRTY_LOG", &log));
  return bitmap;
}

Status Vcpu::Run() const { return IoctlStatus(fd(), KVM_RUN, "KVM_RUN", 0); }

Result<kvm_regs> Vcpu::GetRegs() const {
  kvm_regs regs{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_REGS, "KVM_GET_REGS", &regs));
  return regs;
}

Status Vcpu::SetRegs(const kvm_regs& regs) const {
  return IoctlStatus(fd(), KVM_SET_REGS, "KVM_SET_REGS", &regs);
}

Result<kvm_sregs> Vcpu::GetSregs() const {
  kvm_sregs sregs{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_SREGS, "KVM_GET_SREGS", &sregs));
  return sregs;
}

Status Vcpu::SetSregs(const kvm_sregs& sregs) const {
  return IoctlStatus(fd(), KVM_SET_SREGS, "KVM_SET_SREGS", &sregs);
}

Result<kvm_fpu> Vcpu::GetFpu() const {
  kvm_fpu fpu{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_FPU, "KVM_GET_FPU", &fpu));
  return fpu;
}

Status Vcpu::SetFpu(const kvm_fpu& fpu) const {
  return IoctlStatus(fd(), KVM_SET_FPU, "KVM_SET_FPU", &fpu);
}

Status Vcpu::SetCpuid2(std::span<const kvm_cpuid_entry2> entries) const {
  std::vector<uint8_t> buffer(sizeof(kvm_cpuid2) + entries.size_bytes());
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buffer.data());
  cpuid->nent = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(), cpuid->entries);
  return IoctlStatus(fd(), KVM_SET_CPUID2, "KVM_SET_CPUID2", cpuid);
}

Result<CpuidEntries> Vcpu::GetCpuid2() const {
  std::vector<uint8_t> buffer(sizeof(kvm_cpuid2) + kMaxCpuidEntries * sizeof(kvm_cpuid_entry2));
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buffer.data());
  cpuid->nent = kMaxCpuidEntries;
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_CPUID2, "KVM_GET_CPUID2", cpuid));
  return CpuidEntries(cpuid->entries,
                      cpuid->entries + std::min<uint32_t>(cpuid->nent, kMaxCpuidEntries));
}

Status Vcpu::SetMsrs(std::span<const kvm_msr_entry> entries) const {
  std::vector<uint8_t> buffer(sizeof(kvm_msrs) + entries.size_bytes());
  auto* msrs = reinterpret_cast<kvm_msrs*>(buffer.data());
  msrs->nmsrs = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(), msrs->entries);
  TERN_ASSIGN_OR_RETURN(int written, Ioctl(fd(), KVM_SET_MSRS, "KVM_SET_MSRS", msrs));
  if (static_cast<size_t>(written) != entries.size()) {
    return Error("KVM_SET_MSRS: MSR " + Hex(entries[written].index) + " refused", EINVAL);
  }
  return Ok();
}

Result<std::vector<kvm_msr_entry>> Vcpu::GetMsrs(std::span<const uint32_t> indices) const {
  std::vector<uint8_t> buffer(sizeof(kvm_msrs) + indices.size() * sizeof(kvm_msr_entry));
  auto* msrs = reinterpret_cast<kvm_msrs*>(buffer.data());
  msrs->nmsrs = static_cast<uint32_t>(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) msrs->entries[i].index = indices[i];
  TERN_ASSIGN_OR_RETURN(int read, Ioctl(fd(), KVM_GET_MSRS, "KVM_GET_MSRS", msrs));
  size_t count = std::min<size_t>(static_cast<size_t>(read), indices.size());
  return std::vector<kvm_msr_entry>(msrs->entries, msrs->entries + count);
}

Result<kvm_lapic_state> Vcpu::GetLapic() const {
  kvm_lapic_state lapic{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic));
  return lapic;
}

Status Vcpu::SetLapic(const kvm_lapic_state& lapic) const {
  return IoctlStatus(fd(), KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic);
}

Result<std::vector<uint8_t>> Vcpu::GetXsave(size_t xsave2_size) const {
  std::vector<uint8_t> xsave(std::max(xsave2_size, sizeof(kvm_xsave)));
  if (xsave.size() > sizeof(kvm_xsave)) {
    TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_XSAVE2, "KVM_GET_XSAVE2", xsave.data()));
  } else {
    TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_XSAVE, "KVM_GET_XSAVE", xsave.data()));
  }
  return xsave;
}

Status Vcpu::SetXsave(std::span<const uint8_t> xsave) const {
  if (xsave.size() < sizeof(kvm_xsave)) {
    return Error("KVM_SET_XSAVE: an XSAVE area of " + std::to_string(xsave.size()) +
                     " bytes is shorter than 4096",
                 EINVAL);
  }
  std::vector<uint8_t> buffer(std::max(xsave.size(), HostXsaveSize()));
  std::copy(xsave.begin(), xsave.end(), buffer.begin());
  return IoctlStatus(fd(), KVM_SET_XSAVE, "KVM_SET_XSAVE", buffer.data());
}

Result<kvm_xcrs> Vcpu::GetXcrs() const {
  kvm_xcrs xcrs{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_XCRS, "KVM_GET_XCRS", &xcrs));
  return xcrs;
}

Status Vcpu::SetXcrs(const kvm_xcrs& xcrs) const {
  return IoctlStatus(fd(), KVM_SET_XCRS, "KVM_SET_XCRS", &xcrs);
}

Result<kvm_mp_state> Vcpu::GetMpState() const {
  kvm_mp_state mp_state{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &mp_state));
  return mp_state;
}

Status Vcpu::SetMpState(const kvm_mp_state& mp_state) const {
  return IoctlStatus(fd(), KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &mp_state);
}

Result<kvm_vcpu_events> Vcpu::GetVcpuEvents() const {
  kvm_vcpu_events events{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &events));
  return events;
}

Status Vcpu::SetVcpuEvents(const kvm_vcpu_events& events) const {
  return IoctlStatus(fd(), KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &events);
}

Result<kvm_debugregs> Vcpu::GetDebugRegs() const {
  kvm_debugregs debugregs{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", &debugregs));
  return debugregs;
}

Status Vcpu::SetDebugRegs(const kvm_debugregs& debugregs) const {
  return IoctlStatus(fd(), KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", &debugregs);
}

Result<uint32_t> Vcpu::GetTscKhz() const {
  // The frequency is the ioctl's return value.
  TERN_ASSIGN_OR_RETURN(int khz, Ioctl(fd(), KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", 0));
  return static_cast<uint32_t>(khz);
}

Status Vcpu::SetTscKhz(uint32_t khz) const {
  return IoctlStatus(fd(), KVM_SET_TSC_KHZ, "KVM_SET_TSC_KHZ", static_cast<unsigned long>(khz));
}

Status CheckHardwareVirtualization(const std::string& sys_module_dir) {
  constexpr const char* kHint =
      "; run tern-vmm inside the test host (tools/testhost/testhost) or on a host with "
      "VT-x/AMD-V";
  if (PathExists(sys_module_dir + "/kvm_pvm")) {
    return Error(std::string("this host's KVM is PVM (kvm_pvm), which cannot run unmodified "
                             "guests at useful speed") +
                 kHint);
  }
  unsigned int eax, ebx, ecx, edx;
  bool vmx = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & kCpuidVmx);
  bool svm = __get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) && (ecx & kCpuidSvm);
  bool module =
      PathExists(sys_module_dir + "/kvm_intel") || PathExists(sys_module_dir + "/kvm_amd");
  if (!(vmx || svm) || !module) {
    return Error(std::string("this host has no hardware virtualization for KVM (no VT-x/AMD-V "
                             "with kvm_intel or kvm_amd)") +
                 kHint);
  }
  return Ok();
}

}  // namespace tern::kvm
