// The GSI routing table: KVM's default irqchip routes plus one MSI route per MSI-X vector.
#include "kvm/gsi_routing.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <string>

namespace tern::kvm {
namespace {

constexpr uint32_t kNumPicGsis = 16;

kvm_irq_routing_entry IrqchipRoute(uint32_t gsi, uint32_t irqchip, uint32_t pin) {
  kvm_irq_routing_entry entry{};
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_IRQCHIP;
  entry.u.irqchip.irqchip = irqchip;
  entry.u.irqchip.pin = pin;
  return entry;
}

kvm_irq_routing_entry MsiRoute(uint32_t gsi, const pci::MsiMessage& message) {
  kvm_irq_routing_entry entry{};
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_MSI;
  entry.u.msi.address_lo = static_cast<uint32_t>(message.address);
  entry.u.msi.address_hi = static_cast<uint32_t>(message.address >> 32);
  entry.u.msi.data = message.data;
  return entry;
}

Error VectorOutOfRange(uint16_t vector) {
  return Error("MSI vector " + std::to_string(vector) + " out of range", EINVAL);
}

}  // namespace

std::shared_ptr<GsiRouting> GsiRouting::Create(std::shared_ptr<IrqTarget> target) {
  return std::shared_ptr<GsiRouting>(new GsiRouting(std::move(target)));
}

std::vector<kvm_irq_routing_entry> GsiRouting::Entries() const {
  std::lock_guard lock(mutex_);
  return EntriesLocked();
}

std::vector<kvm_irq_routing_entry> GsiRouting::EntriesLocked() const {
  // KVM's default_routing[] (arch/x86/kvm/irq_comm.c), in its order.
  std::vector<kvm_irq_routing_entry> entries;
  for (uint32_t gsi = 0; gsi < kNumIrqchipGsis; ++gsi) {
    entries.push_back(IrqchipRoute(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    if (gsi < kNumPicGsis) {
      entries.push_back(
          IrqchipRoute(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8));
    }
  }
  for (const auto& [gsi, entry] : msi_routes_) entries.push_back(entry);
  return entries;
}

Result<std::shared_ptr<MsiVectors>> GsiRouting::AllocateMsiVectors(uint16_t count) {
  if (count == 0) return Error("MSI vector allocation of 0 vectors", EINVAL);
  std::vector<uint32_t> gsis;
  std::vector<EventFd> events;
  std::lock_guard lock(mutex_);
  auto release = [&] {
    for (size_t i = 0; i < events.size(); ++i) (void)target_->IrqfdDeassign(events[i], gsis[i]);
    for (uint32_t gsi : gsis) allocated_[gsi] = false;
  };
  for (uint32_t gsi = kFirstMsiGsi; gsi <= kMaxGsi && gsis.size() < count; ++gsi) {
    if (allocated_[gsi]) continue;
    allocated_[gsi] = true;
    gsis.push_back(gsi);
  }
  if (gsis.size() < count) {
    release();
    return Error("no free GSIs for " + std::to_string(count) + " MSI vectors", ENOSPC);
  }
  for (uint32_t gsi : gsis) {
    Result<EventFd> event = EventFd::Create();
    Status bound = event.ok() ? target_->Irqfd(*event, gsi) : Status(event.error());
    if (!bound.ok()) {
      release();
      return bound.error();
    }
    events.push_back(std::move(event).value());
  }
  return std::shared_ptr<MsiVectors>(
      new MsiVectors(shared_from_this(), std::move(gsis), std::move(events)));
}

Status GsiRouting::SetMsiRoute(uint32_t gsi, const pci::MsiMessage& message) {
  std::lock_guard lock(mutex_);
  std::map<uint32_t, kvm_irq_routing_entry> previous = msi_routes_;
  msi_routes_.insert_or_assign(gsi, MsiRoute(gsi, message));
  Status status = target_->SetGsiRouting(EntriesLocked());
  if (!status.ok()) msi_routes_ = std::move(previous);  // the table KVM still has
  return status;
}

void GsiRouting::Release(std::span<const uint32_t> gsis, std::span<const EventFd> events) {
  std::lock_guard lock(mutex_);
  bool had_routes = false;
  for (size_t i = 0; i < gsis.size(); ++i) {
    Status status = target_->IrqfdDeassign(events[i], gsis[i]);
    if (!status.ok()) spdlog::warn("GSI {}: {}", gsis[i], status.error().ToString());
    had_routes |= msi_routes_.erase(gsis[i]) > 0;
    allocated_[gsis[i]] = false;
  }
  if (!had_routes) return;
  Status status = target_->SetGsiRouting(EntriesLocked());
  if (!status.ok()) spdlog::warn("releasing MSI routes: {}", status.error().ToString());
}

MsiVectors::~MsiVectors() { routing_->Release(gsis_, events_); }

Status MsiVectors::SetMessage(uint16_t vector, const pci::MsiMessage& message) {
  if (vector >= gsis_.size()) return VectorOutOfRange(vector);
  return routing_->SetMsiRoute(gsis_[vector], message);
}

Status MsiVectors::Signal(uint16_t vector) {
  if (vector >= events_.size()) return VectorOutOfRange(vector);
  return events_[vector].Write(1);
}

}  // namespace tern::kvm
