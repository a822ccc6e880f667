// Thin RAII wrappers over the KVM API (Documentation/virt/kvm/api.rst): the /dev/kvm system
// handle, a VM and its vCPUs. One method per ioctl, named after it; errors are values carrying
// the ioctl's name and errno. Structures are the kernel's own (<linux/kvm.h>).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/event_fd.h"
#include "base/fd.h"
#include "base/mapping.h"
#include "base/result.h"
#include "kvm/linux_kvm.h"

namespace tern::kvm {

// CPUID entries as KVM_GET_SUPPORTED_CPUID returns them and KVM_SET_CPUID2 takes them.
using CpuidEntries = std::vector<kvm_cpuid_entry2>;

class Vm;
class Vcpu;

// /dev/kvm. Methods are const and thread-safe (each is one ioctl).
class Kvm {
 public:
  // Opens `path` read-write; the error names the path.
  static Result<Kvm> Open(const std::string& path = "/dev/kvm");

  Result<int> GetApiVersion() const;                   // KVM_GET_API_VERSION (12)
  Result<int> CheckExtension(unsigned int cap) const;  // KVM_CHECK_EXTENSION: 0 = absent
  Result<int> GetVcpuMmapSize() const;                 // KVM_GET_VCPU_MMAP_SIZE, bytes
  Result<CpuidEntries> GetSupportedCpuid() const;      // KVM_GET_SUPPORTED_CPUID
  Result<Vm> CreateVm() const;                         // KVM_CREATE_VM (default type)

  // Checks the API version and every capability Tern needs; the error names the first missing.
  Status CheckRequirements() const;

  int fd() const { return fd_.get(); }

 private:
  explicit Kvm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

// A VM file descriptor. Thread-safe as the kernel's ioctls are.
class Vm {
 public:
  // KVM_SET_USER_MEMORY_REGION: maps [guest_phys_addr, +memory_size) to host `userspace_addr`.
  Status SetUserMemoryRegion(uint32_t slot, uint64_t guest_phys_addr, uint64_t memory_size,
                             void* userspace_addr) const;
  Status SetTssAddr(uint64_t address) const;          // KVM_SET_TSS_ADDR (3 pages)
  Status SetIdentityMapAddr(uint64_t address) const;  // KVM_SET_IDENTITY_MAP_ADDR (1 page)
  Status CreateIrqchip() const;                       // KVM_CREATE_IRQCHIP: PIC, IOAPIC, LAPIC
  Status CreatePit2() const;                          // KVM_CREATE_PIT2 (speaker port dummy)
  // KVM_IRQFD: every write to `event` injects an edge on `gsi`.
  Status Irqfd(const EventFd& event, uint32_t gsi) const;
  // KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN: unbinds `event` from `gsi`.
  Status IrqfdDeassign(const EventFd& event, uint32_t gsi) const;
  // KVM_SET_GSI_ROUTING: replaces the whole GSI routing table (the irqchip's default routes
  // included) with `entries` (at most KVM_MAX_IRQ_ROUTES = 4096 on x86).
  Status SetGsiRouting(std::span<const kvm_irq_routing_entry> entries) const;
  // KVM_IOEVENTFD for MMIO without datamatch: a guest write of `length` bytes (1, 2, 4 or 8; 0
  // matches any length, given KVM_CAP_IOEVENTFD_ANY_LENGTH) at guest-physical `address` signals
  // `event` instead of exiting to userspace. `deassign` removes that registration again (same
  // event, address and length).
  Status Ioeventfd(const EventFd& event, uint64_t address, uint32_t length,
                   bool deassign = false) const;
  // KVM_CREATE_VCPU with vCPU id `id`, and mmaps its kvm_run area of `mmap_size` bytes.
  Result<Vcpu> CreateVcpu(uint32_t id, int mmap_size) const;

  int fd() const { return fd_.get(); }

 private:
  friend class Kvm;
  explicit Vm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

// A vCPU file descriptor and its shared kvm_run area. Must be run by one thread at a time
// (KVM requires vCPU ioctls from the thread that runs it; Tern uses one thread per vCPU).
class Vcpu {
 public:
  // KVM_RUN; returns with kvm_run()->exit_reason set. EINTR/EAGAIN are returned as errors too,
  // so the caller decides (a signal to stop the vCPU arrives as EINTR).
  Status Run() const;
  kvm_run* run() const { return reinterpret_cast<kvm_run*>(run_.data()); }

  Result<kvm_regs> GetRegs() const;                                   // KVM_GET_REGS
  Status SetRegs(const kvm_regs& regs) const;                         // KVM_SET_REGS
  Result<kvm_sregs> GetSregs() const;                                 // KVM_GET_SREGS
  Status SetSregs(const kvm_sregs& sregs) const;                      // KVM_SET_SREGS
  Status SetFpu(const kvm_fpu& fpu) const;                            // KVM_SET_FPU
  Status SetCpuid2(std::span<const kvm_cpuid_entry2> entries) const;  // KVM_SET_CPUID2
  Status SetMsrs(std::span<const kvm_msr_entry> entries) const;       // KVM_SET_MSRS, all or error
  Result<kvm_lapic_state> GetLapic() const;                           // KVM_GET_LAPIC
  Status SetLapic(const kvm_lapic_state& lapic) const;                // KVM_SET_LAPIC

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }

 private:
  friend class Vm;
  Vcpu(uint32_t id, Fd fd, Mapping run) : id_(id), fd_(std::move(fd)), run_(std::move(run)) {}
  uint32_t id_;
  Fd fd_;
  Mapping run_;
};

// Whether this host's KVM can run unmodified guests with hardware virtualization (VT-x or
// AMD-V). A PVM host (kvm_pvm loaded) or one without vmx/svm fails with a one-line error that
// says so and names the test host. Reads /sys/module and the host CPUID; never blocks.
Status CheckHardwareVirtualization(const std::string& sys_module_dir = "/sys/module");

}  // namespace tern::kvm
