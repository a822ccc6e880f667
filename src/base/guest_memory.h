// Guest RAM: anonymous host mappings placed at guest-physical addresses, with bounds-checked
// translation from guest-physical addresses (GPAs) to host memory. A guest controls GPAs, so
// every access goes through these checks; nothing outside the mapped regions is reachable.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "base/mapping.h"
#include "base/result.h"

namespace tern {

// One contiguous range of guest RAM backed by one host mapping.
struct MemoryRegion {
  uint64_t guest_base;  // guest-physical address of the first byte
  uint64_t size;        // bytes, a multiple of the 4 KiB page size
  uint8_t* host;        // host address of the first byte
};

// A requested region: guest-physical base and size in bytes.
struct RegionSpec {
  uint64_t guest_base;
  uint64_t size;
};

// Owns the host mappings of all guest RAM regions (move-only; unmapped on destruction).
// Thread safety: the region list is immutable after Create(), so translation may run on any
// thread; concurrent access to the same guest bytes is the caller's (or the guest's) business.
class GuestMemory {
 public:
  // Maps each region as private anonymous memory (MAP_NORESERVE: pages are only backed when
  // touched). Regions must be page-aligned, non-empty and must not overlap.
  static Result<GuestMemory> Create(std::span<const RegionSpec> regions);

  // Host view of guest bytes [gpa, gpa + len): an error (EFAULT) unless the whole range lies in
  // one region. len may be 0 (then gpa must still be inside or at the end of a region).
  Result<std::span<uint8_t>> Slice(uint64_t gpa, uint64_t len) const;

  // Copies bytes in or out of guest memory; an error (EFAULT) if any byte is out of bounds.
  Status Write(uint64_t gpa, std::span<const uint8_t> data) const;
  Status Read(uint64_t gpa, std::span<uint8_t> data) const;

  // Copies a trivially copyable object to or from guest memory (same bounds checks).
  template <typename T>
  Status WriteObj(uint64_t gpa, const T& obj) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(gpa, std::span(reinterpret_cast<const uint8_t*>(&obj), sizeof(T)));
  }
  template <typename T>
  Result<T> ReadObj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T obj;
    TERN_RETURN_IF_ERROR(Read(gpa, std::span(reinterpret_cast<uint8_t*>(&obj), sizeof(T))));
    return obj;
  }

  // Gives the host memory behind guest bytes [gpa, gpa + length) back to the host kernel with
  // madvise(MADV_DONTNEED): the pages stop counting towards the VMM's resident memory, and the
  // next guest (or host) access to one faults in a fresh zero-filled page. For the balloon's
  // inflate (virtio 1.2 §5.5.6.1). The range may span adjacent regions but must be guest RAM
  // in full; length 0 does nothing.
  // Errors: EINVAL unless gpa and length are multiples of 4 KiB and the range does not wrap;
  // EFAULT if any page of it is not guest RAM (then nothing is discarded); madvise's error
  // (the range may then be partly discarded).
  // Thread-safe; concurrent accesses to the range read either the old bytes or zeros.
  // Relies on the regions being private anonymous mappings (as Create() makes them).
  Status Discard(uint64_t gpa, uint64_t length) const;

  const std::vector<MemoryRegion>& regions() const { return regions_; }
  // Total bytes of guest RAM over all regions.
  uint64_t total_size() const;

 private:
  GuestMemory() = default;

  std::vector<MemoryRegion> regions_;  // sorted by guest_base, non-overlapping
  std::vector<Mapping> mappings_;      // one per region, same order
};

}  // namespace tern
