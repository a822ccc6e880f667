// The VM's GSI routing table (KVM_SET_GSI_ROUTING, Documentation/virt/kvm/api.rst §4.52) and the
// MSI-X delivery it implements: each MSI-X vector of a device gets its own GSI (24 and up), an
// eventfd bound to that GSI with KVM_IRQFD, and an MSI route carrying the vector's address and
// data. Signalling a vector is one eventfd write, from any thread.
//
// KVM_SET_GSI_ROUTING replaces the whole table, including the routes KVM_CREATE_IRQCHIP sets up
// (arch/x86/kvm/irq_comm.c, default_routing[]: GSI n < 16 to IOAPIC pin n and PIC pin n % 8 of
// the master or slave, GSI 16..23 to IOAPIC pin n). Every commit therefore carries those routes
// first, so irqfds on legacy GSIs (COM1 on GSI 4) keep working.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "base/event_fd.h"
#include "base/result.h"
#include "kvm/kvm.h"
#include "kvm/linux_kvm.h"
#include "pci/msix.h"

namespace tern::kvm {

// The VM operations GsiRouting uses: VmIrqTarget (a kvm::Vm) in production, a recorder in
// tests. Implementations are thread-safe.
class IrqTarget {
 public:
  virtual ~IrqTarget() = default;
  virtual Status SetGsiRouting(std::span<const kvm_irq_routing_entry> entries) = 0;
  virtual Status Irqfd(const EventFd& event, uint32_t gsi) = 0;
  virtual Status IrqfdDeassign(const EventFd& event, uint32_t gsi) = 0;
};

// IrqTarget calling the Vm's ioctls. `vm` must outlive it.
class VmIrqTarget : public IrqTarget {
 public:
  explicit VmIrqTarget(const Vm& vm) : vm_(vm) {}
  Status SetGsiRouting(std::span<const kvm_irq_routing_entry> entries) override {
    return vm_.SetGsiRouting(entries);
  }
  Status Irqfd(const EventFd& event, uint32_t gsi) override { return vm_.Irqfd(event, gsi); }
  Status IrqfdDeassign(const EventFd& event, uint32_t gsi) override {
    return vm_.IrqfdDeassign(event, gsi);
  }

 private:
  const Vm& vm_;
};

class MsiVectors;

// The routing table. Create one per VM after Vm::CreateIrqchip. Thread-safe: one lock orders
// allocations and commits.
class GsiRouting : public std::enable_shared_from_this<GsiRouting> {
 public:
  static constexpr uint32_t kNumIrqchipGsis = 24;  // IOAPIC pins; GSIs 0..15 also reach the PIC
  static constexpr uint32_t kFirstMsiGsi = kNumIrqchipGsis;
  static constexpr uint32_t kMaxGsi = 4095;  // KVM_MAX_IRQ_ROUTES - 1 on x86

  static std::shared_ptr<GsiRouting> Create(std::shared_ptr<IrqTarget> target);

  // Allocates `count` (>= 1) vectors: a free GSI, an eventfd and its irqfd each; no route until
  // the vector's first SetMessage. Errors: EINVAL for count 0; ENOSPC when GSIs run out; eventfd
  // or KVM_IRQFD failures (nothing stays allocated then).
  Result<std::shared_ptr<MsiVectors>> AllocateMsiVectors(uint16_t count);

  // The table a commit installs: the irqchip routes (in KVM's default_routing order), then the
  // MSI routes by GSI.
  std::vector<kvm_irq_routing_entry> Entries() const;

 private:
  friend class MsiVectors;
  explicit GsiRouting(std::shared_ptr<IrqTarget> target) : target_(std::move(target)) {}
  Status SetMsiRoute(uint32_t gsi, const pci::MsiMessage& message);
  void Release(std::span<const uint32_t> gsis, std::span<const EventFd> events);
  std::vector<kvm_irq_routing_entry> EntriesLocked() const;

  const std::shared_ptr<IrqTarget> target_;
  mutable std::mutex mutex_;
  std::vector<bool> allocated_ = std::vector<bool>(kMaxGsi + 1);  // MSI GSIs in use
  std::map<uint32_t, kvm_irq_routing_entry> msi_routes_;          // by GSI
};

// One device's MSI-X vectors (pci::MsiDelivery): vector i is GSI gsi(i) and eventfd event(i).
// Destruction unbinds the irqfds, removes the routes and frees the GSIs. Thread-safe.
class MsiVectors : public pci::MsiDelivery {
 public:
  ~MsiVectors() override;

  // Points the vector's GSI at `message` (an MSI route) and commits the table. Errors: EINVAL
  // for a vector out of range; KVM_SET_GSI_ROUTING failures.
  Status SetMessage(uint16_t vector, const pci::MsiMessage& message) override;
  // Writes the vector's eventfd. Errors: EINVAL for a vector out of range.
  Status Signal(uint16_t vector) override;

  uint16_t size() const { return static_cast<uint16_t>(gsis_.size()); }
  uint32_t gsi(uint16_t vector) const { return gsis_.at(vector); }
  const EventFd& event(uint16_t vector) const { return events_.at(vector); }

 private:
  friend class GsiRouting;
  MsiVectors(std::shared_ptr<GsiRouting> routing, std::vector<uint32_t> gsis,
             std::vector<EventFd> events)
      : routing_(std::move(routing)), gsis_(std::move(gsis)), events_(std::move(events)) {}

  const std::shared_ptr<GsiRouting> routing_;
  const std::vector<uint32_t> gsis_;
  const std::vector<EventFd> events_;
};

}  // namespace tern::kvm
