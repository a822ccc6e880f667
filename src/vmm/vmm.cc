// VM assembly, the vCPU run loops and exit dispatch, and the console/stop event loop.
#include "vmm/vmm.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/x86_64/acpi_tables.h"
#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/mptable.h"
#include "arch/x86_64/regs.h"
#include "arch/x86_64/smbios.h"
#include "base/fd.h"
#include "base/mapping.h"
#include "boot/linux_loader.h"
#include "devices/acpi_ged.h"
#include "devices/acpi_sleep.h"
#include "devices/i8042.h"
#include "devices/interrupt.h"
#include "virtio/console.h"
#include "virtio/net.h"
#include "virtio/rng.h"

namespace tern {
namespace {

using namespace tern::x86_64;

// Addresses KVM needs for its real-mode TSS (3 pages) and identity map page, in the MMIO gap.
constexpr uint64_t kKvmIdentityMapAddress = 0xfeffc000;
constexpr uint64_t kKvmTssAddress = 0xfeffd000;

// The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing).
int KickSignal() { return SIGRTMIN; }

void InstallKickHandler() {
  struct sigaction action {};
  action.sa_handler = [](int) {};
  sigemptyset(&action.sa_mask);
  sigaction(KickSignal(), &action, nullptr);  // no SA_RESTART: KVM_RUN returns EINTR
}

// A read-only private mapping of a whole file (the kernel image).
Result<Mapping> MapFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::FromErrno("cannot open " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::FromErrno("cannot stat " + path);
  if (!S_ISREG(st.st_mode) || st.st_size == 0) {
    return Error(path + " is not a regular, non-empty file", EINVAL);
  }
  auto mapping = Mapping::Map(st.st_size, PROT_READ, MAP_PRIVATE, fd.get());
  if (!mapping.ok()) return mapping.error().WithContext(path);
  return mapping;
}

// Reads the whole of `fd` into `dest` (exactly dest.size() bytes).
Status ReadFully(int fd, std::span<uint8_t> dest, const std::string& path) {
  size_t done = 0;
  while (done < dest.size()) {
    ssize_t n = ::pread(fd, dest.data() + done, dest.size() - done, done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("cannot read " + path);
    if (n == 0) return Error(path + " shrank while being read", EIO);
    done += n;
  }
  return Ok();
}

Status CheckVcpuLimit(const kvm::Kvm& kvm, uint32_t vcpus) {
  TERN_ASSIGN_OR_RETURN(int kvm_max, kvm.CheckExtension(KVM_CAP_MAX_VCPUS));
  uint32_t limit = std::min<uint32_t>(kvm_max > 0 ? kvm_max : 1, kMaxVcpus);
  if (vcpus == 0 || vcpus > limit) {
    return Error("--vcpus " + std::to_string(vcpus) + " is outside 1.." + std::to_string(limit) +
                     " (KVM_CAP_MAX_VCPUS " + std::to_string(kvm_max) + ", xAPIC limit " +
                     std::to_string(kMaxVcpus) + ")",
                 EINVAL);
  }
  return Ok();
}

// Logs where a vCPU was when it triple-faulted: the first thing to know about a crashed guest.
// On AMD SVM, KVM reinitializes the VMCB at a shutdown, so there this shows the reset state.
void LogShutdownState(const kvm::Vcpu& vcpu) {
  auto regs = vcpu.GetRegs();
  auto sregs = vcpu.GetSregs();
  if (!regs.ok() || !sregs.ok()) return;
  spdlog::warn(
      "vCPU {} shut down at rip={:#x} rsp={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} "
      "efer={:#x}",
      vcpu.id(), regs->rip, regs->rsp, sregs->cr0, sregs->cr2, sregs->cr3, sregs->cr4, sregs->efer);
}

}  // namespace

const char* ExitReasonName(VmExit exit) {
  switch (exit) {
    case VmExit::kPowerOff:
      return "power_off";
    case VmExit::kReset:
      return "reset";
    case VmExit::kTripleFault:
      return "triple_fault";
    case VmExit::kStopped:
      return "stopped";
  }
  return "stopped";
}

const char* Describe(VmExit exit) {
  switch (exit) {
    case VmExit::kPowerOff:
      return "guest powered off (ACPI S5)";
    case VmExit::kReset:
      return "guest reset (reboot through the i8042 reset line)";
    case VmExit::kTripleFault:
      return "guest triple fault (KVM_EXIT_SHUTDOWN), treated as a reboot";
    case VmExit::kStopped:
      return "VM stopped by the host";
  }
  return "guest stopped";
}

Vmm::Vmm(const VmConfig& config, kvm::Kvm kvm, kvm::Vm vm, GuestMemory memory, EventFd stop_event)
    : config_(config),
      kvm_(std::move(kvm)),
      vm_(std::move(vm)),
      memory_(std::move(memory)),
      stop_event_(std::move(stop_event)) {}

Vmm::~Vmm() {
  StopVcpus();
  StopDevices();
}

Result<kvm::Kvm> Vmm::OpenKvm(uint32_t vcpus) {
  TERN_RETURN_IF_ERROR(kvm::CheckHardwareVirtualization());
  TERN_ASSIGN_OR_RETURN(kvm::Kvm kvm, kvm::Kvm::Open());
  TERN_RETURN_IF_ERROR(kvm.CheckRequirements());
  TERN_RETURN_IF_ERROR(CheckVcpuLimit(kvm, vcpus));
  return kvm;
}

Result<std::unique_ptr<Vmm>> Vmm::Create(const VmConfig& config) {
  TERN_ASSIGN_OR_RETURN(kvm::Kvm kvm, OpenKvm(config.vcpus));
  TERN_ASSIGN_OR_RETURN(kvm::Vm vm, kvm.CreateVm());
  std::vector<RegionSpec> regions = RamRegions(config.memory_mib << 20);
  TERN_ASSIGN_OR_RETURN(GuestMemory memory, GuestMemory::Create(regions));
  TERN_ASSIGN_OR_RETURN(EventFd stop_event, EventFd::Create());
  std::unique_ptr<Vmm> vmm(
      new Vmm(config, std::move(kvm), std::move(vm), std::move(memory), std::move(stop_event)));
  TERN_RETURN_IF_ERROR(vmm->SetupMemory());
  TERN_RETURN_IF_ERROR(vmm->SetupDevices());
  TERN_RETURN_IF_ERROR(vmm->SetupPci());
  TERN_RETURN_IF_ERROR(vmm->LoadGuest());
  TERN_RETURN_IF_ERROR(vmm->CreateVcpus());
  return vmm;
}

Status Vmm::SetupMemory() {
  uint32_t slot = 0;
  const uint32_t flags = config_.track_dirty_pages ? KVM_MEM_LOG_DIRTY_PAGES : 0;
  if (config_.track_dirty_pages) memory_.EnableDirtyTracking();
  for (const MemoryRegion& region : memory_.regions()) {
    TERN_RETURN_IF_ERROR(
        vm_.SetUserMemoryRegion(slot++, region.guest_base, region.size, region.host, flags));
  }
  TERN_RETURN_IF_ERROR(vm_.SetIdentityMapAddr(kKvmIdentityMapAddress));
  TERN_RETURN_IF_ERROR(vm_.SetTssAddr(kKvmTssAddress));
  TERN_RETURN_IF_ERROR(vm_.CreateIrqchip());
  return vm_.CreatePit2();
}

Status Vmm::SetupDevices() {
  TERN_ASSIGN_OR_RETURN(EventFd com1_event, EventFd::Create());
  TERN_RETURN_IF_ERROR(vm_.Irqfd(com1_event, kCom1Irq));
  serial_ = std::make_shared<Serial>(std::make_unique<EventFdInterrupt>(std::move(com1_event)),
                                     config_.console_out_fd);
  TERN_RETURN_IF_ERROR(io_bus_.Insert(serial_, kCom1Port, Serial::kRegisterCount));
  auto reset = [this] { RequestStop(VmExit::kReset); };
  i8042_ = std::make_shared<I8042>(reset);
  TERN_RETURN_IF_ERROR(io_bus_.Insert(i8042_, kI8042DataPort, I8042::kRangeSize));
  auto power_off = [this] { RequestStop(VmExit::kPowerOff); };
  TERN_RETURN_IF_ERROR(io_bus_.Insert(std::make_shared<AcpiSleep>(power_off), kAcpiSleepControlPort,
                                      AcpiSleep::kRangeSize));
  // The ACPI power button: a Generic Event Device interrupting on its own IOAPIC pin.
  TERN_ASSIGN_OR_RETURN(EventFd ged_event, EventFd::Create());
  TERN_RETURN_IF_ERROR(vm_.Irqfd(ged_event, kAcpiGedGsi));
  acpi_ged_ = std::make_shared<AcpiGed>(std::make_unique<EventFdInterrupt>(std::move(ged_event)));
  return mmio_bus_.Insert(acpi_ged_, kAcpiGedAddress, kAcpiGedSize);
}

// The PCI host bridge on bus 0 (mechanism #1 ports and ECAM), MSI routing, the device event
// loop and every virtio device of the configuration, each a virtio-pci function.
Status Vmm::SetupPci() {
  PciLayout layout = PciLayoutFor(config_.memory_mib << 20);
  gsi_routing_ = kvm::GsiRouting::Create(std::make_shared<kvm::VmIrqTarget>(vm_));
  pci_root_ = std::make_shared<pci::PciRoot>(
      mmio_bus_, pci::AddressWindow{layout.mmio32_base, layout.mmio32_size},
      pci::AddressWindow{layout.mmio64_base, layout.mmio64_size});
  TERN_RETURN_IF_ERROR(io_bus_.Insert(std::make_shared<pci::PciConfigIo>(pci_root_),
                                      kPciConfigIoPort, kPciConfigIoSize));
  TERN_RETURN_IF_ERROR(mmio_bus_.Insert(std::make_shared<pci::PciConfigMmio>(pci_root_),
                                        layout.ecam_base, layout.ecam_size));
  TERN_ASSIGN_OR_RETURN(device_loop_, EventLoop::Create());
  for (const virtio::BlockOptions& disk : config_.disks) {
    auto block = virtio::Block::Create(disk);
    if (!block.ok()) return block.error().WithContext("--disk " + disk.path);
    TERN_RETURN_IF_ERROR(AddVirtioDevice(std::move(*block)));
  }
  for (const NetConfig& net : config_.nets) {
    auto device = virtio::NetDevice::Create(net.tap, net.mac);
    if (!device.ok()) return device.error().WithContext("--net tap=" + net.tap);
    TERN_RETURN_IF_ERROR(AddVirtioDevice(std::move(*device)));
  }
  if (config_.rng) TERN_RETURN_IF_ERROR(AddVirtioDevice(std::make_shared<virtio::Rng>()));
  if (config_.console == ConsoleDevice::kVirtio) {
    TERN_RETURN_IF_ERROR(AddVirtioDevice(
        std::make_shared<virtio::Console>(config_.console_in_fd, config_.console_out_fd)));
  }
  if (config_.balloon) {
    auto balloon = virtio::Balloon::Create(*config_.balloon, config_.memory_mib);
    if (!balloon.ok()) return balloon.error().WithContext("balloon");
    balloon_ = std::move(balloon).value();
    TERN_RETURN_IF_ERROR(AddVirtioDevice(balloon_));
  }
  if (config_.vsock) {
    auto vsock = virtio::VsockDevice::Create(*config_.vsock);
    if (!vsock.ok()) return vsock.error().WithContext("vsock " + config_.vsock->uds_path);
    TERN_RETURN_IF_ERROR(AddVirtioDevice(std::move(vsock).value()));
  }
  return Ok();
}

Status Vmm::AddVirtioDevice(std::shared_ptr<virtio::VirtioDevice> device) {
  TERN_ASSIGN_OR_RETURN(auto vectors, gsi_routing_->AllocateMsiVectors(
                                          virtio::VirtioPciDevice::VectorCount(*device)));
  auto ioeventfd = [this](const EventFd& event, uint64_t address, bool deassign) {
    return vm_.Ioeventfd(event, address, 2, deassign);
  };
  TERN_ASSIGN_OR_RETURN(
      auto pci, virtio::VirtioPciDevice::Create(std::move(device), memory_, *device_loop_, vectors,
                                                ioeventfd));
  TERN_RETURN_IF_ERROR(pci_root_->AddDevice(pci));
  virtio_devices_.push_back(std::move(pci));
  return Ok();
}

Status Vmm::LoadGuest() {
  TERN_ASSIGN_OR_RETURN(Mapping kernel_file, MapFile(config_.kernel_path));
  auto kernel = boot::LoadKernel(memory_, std::span(kernel_file.data(), kernel_file.size()));
  if (!kernel.ok()) return kernel.error().WithContext("kernel " + config_.kernel_path);

  boot::BootParamsConfig params{config_.cmdline};
  if (!config_.initrd_path.empty()) {
    Fd fd(::open(config_.initrd_path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0) {
      return Error::FromErrno("cannot open initrd " + config_.initrd_path);
    }
    auto placement = boot::PlaceInitrd(memory_, *kernel, st.st_size);
    if (!placement.ok()) return placement.error().WithContext("initrd " + config_.initrd_path);
    TERN_ASSIGN_OR_RETURN(std::span<uint8_t> dest, memory_.Slice(placement->address, st.st_size));
    TERN_RETURN_IF_ERROR(ReadFully(fd.get(), dest, config_.initrd_path));
    params.initrd = *placement;
  }
  TERN_RETURN_IF_ERROR(SetupMpTable(memory_, config_.vcpus));
  TERN_RETURN_IF_ERROR(SetupSmbios(memory_, config_.smbios));
  TERN_ASSIGN_OR_RETURN(
      params.acpi_rsdp_addr,
      SetupAcpiTables(memory_, config_.vcpus, PciLayoutFor(config_.memory_mib << 20)));
  TERN_RETURN_IF_ERROR(SetupPageTables(memory_));
  TERN_RETURN_IF_ERROR(SetupGdt(memory_));
  auto written = boot::WriteBootParams(memory_, *kernel, params);
  if (!written.ok()) return written.error().WithContext("--cmdline");

  // Only the boot vCPU starts at the kernel entry; the others wait for INIT/SIPI.
  entry_ = kernel->entry;
  return Ok();
}

// Creates the vCPUs; with `boot`, sets them up to boot the loaded kernel (a restore sets their
// whole state from the snapshot instead).
Status Vmm::CreateVcpus(bool boot) {
  TERN_ASSIGN_OR_RETURN(int mmap_size, kvm_.GetVcpuMmapSize());
  TERN_ASSIGN_OR_RETURN(kvm::CpuidEntries supported, kvm_.GetSupportedCpuid());
  TERN_ASSIGN_OR_RETURN(int deadline, kvm_.CheckExtension(KVM_CAP_TSC_DEADLINE_TIMER));
  CpuidOptions options{.tsc_deadline_timer = deadline > 0};
  for (uint32_t id = 0; id < config_.vcpus; ++id) {
    TERN_ASSIGN_OR_RETURN(kvm::Vcpu vcpu, vm_.CreateVcpu(id, mmap_size));
    kvm::CpuidEntries cpuid = BuildCpuid(supported, id, config_.vcpus, options);
    if (boot) {
      TERN_RETURN_IF_ERROR(vcpu.SetCpuid2(cpuid));
      TERN_RETURN_IF_ERROR(SetupVcpuCommon(vcpu));
    }
    if (boot && id == 0) {
      TERN_ASSIGN_OR_RETURN(kvm_sregs sregs, vcpu.GetSregs());
      TERN_RETURN_IF_ERROR(vcpu.SetSregs(BootSregs(sregs)));
      TERN_RETURN_IF_ERROR(vcpu.SetRegs(BootRegs(entry_)));
    }
    vcpus_.push_back(std::make_unique<Vcpu>(Vcpu{std::move(vcpu), std::move(cpuid), {}}));
  }
  return Ok();
}

Result<VmExit> Vmm::Run() {
  Start();
  return Wait();
}

void Vmm::Start(bool paused) {
  {
    std::lock_guard lock(pause_mutex_);
    if (state_ != VmState::kCreated) return;
    state_ = paused ? VmState::kPaused : VmState::kRunning;
    // vCPU threads park before their first KVM_RUN; the loop parks before its first dispatch.
    pause_requested_.store(paused, std::memory_order_seq_cst);
    if (paused) device_loop_->Pause();
  }
  InstallKickHandler();
  device_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "tern-devices");  // for top -H, perf and gdb
    device_loop_->Run();
  });
  for (auto& vcpu : vcpus_) {
    vcpu->thread = std::thread([this, v = vcpu.get()] {
      pthread_setname_np(pthread_self(), ("tern-vcpu" + std::to_string(v->vcpu.id())).c_str());
      VcpuLoop(*v);
    });
  }
}

Result<VmExit> Vmm::Wait() {
  bool input_open = config_.console_in_fd >= 0 && config_.console == ConsoleDevice::kSerial;
  while (!stopping_.load(std::memory_order_acquire)) PumpConsoleInput(input_open);
  StopVcpus();
  StopDevices();
  {
    std::lock_guard lock(pause_mutex_);
    state_ = VmState::kStopped;
  }
  std::lock_guard lock(outcome_mutex_);
  return *outcome_;
}

Status Vmm::Pause() {
  std::unique_lock lock(pause_mutex_);
  if (state_ != VmState::kRunning) return Error("the VM is not running", EINVAL);
  pause_requested_.store(true, std::memory_order_seq_cst);
  for (auto& vcpu : vcpus_) {
    vcpu->vcpu.run()->immediate_exit = 1;
    pthread_kill(vcpu->thread.native_handle(), KickSignal());
  }
  pause_changed_.wait(lock, [&] {
    return parked_vcpus_ == vcpus_.size() || stopping_.load(std::memory_order_acquire);
  });
  device_loop_->Pause();
  state_ = VmState::kPaused;
  return Ok();
}

Status Vmm::Resume() {
  std::unique_lock lock(pause_mutex_);
  if (state_ != VmState::kPaused) return Error("the VM is not paused", EINVAL);
  device_loop_->Resume();
  pause_requested_.store(false, std::memory_order_seq_cst);
  state_ = VmState::kRunning;
  pause_changed_.notify_all();
  return Ok();
}

void Vmm::Stop() { RequestStop(VmExit::kStopped); }

Status Vmm::PressPowerButton() {
  if (state() != VmState::kRunning) return Error("the VM is not running", EINVAL);
  return acpi_ged_->PressPowerButton();
}

VmState Vmm::state() const {
  std::lock_guard lock(pause_mutex_);
  return state_;
}

// One wait of the event loop: for the stop event, and for console input when COM1 has room.
void Vmm::PumpConsoleInput(bool& input_open) {
  size_t space = serial_->InputSpace();
  pollfd fds[2] = {{stop_event_.fd(), POLLIN, 0}, {config_.console_in_fd, POLLIN, 0}};
  bool want_input = input_open && space > 0;
  // When COM1's receive buffer is full, poll again shortly rather than spin on readable input.
  int timeout_ms = input_open && space == 0 ? 10 : -1;
  if (::poll(fds, want_input ? 2 : 1, timeout_ms) <= 0 || !want_input) return;
  if (!(fds[1].revents & (POLLIN | POLLHUP | POLLERR))) return;
  uint8_t buffer[4096];
  ssize_t n = ::read(config_.console_in_fd, buffer, std::min(space, sizeof(buffer)));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    input_open = false;  // EOF or error: the guest keeps running without input
    return;
  }
  serial_->QueueInput(std::span(buffer, n));
}

void Vmm::VcpuLoop(Vcpu& vcpu) {
  while (!stopping_.load(std::memory_order_acquire)) {
    if (pause_requested_.load(std::memory_order_seq_cst)) {
      ParkVcpu(vcpu);
      continue;
    }
    Status status = vcpu.vcpu.Run();
    if (!status.ok()) {
      int err = status.error().errno_value();
      if (err == EINTR || err == EAGAIN) continue;
      RequestStop(status.error().WithContext("vCPU " + std::to_string(vcpu.vcpu.id())));
      return;
    }
    uint32_t reason = vcpu.vcpu.run()->exit_reason;
    exit_counts_[std::min<size_t>(reason, kExitReasonSlots - 1)].fetch_add(
        1, std::memory_order_relaxed);
    if (!HandleExit(vcpu)) return;
  }
}

void Vmm::ParkVcpu(Vcpu& vcpu) {
  std::unique_lock lock(pause_mutex_);
  ++parked_vcpus_;
  pause_changed_.notify_all();
  pause_changed_.wait(lock, [&] {
    return !pause_requested_.load(std::memory_order_seq_cst) ||
           stopping_.load(std::memory_order_acquire);
  });
  --parked_vcpus_;
  // Cleared before the caller looks at pause_requested_ again: a new Pause() sets it anew.
  vcpu.vcpu.run()->immediate_exit = 0;
}

// Dispatches one KVM exit; false when this vCPU must stop running.
bool Vmm::HandleExit(Vcpu& vcpu) {
  kvm_run* run = vcpu.vcpu.run();
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      HandlePortIo(run);
      return true;
    case KVM_EXIT_MMIO:
      HandleMmio(run);
      return true;
    case KVM_EXIT_SHUTDOWN:
      LogShutdownState(vcpu.vcpu);
      RequestStop(VmExit::kTripleFault);
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      RequestStop(run->system_event.type == KVM_SYSTEM_EVENT_RESET ? VmExit::kReset
                                                                   : VmExit::kPowerOff);
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      RequestStop(Error("vCPU " + std::to_string(vcpu.vcpu.id()) +
                        ": KVM_EXIT_FAIL_ENTRY, hardware entry failure reason 0x" +
                        std::to_string(run->fail_entry.hardware_entry_failure_reason)));
      return false;
    case KVM_EXIT_INTERNAL_ERROR:
      RequestStop(Error("vCPU " + std::to_string(vcpu.vcpu.id()) +
                        ": KVM_EXIT_INTERNAL_ERROR, suberror " +
                        std::to_string(run->internal.suberror)));
      return false;
    default:
      RequestStop(Error("vCPU " + std::to_string(vcpu.vcpu.id()) + ": unhandled KVM exit " +
                        std::to_string(run->exit_reason)));
      return false;
  }
}

void Vmm::HandlePortIo(kvm_run* run) {
  // KVM places the data (count items of `size` bytes, for string I/O) at data_offset.
  uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  for (uint32_t i = 0; i < run->io.count; ++i, data += run->io.size) {
    std::span<uint8_t> item(data, run->io.size);
    bool claimed = run->io.direction == KVM_EXIT_IO_OUT ? io_bus_.Write(run->io.port, item)
                                                        : io_bus_.Read(run->io.port, item);
    if (!claimed) unknown_port_io_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Vmm::HandleMmio(kvm_run* run) {
  std::span<uint8_t> data(run->mmio.data, std::min<uint32_t>(run->mmio.len, 8));
  bool claimed = run->mmio.is_write ? mmio_bus_.Write(run->mmio.phys_addr, data)
                                    : mmio_bus_.Read(run->mmio.phys_addr, data);
  if (!claimed) unknown_mmio_.fetch_add(1, std::memory_order_relaxed);
}

void Vmm::RequestStop(Result<VmExit> outcome) {
  {
    std::lock_guard lock(outcome_mutex_);
    if (outcome_.has_value()) return;
    outcome_ = std::move(outcome);
  }
  stopping_.store(true, std::memory_order_release);
  {
    std::lock_guard lock(pause_mutex_);  // parked vCPUs and a waiting Pause() see stopping_
  }
  pause_changed_.notify_all();
  (void)stop_event_.Write(1);
}

void Vmm::StopVcpus() {
  stopping_.store(true, std::memory_order_release);
  { std::lock_guard lock(pause_mutex_); }
  pause_changed_.notify_all();
  for (auto& vcpu : vcpus_) {
    vcpu->vcpu.run()->immediate_exit = 1;
    if (vcpu->thread.joinable()) pthread_kill(vcpu->thread.native_handle(), KickSignal());
  }
  for (auto& vcpu : vcpus_) {
    if (vcpu->thread.joinable()) vcpu->thread.join();
  }
}

// Stops device processing (no device thread touches guest memory afterwards), then the loop.
void Vmm::StopDevices() {
  for (auto& device : virtio_devices_) device->Shutdown();
  if (device_thread_.joinable()) {
    device_loop_->Stop();
    device_thread_.join();
  }
}

UnknownAccessCounts Vmm::unknown_accesses() const {
  return {unknown_port_io_.load(), unknown_mmio_.load()};
}

std::array<uint64_t, kExitReasonSlots> Vmm::exit_counts() const {
  std::array<uint64_t, kExitReasonSlots> counts;
  for (size_t i = 0; i < kExitReasonSlots; ++i) {
    counts[i] = exit_counts_[i].load(std::memory_order_relaxed);
  }
  return counts;
}

nlohmann::json Vmm::DeviceMetrics() const {
  nlohmann::json metrics = nlohmann::json::object();
  // SetupPci() created the disks and then the interfaces in the configuration's order.
  size_t disk = 0;
  size_t nic = 0;
  for (const auto& pci : virtio_devices_) {
    const virtio::VirtioDevice& device = pci->device();
    nlohmann::json entry = device.Metrics();
    switch (device.device_type()) {
      case virtio::kDeviceTypeBlock: {
        const virtio::BlockOptions& options = config_.disks[disk];
        entry["drive"] = options.serial.empty() ? std::to_string(disk) : options.serial;
        entry["path"] = options.path;
        metrics["block"].push_back(std::move(entry));
        ++disk;
        break;
      }
      case virtio::kDeviceTypeNet: {
        const NetConfig& net = config_.nets[nic];
        entry["iface"] = net.id.empty() ? std::to_string(nic) : net.id;
        entry["tap"] = net.tap;
        metrics["net"].push_back(std::move(entry));
        ++nic;
        break;
      }
      case virtio::kDeviceTypeBalloon:
        metrics["balloon"] = std::move(entry);
        break;
      case virtio::kDeviceTypeVsock:
        metrics["vsock"] = std::move(entry);
        break;
      default:  // the entropy device and the console count nothing
        break;
    }
  }
  return metrics;
}

}  // namespace tern
