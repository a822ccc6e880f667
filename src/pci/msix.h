// MSI-X (PCI Local Bus 3.0 §6.8.2): the capability structure, the vector table and the Pending
// Bit Array that a function maps inside one of its BARs, vector and function masking, and
// Trigger(), which delivers a vector's message or records it as pending. Delivery goes through
// MsiDelivery, implemented with KVM GSI routes and irqfds by kvm::MsiVectors (gsi_routing.h).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "pci/config_space.h"

namespace tern::pci {

// An MSI message: what the function writes where (PCI 3.0 §6.8.2.4–§6.8.2.6). On x86 the
// address is in the LAPIC range 0xfeexxxxx (Intel SDM vol. 3 §11.11).
struct MsiMessage {
  uint64_t address = 0;
  uint32_t data = 0;
  bool operator==(const MsiMessage&) const = default;
};

// Sends a function's MSI-X vectors. Vectors are the function's own numbers, 0..N-1.
// Implementations are thread-safe.
class MsiDelivery {
 public:
  virtual ~MsiDelivery() = default;
  // From now on, signalling `vector` sends `message` (called before the first Signal of a
  // vector and whenever its message changes).
  virtual Status SetMessage(uint16_t vector, const MsiMessage& message) = 0;
  // Sends `vector`'s message once.
  virtual Status Signal(uint16_t vector) = 0;
};

// Where the table and PBA live: BAR `bar` (its BIR, 0..5) at byte offsets that are multiples
// of 8 (PCI 3.0 §6.8.2.4-5). The device maps [table_offset, +table_bytes()) and
// [pba_offset, +pba_bytes()) of that BAR to ReadTable/WriteTable and ReadPba (PBA writes
// are ignored).
struct MsixLayout {
  uint16_t num_vectors = 0;  // 1..2048
  uint8_t bar = 0;
  uint32_t table_offset = 0;
  uint32_t pba_offset = 0;
};

// One function's MSI-X state. Thread-safe: one internal lock serializes table writes (vCPU
// threads), Message Control updates (config writes) and Trigger (device threads); MsiDelivery
// is called with that lock held, so it must not call back into this object.
class Msix {
 public:
  static constexpr uint16_t kMaxVectors = 2048;
  static constexpr uint32_t kTableEntrySize = 16;       // bytes per vector
  static constexpr uint16_t kMessageControlOffset = 2;  // from the capability's ID byte
  static constexpr uint16_t kMessageControlEnable = 1u << 15;
  static constexpr uint16_t kMessageControlFunctionMask = 1u << 14;
  static constexpr uint32_t kVectorControlMask = 1u << 0;

  // Errors: EINVAL for a vector count outside 1..2048, a BAR index above 5, an offset that is
  // not a multiple of 8, or overlapping table and PBA. `delivery` must not be null.
  static Result<std::unique_ptr<Msix>> Create(const MsixLayout& layout,
                                              std::shared_ptr<MsiDelivery> delivery);

  const MsixLayout& layout() const { return layout_; }
  uint64_t table_bytes() const { return uint64_t{layout_.num_vectors} * kTableEntrySize; }
  uint64_t pba_bytes() const { return (layout_.num_vectors + 63) / 64 * 8; }

  // Adds the MSI-X capability (ID 0x11; Message Control with table size N-1, enable and
  // function mask clear and writable; Table and PBA Offset/BIR) to `config`. Returns its offset.
  Result<uint16_t> AddCapability(ConfigSpace& config);
  // Applies a new Message Control value (enable bit 15, function mask bit 14; the rest is
  // ignored): call after every config write that touched the capability, with
  // config.Read16(capability + kMessageControlOffset). Vectors that become deliverable and are
  // pending are delivered and their pending bits cleared.
  void SetMessageControl(uint16_t control);

  // Table accesses: offset is relative to the table's start; aligned dword or qword accesses
  // inside the table only (others read as zero and are ignored). Entries reset to address 0,
  // data 0, masked. Unmasking a pending vector delivers it.
  void ReadTable(uint64_t offset, std::span<uint8_t> data);
  void WriteTable(uint64_t offset, std::span<const uint8_t> data);
  // PBA reads: aligned dword or qword inside the PBA (others read as zero). The PBA is
  // read-only: the device ignores writes to it.
  void ReadPba(uint64_t offset, std::span<uint8_t> data);

  // Signals `vector`: if MSI-X is enabled and neither the function nor the vector is masked,
  // sends its message; otherwise sets its pending bit (PCI 3.0 §6.8.2.9). Errors: EINVAL for a
  // vector >= num_vectors; the delivery's error.
  Status Trigger(uint16_t vector);

  // Whether the guest has set MSI-X Enable (and so the function must not use INTx).
  bool enabled() const;
  // Whether `vector` is masked by its Vector Control or the Function Mask (true if out of range).
  bool masked(uint16_t vector) const;

  // The table and pending bits, for a snapshot: one {address, data, control, pending} object
  // per vector. Enable and Function Mask live in the capability's Message Control, which the
  // owner restores with the configuration space and then passes to SetMessageControl().
  nlohmann::json SaveState() const;
  // Takes back SaveState()'s table (messages reach MsiDelivery at the next signal). EINVAL for
  // a malformed state or one with a different number of vectors.
  Status RestoreState(const nlohmann::json& state);

 private:
  struct Vector {
    MsiMessage message;
    uint32_t control = kVectorControlMask;
    bool pending = false;
    std::optional<MsiMessage> delivered_message;  // what MsiDelivery was last told
  };

  Msix(const MsixLayout& layout, std::shared_ptr<MsiDelivery> delivery);
  bool DeliverableLocked(const Vector& vector) const;
  Status SendLocked(uint16_t index);
  void DeliverPendingLocked();
  void WriteTableDword(uint64_t offset, uint32_t value);

  const MsixLayout layout_;
  const std::shared_ptr<MsiDelivery> delivery_;
  mutable std::mutex mutex_;
  std::vector<Vector> vectors_;
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace tern::pci
