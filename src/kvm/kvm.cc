// KVM system, VM and vCPU ioctls.
#include "kvm/kvm.h"

#include <cpuid.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
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
                               void* userspace_addr) const {
  kvm_userspace_memory_region region{};
  region.slot = slot;
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

Status Vcpu::SetMsrs(std::span<const kvm_msr_entry> entries) const {
  std::vector<uint8_t> buffer(sizeof(kvm_msrs) + entries.size_bytes());
  auto* msrs = reinterpret_cast<kvm_msrs*>(buffer.data());
  msrs->nmsrs = static_cast<uint32_t>(entries.size());
  std::copy(entries.begin(), entries.end(), msrs->entries);
  TERN_ASSIGN_OR_RETURN(int written, Ioctl(fd(), KVM_SET_MSRS, "KVM_SET_MSRS", msrs));
  if (static_cast<size_t>(written) != entries.size()) {
    return Error("KVM_SET_MSRS: MSR " + std::to_string(entries[written].index) + " refused",
                 EINVAL);
  }
  return Ok();
}

Result<kvm_lapic_state> Vcpu::GetLapic() const {
  kvm_lapic_state lapic{};
  TERN_RETURN_IF_ERROR(IoctlStatus(fd(), KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic));
  return lapic;
}

Status Vcpu::SetLapic(const kvm_lapic_state& lapic) const {
  return IoctlStatus(fd(), KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic);
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
