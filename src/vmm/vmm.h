// A running Tern VM: guest memory, the KVM VM and vCPUs, legacy devices and firmware tables,
// assembled from a VmConfig; one thread per vCPU and an event loop on the caller's thread that
// forwards console input and waits for the guest to power off, reset or fail.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/event_fd.h"
#include "base/event_loop.h"
#include "base/guest_memory.h"
#include "base/result.h"
#include "devices/bus.h"
#include "devices/serial.h"
#include "kvm/gsi_routing.h"
#include "kvm/kvm.h"
#include "net/tap.h"
#include "pci/pci_root.h"
#include "virtio/block.h"
#include "virtio/pci_transport.h"

namespace tern {

// A virtio-net interface: the host TAP device and the MAC address offered to the guest.
struct NetConfig {
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
};

// Why a VM stopped.
enum class VmExit {
  kPowerOff,     // ACPI S5 through the sleep control register
  kReset,        // i8042 reset line (reboot=k) or KVM_SYSTEM_EVENT_RESET
  kTripleFault,  // KVM_EXIT_SHUTDOWN (reboot=t, or a crashed guest)
};

// A one-line description of `exit` for the log ("guest powered off (ACPI S5)").
const char* Describe(VmExit exit);

// Counters of accesses no device claimed (read as all-ones, writes dropped).
struct UnknownAccessCounts {
  uint64_t port_io = 0;
  uint64_t mmio = 0;
};

class Vmm {
 public:
  // Checks the host (hardware virtualization, KVM capabilities, vCPU limit), then builds the
  // VM: memory, irqchip, PIT, devices, kernel, initrd, boot_params, MP/ACPI tables, vCPUs.
  // Errors name the bad input (path, flag) or the failing KVM call. No vCPU runs yet.
  static Result<std::unique_ptr<Vmm>> Create(const VmConfig& config);

  Vmm(const Vmm&) = delete;
  Vmm& operator=(const Vmm&) = delete;
  ~Vmm();

  // Runs the vCPUs until the guest powers off, resets or triple-faults (returned), or a vCPU
  // fails (an error). All vCPU threads have stopped when it returns. Call once.
  Result<VmExit> Run();

  UnknownAccessCounts unknown_accesses() const;

 private:
  struct Vcpu;
  Vmm(const VmConfig& config, kvm::Kvm kvm, kvm::Vm vm, GuestMemory memory, EventFd stop_event);

  Status SetupMemory();
  Status SetupDevices();
  Status SetupPci();
  Status AddVirtioDevice(std::shared_ptr<virtio::VirtioDevice> device);
  Status LoadGuest();
  Status CreateVcpus();
  void VcpuLoop(Vcpu& vcpu);
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
  std::shared_ptr<kvm::GsiRouting> gsi_routing_;
  std::shared_ptr<pci::PciRoot> pci_root_;
  std::unique_ptr<EventLoop> device_loop_;  // virtio queue processing, on device_thread_
  std::thread device_thread_;
  std::vector<std::shared_ptr<virtio::VirtioPciDevice>> virtio_devices_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> unknown_port_io_{0};
  std::atomic<uint64_t> unknown_mmio_{0};
  std::mutex outcome_mutex_;
  std::optional<Result<VmExit>> outcome_;  // the first stop request wins
  EventFd stop_event_;
  uint64_t entry_ = 0;  // the kernel's 64-bit entry point, for the boot vCPU
};

}  // namespace tern
