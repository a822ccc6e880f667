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

// The most MSRs one KVM_GET_MSRS/KVM_SET_MSRS takes (KVM refuses MAX_IO_MSRS = 256 or more with
// E2BIG).
constexpr size_t kMaxMsrsPerIoctl = 255;

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
  // KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and emulates for a vCPU (what a snapshot reads
  // with KVM_GET_MSRS), in KVM's order. Asks for the count first (E2BIG), then for the list.
  Result<std::vector<uint32_t>> GetMsrIndexList() const;

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
  // `flags` are KVM_MEM_* (KVM_MEM_LOG_DIRTY_PAGES: track writes for GetDirtyLog).
  Status SetUserMemoryRegion(uint32_t slot, uint64_t guest_phys_addr, uint64_t memory_size,
                             void* userspace_addr, uint32_t flags = 0) const;
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

  // KVM_GET_IRQCHIP: the state of in-kernel chip `chip_id` (KVM_IRQCHIP_PIC_MASTER = 0,
  // KVM_IRQCHIP_PIC_SLAVE = 1, KVM_IRQCHIP_IOAPIC = 2). Needs CreateIrqchip (else ENXIO).
  Result<kvm_irqchip> GetIrqchip(uint32_t chip_id) const;
  // KVM_SET_IRQCHIP: replaces the state of chip `irqchip.chip_id`.
  Status SetIrqchip(const kvm_irqchip& irqchip) const;
  Result<kvm_pit_state2> GetPit2() const;           // KVM_GET_PIT2 (needs CreatePit2, else ENXIO)
  Status SetPit2(const kvm_pit_state2& pit) const;  // KVM_SET_PIT2: reloads the channels' counts
  // KVM_GET_CLOCK: kvmclock in ns, with flags KVM_CLOCK_TSC_STABLE, and KVM_CLOCK_REALTIME |
  // KVM_CLOCK_HOST_TSC when `realtime`/`host_tsc` are valid.
  Result<kvm_clock_data> GetClock() const;
  // KVM_SET_CLOCK: sets kvmclock to `clock.clock` ns; with KVM_CLOCK_REALTIME KVM adds the wall
  // time passed since `clock.realtime`. Kernels before 5.16 refuse any flag (EINVAL).
  Status SetClock(const kvm_clock_data& clock) const;
  // KVM_GET_DIRTY_LOG: the pages of slot `slot` written since the last call (KVM clears the log
  // and write-protects them again), one bit per 4 KiB page, bit i of word i / 64 = page i.
  // `pages` must be the slot's memory_size / 4096: KVM writes that many bits. ENOENT if the slot
  // lacks KVM_MEM_LOG_DIRTY_PAGES.
  Result<std::vector<uint64_t>> GetDirtyLog(uint32_t slot, uint64_t pages) const;

  int fd() const { return fd_.get(); }

 private:
  friend class Kvm;
  explicit Vm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

// A vCPU file descriptor and its shared kvm_run area. Must be run by one thread at a time
// (KVM requires vCPU ioctls from the thread that runs it; Tern uses one thread per vCPU). The
// Get/Set state ioctls wait for a running KVM_RUN to return: call them with the vCPU parked.
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
  Result<kvm_fpu> GetFpu() const;                                     // KVM_GET_FPU
  Status SetFpu(const kvm_fpu& fpu) const;                            // KVM_SET_FPU
  Status SetCpuid2(std::span<const kvm_cpuid_entry2> entries) const;  // KVM_SET_CPUID2
  Result<CpuidEntries> GetCpuid2() const;  // KVM_GET_CPUID2: what SetCpuid2 set (else empty)
  // KVM_SET_MSRS, all or an EINVAL error naming the first MSR KVM refused. At most
  // kMaxMsrsPerIoctl entries (E2BIG otherwise).
  Status SetMsrs(std::span<const kvm_msr_entry> entries) const;
  // KVM_GET_MSRS for `indices` (at most kMaxMsrsPerIoctl, E2BIG otherwise): KVM reads them in
  // order and stops at the first it refuses, so the result holds the entries of a prefix of
  // `indices`, shorter than `indices` when KVM refused indices[result.size()].
  Result<std::vector<kvm_msr_entry>> GetMsrs(std::span<const uint32_t> indices) const;
  Result<kvm_lapic_state> GetLapic() const;             // KVM_GET_LAPIC
  Status SetLapic(const kvm_lapic_state& lapic) const;  // KVM_SET_LAPIC
  // The XSAVE area (x87, SSE, AVX, ... state in the standard XSAVE layout of the host's CPUID
  // leaf 0xD). `xsave2_size` is KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) in bytes (0 when absent):
  // above sizeof(kvm_xsave) = 4096 (dynamic features such as AMX) this is KVM_GET_XSAVE2 with a
  // buffer that large, else KVM_GET_XSAVE. Returns max(xsave2_size, 4096) bytes.
  Result<std::vector<uint8_t>> GetXsave(size_t xsave2_size = 0) const;
  // KVM_SET_XSAVE from what GetXsave returned (at least 4096 bytes, else EINVAL). KVM reads as
  // many bytes as this vCPU's XSAVE area has, which may exceed xsave.size() when this process
  // enabled more dynamic features than the one that saved it: the area is zero-padded to the
  // host's largest XSAVE size (CPUID.(EAX=0DH,ECX=0):ECX) so that KVM never reads past it (the
  // saved XSTATE_BV has no bits for the padding's components: they start in their init state).
  Status SetXsave(std::span<const uint8_t> xsave) const;
  Result<kvm_xcrs> GetXcrs() const;            // KVM_GET_XCRS: XCR0 (nr_xcrs entries)
  Status SetXcrs(const kvm_xcrs& xcrs) const;  // KVM_SET_XCRS (after SetCpuid2: XCR0 is checked)
  Result<kvm_mp_state> GetMpState() const;     // KVM_GET_MP_STATE (KVM_MP_STATE_RUNNABLE, ...)
  Status SetMpState(const kvm_mp_state& mp_state) const;  // KVM_SET_MP_STATE
  // KVM_GET_VCPU_EVENTS: pending/injected exception, interrupt, NMI, SIPI vector and SMM state.
  Result<kvm_vcpu_events> GetVcpuEvents() const;
  Status SetVcpuEvents(const kvm_vcpu_events& events) const;  // KVM_SET_VCPU_EVENTS
  Result<kvm_debugregs> GetDebugRegs() const;                 // KVM_GET_DEBUGREGS: DR0-3, 6, 7
  Status SetDebugRegs(const kvm_debugregs& debugregs) const;  // KVM_SET_DEBUGREGS
  // KVM_GET_TSC_KHZ: the guest's TSC frequency in kHz (0 when KVM does not know it).
  Result<uint32_t> GetTscKhz() const;
  // KVM_SET_TSC_KHZ: the guest's TSC frequency in kHz. KVM scales the TSC when the hardware can
  // (KVM_CAP_TSC_CONTROL), else accepts a rate within 250 ppm of the host's, or above it by
  // catching up; a slower rate is refused (EINVAL).
  Status SetTscKhz(uint32_t khz) const;

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
