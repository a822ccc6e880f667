// Guest RAM mappings and bounds-checked guest-physical address translation.
#include "base/guest_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace tern {
namespace {

constexpr uint64_t kPageSize = 4096;

}  // namespace

Result<GuestMemory> GuestMemory::Create(std::span<const RegionSpec> specs) {
  std::vector<RegionSpec> sorted(specs.begin(), specs.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const RegionSpec& a, const RegionSpec& b) { return a.guest_base < b.guest_base; });
  GuestMemory memory;
  uint64_t previous_end = 0;
  for (const RegionSpec& spec : sorted) {
    if (spec.size == 0 || spec.size % kPageSize != 0 || spec.guest_base % kPageSize != 0 ||
        spec.guest_base + spec.size < spec.guest_base) {
      return Error("guest memory region is empty, unaligned or wraps", EINVAL);
    }
    if (!memory.regions_.empty() && spec.guest_base < previous_end) {
      return Error("guest memory regions overlap", EINVAL);
    }
    TERN_ASSIGN_OR_RETURN(Mapping mapping,
                          Mapping::Map(spec.size, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE));
    memory.regions_.push_back({spec.guest_base, spec.size, mapping.data()});
    memory.mappings_.push_back(std::move(mapping));
    previous_end = spec.guest_base + spec.size;
  }
  return memory;
}

Result<std::span<uint8_t>> GuestMemory::Slice(uint64_t gpa, uint64_t len) const {
  for (const MemoryRegion& region : regions_) {
    if (gpa < region.guest_base) continue;
    uint64_t offset = gpa - region.guest_base;
    if (offset > region.size || len > region.size - offset) continue;
    return std::span<uint8_t>(region.host + offset, len);
  }
  return Error("guest-physical range is not RAM", EFAULT);
}

Status GuestMemory::Write(uint64_t gpa, std::span<const uint8_t> data) const {
  TERN_ASSIGN_OR_RETURN(std::span<uint8_t> dest, Slice(gpa, data.size()));
  std::memcpy(dest.data(), data.data(), data.size());
  return Ok();
}

Status GuestMemory::Read(uint64_t gpa, std::span<uint8_t> data) const {
  TERN_ASSIGN_OR_RETURN(std::span<uint8_t> src, Slice(gpa, data.size()));
  std::memcpy(data.data(), src.data(), data.size());
  return Ok();
}

Status GuestMemory::Discard(uint64_t gpa, uint64_t length) const {
  if (gpa % kPageSize != 0 || length % kPageSize != 0 || gpa + length < gpa) {
    return Error("discard range is unaligned or wraps", EINVAL);
  }
  // The pieces of the range, one per region, in address order; the range must be covered
  // without a hole before anything is discarded.
  struct Piece {
    uint8_t* host;
    uint64_t size;
  };
  std::vector<Piece> pieces;
  uint64_t next = gpa;
  const uint64_t end = gpa + length;
  for (const MemoryRegion& region : regions_) {
    if (next == end) break;
    uint64_t region_end = region.guest_base + region.size;
    if (next >= region_end) continue;
    if (next < region.guest_base) break;  // a hole before this region
    uint64_t piece_end = std::min(end, region_end);
    pieces.push_back({region.host + (next - region.guest_base), piece_end - next});
    next = piece_end;
  }
  if (next != end) return Error("discard range is not guest RAM", EFAULT);
  for (const Piece& piece : pieces) {
    if (::madvise(piece.host, piece.size, MADV_DONTNEED) < 0) {
      return Error::FromErrno("madvise(MADV_DONTNEED)");
    }
  }
  return Ok();
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const MemoryRegion& region : regions_) total += region.size;
  return total;
}

}  // namespace tern
