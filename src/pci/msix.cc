// MSI-X table, Pending Bit Array, masking and delivery (PCI Local Bus 3.0 §6.8.2).
#include "pci/msix.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "base/json_fields.h"

namespace tern::pci {
namespace {

// Dword fields of a table entry, PCI 3.0 §6.8.2.6 Figure 6-11.
constexpr uint64_t kAddressLowField = 0;
constexpr uint64_t kAddressHighField = 1;
constexpr uint64_t kDataField = 2;
constexpr uint64_t kVectorControlField = 3;
constexpr uint32_t kAddressLowMask = ~uint32_t{0x3};  // Message Address bits 1:0 are zero
constexpr uint8_t kMaxBir = 5;

// Whether a table or PBA access of `size` bytes at `offset` is an aligned dword or qword inside
// a structure of `limit` bytes (PCI 3.0 §6.8.2: software uses only such accesses).
bool ValidAccess(uint64_t offset, size_t size, uint64_t limit) {
  return (size == 4 || size == 8) && offset % size == 0 && offset < limit && size <= limit - offset;
}

void LogDeliveryError(uint16_t vector, const Status& status) {
  if (!status.ok()) {
    spdlog::warn("MSI-X vector {}: delivery failed: {}", vector, status.error().ToString());
  }
}

}  // namespace

Result<std::unique_ptr<Msix>> Msix::Create(const MsixLayout& layout,
                                           std::shared_ptr<MsiDelivery> delivery) {
  if (layout.num_vectors == 0 || layout.num_vectors > kMaxVectors) {
    return Error("MSI-X: vector count " + std::to_string(layout.num_vectors) + " is not in 1..2048",
                 EINVAL);
  }
  if (layout.bar > kMaxBir || layout.table_offset % 8 != 0 || layout.pba_offset % 8 != 0) {
    return Error("MSI-X: table or PBA BIR/offset is invalid", EINVAL);
  }
  std::unique_ptr<Msix> msix(new Msix(layout, std::move(delivery)));
  const uint64_t table_end = layout.table_offset + msix->table_bytes();
  const uint64_t pba_end = layout.pba_offset + msix->pba_bytes();
  if (layout.table_offset < pba_end && layout.pba_offset < table_end) {
    return Error("MSI-X: table and PBA overlap", EINVAL);
  }
  if (msix->delivery_ == nullptr) return Error("MSI-X: no delivery", EINVAL);
  return msix;
}

Msix::Msix(const MsixLayout& layout, std::shared_ptr<MsiDelivery> delivery)
    : layout_(layout), delivery_(std::move(delivery)), vectors_(layout.num_vectors) {}

Result<uint16_t> Msix::AddCapability(ConfigSpace& config) {
  // Bytes after ID and Next Pointer, PCI 3.0 §6.8.2 Figure 6-10: Message Control (table size
  // N-1 in bits 10:0), Table Offset/BIR, PBA Offset/BIR.
  uint8_t body[10] = {};
  StoreLe(std::span(body, 2), layout_.num_vectors - 1u);
  StoreLe(std::span(body + 2, 4), layout_.table_offset | layout_.bar);
  StoreLe(std::span(body + 6, 4), layout_.pba_offset | layout_.bar);
  uint8_t writable[10] = {};
  writable[1] = (kMessageControlEnable | kMessageControlFunctionMask) >> 8;
  return config.AddCapability(kCapabilityIdMsix, body, writable);
}

void Msix::SetMessageControl(uint16_t control) {
  std::lock_guard lock(mutex_);
  enabled_ = (control & kMessageControlEnable) != 0;
  function_masked_ = (control & kMessageControlFunctionMask) != 0;
  DeliverPendingLocked();
}

bool Msix::DeliverableLocked(const Vector& vector) const {
  return enabled_ && !function_masked_ && !(vector.control & kVectorControlMask);
}

Status Msix::SendLocked(uint16_t index) {
  Vector& vector = vectors_[index];
  if (vector.delivered_message != vector.message) {
    TERN_RETURN_IF_ERROR(delivery_->SetMessage(index, vector.message));
    vector.delivered_message = vector.message;
  }
  return delivery_->Signal(index);
}

void Msix::DeliverPendingLocked() {
  for (uint16_t i = 0; i < vectors_.size(); ++i) {
    if (vectors_[i].pending && DeliverableLocked(vectors_[i])) {
      vectors_[i].pending = false;
      LogDeliveryError(i, SendLocked(i));
    }
  }
}

void Msix::ReadTable(uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (!ValidAccess(offset, data.size(), table_bytes())) return;
  std::lock_guard lock(mutex_);
  for (size_t done = 0; done < data.size(); done += 4) {
    const Vector& vector = vectors_[(offset + done) / kTableEntrySize];
    uint32_t value = 0;
    switch ((offset + done) % kTableEntrySize / 4) {
      case kAddressLowField:
        value = static_cast<uint32_t>(vector.message.address);
        break;
      case kAddressHighField:
        value = static_cast<uint32_t>(vector.message.address >> 32);
        break;
      case kDataField:
        value = vector.message.data;
        break;
      case kVectorControlField:
        value = vector.control;
        break;
    }
    StoreLe(data.subspan(done, 4), value);
  }
}

void Msix::WriteTable(uint64_t offset, std::span<const uint8_t> data) {
  if (!ValidAccess(offset, data.size(), table_bytes())) return;
  std::lock_guard lock(mutex_);
  for (size_t done = 0; done < data.size(); done += 4) {
    WriteTableDword(offset + done, static_cast<uint32_t>(LoadLe(data.subspan(done, 4))));
  }
}

void Msix::WriteTableDword(uint64_t offset, uint32_t value) {
  const auto index = static_cast<uint16_t>(offset / kTableEntrySize);
  Vector& vector = vectors_[index];
  switch (offset % kTableEntrySize / 4) {
    case kAddressLowField:
      vector.message.address =
          (vector.message.address & ~uint64_t{0xffffffff}) | (value & kAddressLowMask);
      break;
    case kAddressHighField:
      vector.message.address = (vector.message.address & 0xffffffff) | (uint64_t{value} << 32);
      break;
    case kDataField:
      vector.message.data = value;
      break;
    case kVectorControlField:
      vector.control = value & kVectorControlMask;
      if (vector.pending && DeliverableLocked(vector)) {
        vector.pending = false;
        LogDeliveryError(index, SendLocked(index));
      }
      break;
  }
}

void Msix::ReadPba(uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (!ValidAccess(offset, data.size(), pba_bytes())) return;
  std::lock_guard lock(mutex_);
  uint64_t bits = 0;
  for (size_t bit = 0; bit < data.size() * 8; ++bit) {
    const uint64_t index = offset * 8 + bit;
    if (index < vectors_.size() && vectors_[index].pending) bits |= uint64_t{1} << bit;
  }
  StoreLe(data, bits);
}

Status Msix::Trigger(uint16_t vector) {
  if (vector >= layout_.num_vectors) {
    return Error("MSI-X: vector " + std::to_string(vector) + " out of range", EINVAL);
  }
  std::lock_guard lock(mutex_);
  if (!DeliverableLocked(vectors_[vector])) {
    vectors_[vector].pending = true;
    return Ok();
  }
  return SendLocked(vector);
}

bool Msix::enabled() const {
  std::lock_guard lock(mutex_);
  return enabled_;
}

bool Msix::masked(uint16_t vector) const {
  std::lock_guard lock(mutex_);
  return vector >= vectors_.size() || function_masked_ ||
         (vectors_[vector].control & kVectorControlMask);
}

nlohmann::json Msix::SaveState() const {
  std::lock_guard lock(mutex_);
  nlohmann::json vectors = nlohmann::json::array();
  for (const Vector& vector : vectors_) {
    vectors.push_back({{"address", vector.message.address},
                       {"data", vector.message.data},
                       {"control", vector.control},
                       {"pending", vector.pending}});
  }
  return vectors;
}

Status Msix::RestoreState(const nlohmann::json& state) {
  if (!state.is_array() || state.size() != vectors_.size()) {
    return Error("MSI-X state must list " + std::to_string(vectors_.size()) + " vectors", EINVAL);
  }
  std::vector<Vector> vectors(vectors_.size());
  for (size_t i = 0; i < vectors.size(); ++i) {
    TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(state[i], "MSI-X vector " + std::to_string(i),
                                                    {"address", "data", "control", "pending"}));
    TERN_RETURN_IF_ERROR(fields.Read("address", vectors[i].message.address, true));
    TERN_RETURN_IF_ERROR(fields.Read("data", vectors[i].message.data, true, 0, UINT32_MAX));
    TERN_RETURN_IF_ERROR(fields.Read("control", vectors[i].control, true, 0, UINT32_MAX));
    TERN_RETURN_IF_ERROR(fields.Read("pending", vectors[i].pending, true));
  }
  std::lock_guard lock(mutex_);
  vectors_ = std::move(vectors);
  return Ok();
}

}  // namespace tern::pci
