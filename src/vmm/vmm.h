// A running Tern VM: guest memory, the KVM VM and vCPUs, legacy devices and firmware tables,
// assembled from a VmConfig; one thread per vCPU and an event loop on the caller's thread that
// forwards console input and waits for the guest to power off, reset or fail.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "arch/x86_64/smbios.h"
#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "devices/acpi_ged.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/serial.h"
#include "kvm/gsi_routing.h"
#include "kvm/kvm.h"
#include "net/tap.h"
#include "pci/pci_root.h"
#include "virtio/balloon.h"
#include "virtio/block.h"
#include "virtio/pci_transport.h"
#include "virtio/vsock.h"

namespace tern {

// A virtio-net interface: the host TAP device and the MAC address offered to the guest.
struct NetConfig {
  std::string id;                      // the API's iface_id ("eth0"); snapshot overrides use it
  std::string tap;                     // TAP interface name, created if absent (IFF_TAP)
  std::optional<net::MacAddress> mac;  // none: the guest driver picks a random one
};

// Which device the VMM's stdin feeds: COM1 (ttyS0) or a virtio-console (hvc0).
enum class ConsoleDevice { kSerial, kVirtio };

// What a VM is made of (the `tern-vmm` flags).
struct VmConfig {
  std::string kernel_path;  // bzImage or ELF vmlinux
  std::string initrd_path;  // empty: no initrd
  std::string cmdline = "console=ttyS0 reboot=k panic=-1";
  uint32_t vcpus = 1;         // 1 .. min(KVM_CAP_MAX_VCPUS, kMaxVcpus)
  uint64_t memory_mib = 256;  // guest RAM in MiB
  int console_in_fd = 0;      // bytes read here go to COM1's receiver; -1: none
  int console_out_fd = 1;     // COM1's transmitter (and hvc0) write here
  // PCI devices, in this order from device number 1: disks (virtio-blk: /dev/vda, vdb, ...),
  // network interfaces (virtio-net), the entropy device, the virtio console.
  std::vector<virtio::BlockOptions> disks;
  std::vector<NetConfig> nets;
  bool rng = false;  // a virtio-rng device (/dev/hwrng)
  // kVirtio adds a virtio-console that gets stdin; COM1 then gets no input.
  ConsoleDevice console = ConsoleDevice::kSerial;
  std::optional<virtio::BalloonConfig> balloon;  // a virtio-balloon device
  std::optional<virtio::VsockOptions> vsock;     // a virtio-vsock device (hybrid, Unix sockets)
  // KVM dirty logging of guest RAM (KVM_MEM_LOG_DIRTY_PAGES) and of the VMM's own writes to
  // it, which diff snapshots need. Costs a write fault per page after each snapshot.
  bool track_dirty_pages = false;
  // The guest's SMBIOS System Information (/sys/class/dmi/id: sys_vendor, product_name, ...).
  x86_64::SmbiosSystemInfo smbios;
};

// What PUT /snapshot/create writes (Firecracker's SnapshotCreateParams).
struct SnapshotOptions {
  std::string state_path;  // the versioned, checksummed state file (snapshot/state_file.h)
  std::string mem_path;    // guest RAM, regions concatenated (snapshot/memory_file.h)
  // Only the pages written since the previous snapshot (or since boot), at their offsets in an
  // otherwise sparse file; needs track_dirty_pages. Merge onto the full memory file it follows
  // with `tern-vmm --rebase-memory` before restoring.
  bool diff = false;
};

// What PUT /snapshot/load restores (Firecracker's SnapshotLoadParams).
struct RestoreOptions {
  std::string state_path;
  std::string mem_path;  // mapped MAP_PRIVATE: pages load lazily and clones share them
  bool track_dirty_pages = false;
  // iface_id -> host TAP name, for interfaces that must not reuse the snapshot's TAP (clones).
  std::vector<std::pair<std::string, std::string>> network_overrides;
  int console_in_fd = 0;  // as in VmConfig
  int console_out_fd = 1;
};

// Why a VM stopped.
enum class VmExit {
  kPowerOff,     // ACPI S5 through the sleep control register
  kReset,        // i8042 reset line (reboot=k) or KVM_SYSTEM_EVENT_RESET
  kTripleFault,  // KVM_EXIT_SHUTDOWN (reboot=t, or a crashed guest)
  kStopped,      // Vmm::Stop(): the host stopped it (API, graceful-shutdown timeout)
};

// A one-line description of `exit` for the log ("guest powered off (ACPI S5)").
const char* Describe(VmExit exit);

// A short, stable name of `exit` for programs ("power_off", "reset", "triple_fault", "stopped").
const char* ExitReasonName(VmExit exit);

// Counters of accesses no device claimed (read as all-ones, writes dropped).
struct UnknownAccessCounts {
  uint64_t port_io = 0;
  uint64_t mmio = 0;
};

// Where a VM is in its life: kCreated (built, no thread runs), kRunning, kPaused (every vCPU
// parked outside KVM_RUN, device processing stopped), kStopped (threads joined).
enum class VmState { kCreated, kRunning, kPaused, kStopped };

// Number of KVM exit reasons counted (KVM_EXIT_* values below this; larger ones count as the
// last).
inline constexpr size_t kExitReasonSlots = 64;

class Vmm {
 public:
  // Checks the host (hardware virtualization, KVM capabilities, vCPU limit), then builds the
  // VM: memory, irqchip, PIT, devices, kernel, initrd, boot_params, MP/ACPI tables, vCPUs.
  // Errors name the bad input (path, flag) or the failing KVM call. No vCPU runs yet.
  static Result<std::unique_ptr<Vmm>> Create(const VmConfig& config);
  // Builds a VM from a snapshot (in a process of its own, or several times for clones): reads
  // and checks the state file (format version, CPU), maps the memory file privately, creates
  // the same devices and restores KVM's and every device's state. Start() it paused or not.
  // Errors name the file and the first thing that does not fit; nothing of a half-restored VM
  // ever runs.
  static Result<std::unique_ptr<Vmm>> Restore(const RestoreOptions& options);

  Vmm(const Vmm&) = delete;
  Vmm& operator=(const Vmm&) = delete;
  ~Vmm();

  // Start() then Wait().
  Result<VmExit> Run();
  // Starts the device thread and one thread per vCPU (kCreated -> kRunning, or with `paused`
  // -> kPaused: the threads wait for Resume()). Call once.
  void Start(bool paused = false);
  // Forwards console input on the calling thread until the guest powers off, resets or
  // triple-faults, a vCPU fails (an error), or Stop(); then stops and joins every thread
  // (-> kStopped) and returns the outcome. Call once, after Start().
  Result<VmExit> Wait();

  // kRunning -> kPaused: kicks every vCPU out of KVM_RUN (with kvm_run.immediate_exit, so KVM
  // completes a pending port I/O or MMIO first) and parks it, then stops the device loop.
  // Returns when all are parked. EINVAL error in another state. Thread-safe (API thread).
  Status Pause();
  // kPaused -> kRunning. EINVAL error in another state. Thread-safe.
  Status Resume();
  // Ends the VM from another thread: Wait() returns VmExit::kStopped (unless the guest already
  // stopped it). Thread-safe, idempotent; works while paused.
  void Stop();

  // Presses the ACPI power button (a Generic Event Device notifying \_SB.PWRB): a guest with
  // ACPI button support (systemd-logind) shuts down cleanly and powers off (then Wait()
  // returns kPowerOff); a guest without does nothing, so callers pair it with a timeout.
  // EINVAL unless running. Thread-safe.
  Status PressPowerButton();

  // Writes a snapshot of the paused VM: completes in-flight device I/O, then writes the memory
  // file (full: every non-zero page; diff: the pages dirtied since the last snapshot) and the
  // state file (vCPUs, irqchip, PIT, clock, devices, queues). EINVAL unless paused, or for a
  // diff without track_dirty_pages; I/O errors name the file. The VM stays paused. Thread-safe.
  Status SaveSnapshot(const SnapshotOptions& options);

  VmState state() const;
  // The virtio-balloon device, or null when the VM has none. Its methods are thread-safe.
  virtio::Balloon* balloon() const { return balloon_.get(); }
  UnknownAccessCounts unknown_accesses() const;
  // Number of KVM_RUN returns per exit reason (index: KVM_EXIT_*), since Start().
  std::array<uint64_t, kExitReasonSlots> exit_counts() const;
  // The virtio devices' counters (VirtioDevice::Metrics()), a key per kind of device the VM
  // has: {"block": [disk, ...], "net": [interface, ...], "balloon": {...}, "vsock": {...}},
  // disks and interfaces in the configuration's order. A disk's entry also has "drive" (its
  // serial, which the API sets to the drive_id, else its index in VmConfig::disks) and "path";
  // an interface's has "iface" (NetConfig::id, else its index in VmConfig::nets) and "tap".
  // Thread-safe; never waits for the device thread (works while paused).
  nlohmann::json DeviceMetrics() const;

 private:
  struct Vcpu {
    kvm::Vcpu vcpu;
    kvm::CpuidEntries cpuid;  // what KVM_SET_CPUID2 got, saved in snapshots
    std::thread thread;
  };
  Vmm(const VmConfig& config, kvm::Kvm kvm, kvm::Vm vm, GuestMemory memory, EventFd stop_event);
  // /dev/kvm on a host that can run `vcpus` vCPUs of unmodified guests, or the first reason not.
  static Result<kvm::Kvm> OpenKvm(uint32_t vcpus);

  Status SetupMemory();
  Status SetupDevices();
  Status SetupPci();
  Status AddVirtioDevice(std::shared_ptr<virtio::VirtioDevice> device);
  Status LoadGuest();
  Status CreateVcpus(bool boot = true);
  Status RestoreState(const nlohmann::json& state);
  Result<nlohmann::json> SaveStateLocked();
  Result<std::vector<std::vector<uint64_t>>> TakeDirtyPages();
  void VcpuLoop(Vcpu& vcpu);
  // Waits while a pause is requested; clears the vCPU's immediate_exit before it returns.
  void ParkVcpu(Vcpu& vcpu);
  bool HandleExit(Vcpu& vcpu);
  void HandlePortIo(kvm_run* run);
  void HandleMmio(kvm_run* run);
  void RequestStop(Result<VmExit> outcome);
  void StopVcpus();
  void StopDevices();
  void PumpConsoleInput(bool& input_open);

  VmConfig config_;
  kvm::Kvm kvm_;
  kvm::Vm vm_;
  GuestMemory memory_;
  Bus io_bus_{"port I/O bus"};
  Bus mmio_bus_{"MMIO bus"};
  std::shared_ptr<Serial> serial_;
  std::shared_ptr<I8042> i8042_;
  std::shared_ptr<AcpiGed> acpi_ged_;
  std::shared_ptr<kvm::GsiRouting> gsi_routing_;
  std::shared_ptr<pci::PciRoot> pci_root_;
  std::unique_ptr<EventLoop> device_loop_;  // virtio queue processing, on device_thread_
  std::thread device_thread_;
  std::vector<std::shared_ptr<virtio::VirtioPciDevice>> virtio_devices_;
  std::shared_ptr<virtio::Balloon> balloon_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;

  std::atomic<bool> stopping_{false};
  // Pause handshake: Pause() sets pause_requested_ and waits for parked_vcpus_ == vcpus.
  mutable std::mutex pause_mutex_;
  std::condition_variable pause_changed_;
  std::atomic<bool> pause_requested_{false};
  uint32_t parked_vcpus_ = 0;          // guarded by pause_mutex_
  VmState state_ = VmState::kCreated;  // guarded by pause_mutex_
  std::array<std::atomic<uint64_t>, kExitReasonSlots> exit_counts_{};
  std::atomic<uint64_t> unknown_port_io_{0};
  std::atomic<uint64_t> unknown_mmio_{0};
  std::mutex outcome_mutex_;
  std::optional<Result<VmExit>> outcome_;  // the first stop request wins
  EventFd stop_event_;
  uint64_t entry_ = 0;  // the kernel's 64-bit entry point, for the boot vCPU
};

}  // namespace tern
