// Split virtqueue processing (virtio 1.2 §2.7): ring mapping and validation, descriptor chain
// walking with indirect tables, the used ring, and notification suppression.
#include "virtio/queue.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "base/json_fields.h"

namespace tern::virtio {
namespace {

// struct virtq_desc (§2.7.5); the rings are little-endian, like the x86-64 host.
struct VirtqDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(VirtqDesc) == 16);

// Byte offsets in the rings: avail {flags, idx, ring[size], used_event}, used {flags, idx,
// ring[size] of {id, len}, avail_event}.
constexpr uint64_t kRingFlags = 0;
constexpr uint64_t kRingIdx = 2;
constexpr uint64_t kRingEntries = 4;
constexpr uint64_t kAvailEntrySize = 2;
constexpr uint64_t kUsedEntrySize = 8;

// Largest indirect table, in descriptors. Linux may make indirect tables longer than the queue
// (e.g. virtio-blk with seg_max > queue size), so this is not size().
constexpr uint32_t kMaxIndirectDescriptors = Queue::kMaxSize;

// The largest total length of a chain: the used ring reports written bytes in 32 bits.
constexpr uint64_t kMaxChainBytes = UINT32_MAX;

// Host views of the three rings of a queue.
struct Rings {
  uint8_t* desc;
  uint8_t* avail;
  uint8_t* used;
};

uint16_t LoadAcquire(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);
}
uint16_t LoadRelaxed(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_RELAXED);
}
template <typename T>
void StoreRelaxed(uint8_t* p, T value) {
  __atomic_store_n(reinterpret_cast<T*>(p), value, __ATOMIC_RELAXED);
}

// vring_need_event() (§2.7.10): whether moving the used index from `old_idx` to `new_idx`
// crossed `event`, the driver's used_event.
bool NeedEvent(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

Error ChainError(uint16_t head, const std::string& what) {
  return Error("virtqueue: chain at descriptor " + std::to_string(head) + ": " + what, EINVAL);
}

// The host view of `len` bytes of guest memory at `gpa` whose guest address must be a multiple
// of `align`.
Result<uint8_t*> MapRing(const GuestMemory& memory, const char* name, uint64_t gpa, uint64_t len,
                         uint64_t align) {
  if (gpa % align != 0) {
    return Error(
        std::string("virtqueue: ") + name + " is not " + std::to_string(align) + "-byte aligned",
        EINVAL);
  }
  Result<std::span<uint8_t>> ring = memory.Slice(gpa, len);
  if (!ring.ok()) return ring.error().WithContext(std::string("virtqueue: ") + name);
  return ring->data();
}

Result<Rings> MapRings(const Queue& queue, const GuestMemory& memory) {
  uint16_t size = queue.size();
  if (size == 0 || (size & (size - 1)) != 0 || size > queue.max_size()) {
    return Error("virtqueue: size " + std::to_string(size) + " is not a power of two in 1.." +
                     std::to_string(queue.max_size()),
                 EINVAL);
  }
  Rings rings;
  TERN_ASSIGN_OR_RETURN(rings.desc, MapRing(memory, "descriptor table", queue.desc_table(),
                                            sizeof(VirtqDesc) * size, 16));
  TERN_ASSIGN_OR_RETURN(rings.avail, MapRing(memory, "available ring", queue.avail_ring(),
                                             kRingEntries + kAvailEntrySize * size + 2, 2));
  TERN_ASSIGN_OR_RETURN(rings.used, MapRing(memory, "used ring", queue.used_ring(),
                                            kRingEntries + kUsedEntrySize * size + 2, 4));
  return rings;
}

// Adds the buffer of the non-indirect descriptor `desc` to `chain`, checking §2.7.4.2's order
// (readable before writable), that it lies in guest memory, and the chain's total length.
Status AppendBuffer(const GuestMemory& memory, const VirtqDesc& desc, DescriptorChain& chain) {
  bool write_only = (desc.flags & kDescFWrite) != 0;
  if (!write_only && !chain.buffers.empty() && chain.buffers.back().write_only) {
    return ChainError(chain.head, "device-readable buffer after a device-writable one");
  }
  if (Result<std::span<uint8_t>> bytes = memory.Slice(desc.addr, desc.len); !bytes.ok()) {
    return ChainError(chain.head, "buffer of " + std::to_string(desc.len) + " bytes at " +
                                      std::to_string(desc.addr) + " is not in guest memory");
  }
  if (chain.readable_bytes + chain.writable_bytes + desc.len > kMaxChainBytes) {
    return ChainError(chain.head, "total length exceeds 4 GiB");
  }
  chain.buffers.push_back({desc.addr, desc.len, write_only});
  (write_only ? chain.writable_bytes : chain.readable_bytes) += desc.len;
  return Ok();
}

Result<std::vector<iovec>> Iovecs(const GuestMemory& memory, const DescriptorChain& chain,
                                  bool write_only) {
  std::vector<iovec> iovecs;
  for (const Buffer& buffer : chain.buffers) {
    if (buffer.write_only != write_only) continue;
    TERN_ASSIGN_OR_RETURN(std::span<uint8_t> bytes, memory.Slice(buffer.addr, buffer.len));
    iovecs.push_back({bytes.data(), bytes.size()});
  }
  return iovecs;
}

// Calls `part(host address, length, position in the range)` for each piece of bytes
// [offset, offset + len) of `iovecs`, in order; false if `iovecs` end first.
template <typename Part>
bool ForEachPart(std::span<const iovec> iovecs, uint64_t offset, uint64_t len, Part part) {
  uint64_t done = 0;
  for (const iovec& v : iovecs) {
    if (done == len) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(v.iov_len - offset, len - done);
    part(static_cast<uint8_t*>(v.iov_base) + offset, n, done);
    offset = 0;
    done += n;
  }
  return done == len;
}

}  // namespace

Queue::Queue(uint16_t max_size) : max_size_(max_size), size_(max_size) {}

Status Queue::Validate(const GuestMemory& memory) const {
  TERN_RETURN_IF_ERROR(MapRings(*this, memory));
  return Ok();
}

Result<std::optional<DescriptorChain>> Queue::Pop(const GuestMemory& memory) {
  if (!ready_) return Error("virtqueue: not ready", EINVAL);
  TERN_ASSIGN_OR_RETURN(Rings rings, MapRings(*this, memory));
  uint16_t avail_idx = LoadAcquire(rings.avail + kRingIdx);
  uint16_t pending = avail_idx - next_avail_;
  if (pending == 0) return std::optional<DescriptorChain>();
  if (pending > size_) {
    return Error("virtqueue: avail idx " + std::to_string(avail_idx) + " is more than " +
                     std::to_string(size_) + " entries ahead of " + std::to_string(next_avail_),
                 EINVAL);
  }
  uint16_t head = LoadRelaxed(rings.avail + kRingEntries + kAvailEntrySize * (next_avail_ % size_));
  TERN_ASSIGN_OR_RETURN(DescriptorChain chain, ReadChain(memory, rings.desc, head));
  ++next_avail_;
  return std::optional<DescriptorChain>(std::move(chain));
}

Result<DescriptorChain> Queue::ReadChain(const GuestMemory& memory, const uint8_t* desc_table,
                                         uint16_t head) const {
  DescriptorChain chain;
  chain.head = head;
  const uint8_t* table = desc_table;
  uint32_t table_size = size_;
  uint32_t index = head;
  uint32_t visited = 0;
  bool in_indirect = false;
  while (true) {
    if (index >= table_size) {
      return ChainError(head, "descriptor index " + std::to_string(index) + " is not below " +
                                  std::to_string(table_size));
    }
    if (++visited > table_size) return ChainError(head, "loops or is longer than its table");
    VirtqDesc desc;
    std::memcpy(&desc, table + sizeof(VirtqDesc) * index, sizeof(desc));
    if ((desc.flags & kDescFIndirect) != 0) {
      // §2.7.5.3: the last descriptor of the direct chain may point to a table of descriptors.
      if (!indirect_) return ChainError(head, "indirect descriptor without VIRTIO_F_INDIRECT_DESC");
      if (in_indirect) return ChainError(head, "nested indirect descriptor");
      if ((desc.flags & kDescFNext) != 0) return ChainError(head, "indirect descriptor with NEXT");
      if (desc.len == 0 || desc.len % sizeof(VirtqDesc) != 0 ||
          desc.len / sizeof(VirtqDesc) > kMaxIndirectDescriptors) {
        return ChainError(head, "indirect table length " + std::to_string(desc.len) +
                                    " is not a multiple of 16 in 16.." +
                                    std::to_string(16 * kMaxIndirectDescriptors));
      }
      Result<std::span<uint8_t>> indirect = memory.Slice(desc.addr, desc.len);
      if (!indirect.ok()) return ChainError(head, "indirect table is not in guest memory");
      table = indirect->data();
      table_size = desc.len / sizeof(VirtqDesc);
      index = 0;
      visited = 0;
      in_indirect = true;
      continue;
    }
    TERN_RETURN_IF_ERROR(AppendBuffer(memory, desc, chain));
    if ((desc.flags & kDescFNext) == 0) return chain;
    index = desc.next;
  }
}

Status Queue::AddUsed(const GuestMemory& memory, uint16_t head, uint32_t len) {
  if (!ready_) return Error("virtqueue: not ready", EINVAL);
  TERN_ASSIGN_OR_RETURN(Rings rings, MapRings(*this, memory));
  if (head >= size_) {
    return Error("virtqueue: used id " + std::to_string(head) + " is not below the size " +
                     std::to_string(size_),
                 EINVAL);
  }
  uint8_t* entry = rings.used + kRingEntries + kUsedEntrySize * (next_used_ % size_);
  StoreRelaxed<uint32_t>(entry, head);
  StoreRelaxed<uint32_t>(entry + 4, len);
  ++next_used_;
  // §2.7.13.3.1 (for the device): the entry is visible before the index that publishes it.
  __atomic_store_n(reinterpret_cast<uint16_t*>(rings.used + kRingIdx), next_used_,
                   __ATOMIC_RELEASE);
  return Ok();
}

Result<bool> Queue::NeedsNotification(const GuestMemory& memory) {
  if (!ready_) return Error("virtqueue: not ready", EINVAL);
  TERN_ASSIGN_OR_RETURN(Rings rings, MapRings(*this, memory));
  // The used idx store must be visible before the driver's suppression fields are read, or a
  // driver that just re-enabled interrupts could miss this batch (§2.7.10).
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (!event_idx_) return (LoadRelaxed(rings.avail + kRingFlags) & kAvailFNoInterrupt) == 0;
  uint16_t used_event = LoadRelaxed(rings.avail + kRingEntries + kAvailEntrySize * size_);
  uint16_t old_idx = signalled_used_;
  bool valid = signalled_used_valid_;
  signalled_used_ = next_used_;
  signalled_used_valid_ = true;
  return !valid || NeedEvent(used_event, next_used_, old_idx);
}

Result<bool> Queue::EnableNotification(const GuestMemory& memory) {
  if (!ready_) return Error("virtqueue: not ready", EINVAL);
  TERN_ASSIGN_OR_RETURN(Rings rings, MapRings(*this, memory));
  if (event_idx_) {
    StoreRelaxed<uint16_t>(rings.used + kRingEntries + kUsedEntrySize * size_, next_avail_);
    // Publish avail_event before re-reading avail idx: otherwise a buffer made available in
    // between would get neither a notification nor a pop (§2.7.10).
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
  }
  return LoadAcquire(rings.avail + kRingIdx) != next_avail_;
}

void Queue::Reset() { *this = Queue(max_size_); }

nlohmann::json Queue::SaveState() const {
  return {{"size", size_},
          {"desc_table", desc_table_},
          {"avail_ring", avail_ring_},
          {"used_ring", used_ring_},
          {"ready", ready_},
          {"event_idx", event_idx_},
          {"indirect", indirect_},
          {"next_avail", next_avail_},
          {"next_used", next_used_},
          {"signalled_used", signalled_used_},
          {"signalled_used_valid", signalled_used_valid_}};
}

Status Queue::RestoreState(const nlohmann::json& state, const GuestMemory& memory) {
  TERN_ASSIGN_OR_RETURN(
      Fields fields,
      Fields::Of(state, "virtqueue",
                 {"size", "desc_table", "avail_ring", "used_ring", "ready", "event_idx", "indirect",
                  "next_avail", "next_used", "signalled_used", "signalled_used_valid"}));
  Queue queue(max_size_);
  TERN_RETURN_IF_ERROR(fields.Read("size", queue.size_, true));
  TERN_RETURN_IF_ERROR(fields.Read("desc_table", queue.desc_table_, true));
  TERN_RETURN_IF_ERROR(fields.Read("avail_ring", queue.avail_ring_, true));
  TERN_RETURN_IF_ERROR(fields.Read("used_ring", queue.used_ring_, true));
  TERN_RETURN_IF_ERROR(fields.Read("ready", queue.ready_, true));
  TERN_RETURN_IF_ERROR(fields.Read("event_idx", queue.event_idx_, true));
  TERN_RETURN_IF_ERROR(fields.Read("indirect", queue.indirect_, true));
  TERN_RETURN_IF_ERROR(fields.Read("next_avail", queue.next_avail_, true));
  TERN_RETURN_IF_ERROR(fields.Read("next_used", queue.next_used_, true));
  TERN_RETURN_IF_ERROR(fields.Read("signalled_used", queue.signalled_used_, true));
  TERN_RETURN_IF_ERROR(fields.Read("signalled_used_valid", queue.signalled_used_valid_, true));
  if (queue.size_ == 0 || queue.size_ > max_size_ || (queue.size_ & (queue.size_ - 1)) != 0) {
    return Error("virtqueue: size " + std::to_string(queue.size_) + " is invalid", EINVAL);
  }
  if (queue.ready_) {
    Status valid = queue.Validate(memory);
    if (!valid.ok()) return Error("virtqueue: " + valid.error().message(), EINVAL);
  }
  *this = queue;
  return Ok();
}

Result<Processed> ProcessAvailable(
    Queue& queue, const GuestMemory& memory,
    const std::function<Result<uint32_t>(const DescriptorChain& chain)>& process) {
  Processed processed;
  // Each round pops a chain or re-enables notifications; a driver can make either repeat.
  for (uint32_t round = 0; round <= 2u * queue.size(); ++round) {
    TERN_ASSIGN_OR_RETURN(std::optional<DescriptorChain> chain, queue.Pop(memory));
    if (!chain.has_value()) {
      TERN_ASSIGN_OR_RETURN(bool more, queue.EnableNotification(memory));
      if (!more) return processed;
      continue;
    }
    TERN_ASSIGN_OR_RETURN(uint32_t len, process(*chain));
    TERN_RETURN_IF_ERROR(queue.AddUsed(memory, chain->head, len));
    processed.used = true;
  }
  processed.more = true;
  return processed;
}

Result<std::vector<iovec>> ReadableIovecs(const GuestMemory& memory, const DescriptorChain& chain) {
  return Iovecs(memory, chain, false);
}

Result<std::vector<iovec>> WritableIovecs(const GuestMemory& memory, const DescriptorChain& chain) {
  return Iovecs(memory, chain, true);
}

bool SliceIovecs(std::span<const iovec> iovecs, uint64_t offset, uint64_t len,
                 std::vector<iovec>& out) {
  return ForEachPart(iovecs, offset, len, [&](uint8_t* at, uint64_t n, uint64_t) {
    out.push_back({at, n});
  });
}

bool CopyToIovecs(std::span<const iovec> iovecs, uint64_t offset, std::span<const uint8_t> bytes) {
  return ForEachPart(iovecs, offset, bytes.size(), [&](uint8_t* at, uint64_t n, uint64_t done) {
    std::memcpy(at, bytes.data() + done, n);
  });
}

bool CopyFromIovecs(std::span<const iovec> iovecs, uint64_t offset, std::span<uint8_t> bytes) {
  return ForEachPart(iovecs, offset, bytes.size(), [&](uint8_t* at, uint64_t n, uint64_t done) {
    std::memcpy(bytes.data() + done, at, n);
  });
}

}  // namespace tern::virtio
