// Split virtqueues (virtio 1.2 §2.7): the driver-set ring addresses, popping descriptor chains
// from the available ring (direct and indirect descriptors, §2.7.5 and §2.7.5.3), returning
// them through the used ring with the memory ordering §2.7.13 requires, and notification
// suppression (VIRTQ_AVAIL_F_NO_INTERRUPT and VIRTIO_F_EVENT_IDX, §2.7.7 and §2.7.10).
// The guest owns every byte these read: every address, length, index and flag is validated;
// a malformed chain is an error, never an access outside guest memory.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <vector>

#include "base/guest_memory.h"
#include "base/result.h"

namespace tern::virtio {

// Descriptor flags (struct virtq_desc, §2.7.5).
inline constexpr uint16_t kDescFNext = 1;      // VIRTQ_DESC_F_NEXT
inline constexpr uint16_t kDescFWrite = 2;     // VIRTQ_DESC_F_WRITE
inline constexpr uint16_t kDescFIndirect = 4;  // VIRTQ_DESC_F_INDIRECT
// Available ring flags (§2.7.6) and used ring flags (§2.7.8).
inline constexpr uint16_t kAvailFNoInterrupt = 1;  // VIRTQ_AVAIL_F_NO_INTERRUPT
inline constexpr uint16_t kUsedFNoNotify = 1;      // VIRTQ_USED_F_NO_NOTIFY

// One buffer of a descriptor chain, after indirect tables are expanded.
struct Buffer {
  uint64_t addr = 0;        // guest-physical address
  uint32_t len = 0;         // bytes
  bool write_only = false;  // VIRTQ_DESC_F_WRITE: the device writes it
};

// A chain popped from the available ring. Device-readable buffers come first, then
// device-writable ones (§2.7.4.2; a chain that mixes them otherwise is rejected by Pop()).
struct DescriptorChain {
  uint16_t head = 0;  // index of the head descriptor: what AddUsed() returns to the driver
  std::vector<Buffer> buffers;
  uint64_t readable_bytes = 0;  // sum of the device-readable buffers' lengths
  uint64_t writable_bytes = 0;  // sum of the device-writable buffers' lengths
};

class Queue {
 public:
  static constexpr uint16_t kMaxSize = 32768;  // §2.7: Queue Size is at most 32768

  // A queue the device offers with at most `max_size` entries (a power of two <= kMaxSize).
  explicit Queue(uint16_t max_size);

  // Registers the transport writes while the driver sets the queue up (virtio 1.2 §4.1.4.3).
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  uint64_t desc_table() const { return desc_table_; }
  void set_desc_table(uint64_t gpa) { desc_table_ = gpa; }
  uint64_t avail_ring() const { return avail_ring_; }
  void set_avail_ring(uint64_t gpa) { avail_ring_ = gpa; }
  uint64_t used_ring() const { return used_ring_; }
  void set_used_ring(uint64_t gpa) { used_ring_ = gpa; }
  bool ready() const { return ready_; }
  void set_ready(bool ready) { ready_ = ready; }

  // Checks the driver's settings when it enables the queue: size a power of two in
  // 1..max_size(), rings aligned (§2.7: 16/2/4 bytes) and wholly inside guest memory.
  // EINVAL/EFAULT error otherwise (the transport then refuses to enable it).
  Status Validate(const GuestMemory& memory) const;

  // Features that change ring behaviour: VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC.
  // Set by the transport at activation from the negotiated features.
  void set_event_idx(bool enabled) { event_idx_ = enabled; }
  void set_indirect(bool enabled) { indirect_ = enabled; }

  // Pops the next available chain, or nullopt when the driver has made none available.
  // Errors (EINVAL/EFAULT, naming the fault) for a malformed chain: a loop or a chain longer
  // than size() descriptors, an index >= size(), an address range outside guest memory, a
  // readable buffer after a writable one, a nested or misused indirect table, a total length
  // above 4 GiB, or an avail index that moved more than size() ahead. After an error the
  // device should stop using the queue (set DEVICE_NEEDS_RESET).
  Result<std::optional<DescriptorChain>> Pop(const GuestMemory& memory);

  // Puts (`head`, `len`) in the used ring and publishes it (write barrier before the idx
  // store). `len` is the number of bytes the device wrote into the chain's writable buffers.
  Status AddUsed(const GuestMemory& memory, uint16_t head, uint32_t len);

  // After one or more AddUsed(): whether the driver wants a used buffer notification now
  // (§2.7.10: VIRTQ_AVAIL_F_NO_INTERRUPT, or with EVENT_IDX the used_event crossing).
  Result<bool> NeedsNotification(const GuestMemory& memory);

  // With EVENT_IDX: writes avail_event so the driver notifies on its next buffer; returns
  // true if buffers became available meanwhile (the caller then pops again, §2.7.10).
  // Without EVENT_IDX it only reports whether buffers are available.
  Result<bool> EnableNotification(const GuestMemory& memory);

  // Back to the state after construction (driver reset): size = max_size(), addresses 0, not
  // ready, indices 0, EVENT_IDX and INDIRECT_DESC off.
  void Reset();

  // The registers and ring positions (next avail, used idx, last signalled used idx) for a
  // snapshot, taken while no chain is being processed (the VM is paused). RestoreState() puts
  // them back into a queue of the same max_size(). Errors (EINVAL, naming the field): a
  // malformed state, or one no driver could have set (a size that is not a power of two in
  // 1..max_size(), or a ready queue whose rings fail Validate()).
  nlohmann::json SaveState() const;
  Status RestoreState(const nlohmann::json& state, const GuestMemory& memory);

 private:
  // Walks the chain starting at descriptor `head` of the table at host address `desc_table`.
  Result<DescriptorChain> ReadChain(const GuestMemory& memory, const uint8_t* desc_table,
                                    uint16_t head) const;

  uint16_t max_size_;
  uint16_t size_;
  uint64_t desc_table_ = 0;
  uint64_t avail_ring_ = 0;
  uint64_t used_ring_ = 0;
  bool ready_ = false;
  bool event_idx_ = false;
  bool indirect_ = false;
  uint16_t next_avail_ = 0;      // the device's shadow of avail idx: next entry to pop
  uint16_t next_used_ = 0;       // the device's used idx
  uint16_t signalled_used_ = 0;  // used idx at the last notification (EVENT_IDX)
  bool signalled_used_valid_ = false;
};

// What ProcessAvailable() did.
struct Processed {
  bool used = false;  // some chain went to the used ring: ask NeedsNotification()
  bool more = false;  // it stopped at its bound, maybe with more available: call it again
};

// Pops the chains the driver has made available on `queue` and passes each to `process`, which
// handles it and returns how many bytes it wrote into the chain's device-writable buffers; the
// chain then goes to the used ring with that length. When none is left it re-enables driver
// notifications (EnableNotification()) and goes on if chains arrived meanwhile. At most size()
// chains per call (a bound on the work, not on what is used), so that a driver that keeps adding
// buffers cannot hold the event loop: with `more` set, the caller processes again later (e.g. by
// signalling its own queue eventfd, which lets the loop serve other descriptors first). Stops at
// the first error of the queue or of `process`.
Result<Processed> ProcessAvailable(
    Queue& queue, const GuestMemory& memory,
    const std::function<Result<uint32_t>(const DescriptorChain& chain)>& process);

// Host views of `chain`'s device-readable buffers, or of its device-writable ones, in chain
// order, for readv(2)/writev(2)/preadv(2) or direct access. EFAULT error if a buffer is not in
// `memory` (Pop() checked that it is in the memory it was given). Zero-length buffers give
// zero-length iovecs.
Result<std::vector<iovec>> ReadableIovecs(const GuestMemory& memory, const DescriptorChain& chain);
Result<std::vector<iovec>> WritableIovecs(const GuestMemory& memory, const DescriptorChain& chain);

// Byte ranges of the bytes `iovecs` hold one after another (a chain's buffers, as the two
// functions above return them). Each returns false if `iovecs` end before the range does;
// zero-length ranges always succeed.
//
// Appends to `out` the iovecs covering bytes [offset, offset + len); on false `out` holds those
// of the part that exists.
bool SliceIovecs(std::span<const iovec> iovecs, uint64_t offset, uint64_t len,
                 std::vector<iovec>& out);
// Copies `bytes` to bytes [offset, offset + bytes.size()); on false, what fits.
bool CopyToIovecs(std::span<const iovec> iovecs, uint64_t offset, std::span<const uint8_t> bytes);
// Copies bytes [offset, offset + bytes.size()) to `bytes`; on false, what exists.
bool CopyFromIovecs(std::span<const iovec> iovecs, uint64_t offset, std::span<uint8_t> bytes);

}  // namespace tern::virtio
