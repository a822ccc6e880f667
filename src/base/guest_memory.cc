// Guest RAM mappings, bounds-checked guest-physical address translation, and dirty tracking of
// the VMM's own writes.
#include "base/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "base/fd.h"

namespace tern {
namespace {

constexpr uint64_t kPageShift = 12;
static_assert(GuestMemory::kPageSize == uint64_t{1} << kPageShift);

// Words of a dirty bitmap for a region of `size` bytes: one bit per page.
uint64_t BitmapWords(uint64_t size) { return (size / GuestMemory::kPageSize + 63) / 64; }

}  // namespace

Result<std::vector<RegionSpec>> GuestMemory::SortedRegions(std::span<const RegionSpec> specs) {
  std::vector<RegionSpec> sorted(specs.begin(), specs.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const RegionSpec& a, const RegionSpec& b) { return a.guest_base < b.guest_base; });
  uint64_t previous_end = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const RegionSpec& spec = sorted[i];
    if (spec.size == 0 || spec.size % kPageSize != 0 || spec.guest_base % kPageSize != 0 ||
        spec.guest_base + spec.size < spec.guest_base) {
      return Error("guest memory region is empty, unaligned or wraps", EINVAL);
    }
    if (i > 0 && spec.guest_base < previous_end) {
      return Error("guest memory regions overlap", EINVAL);
    }
    previous_end = spec.guest_base + spec.size;
  }
  return sorted;
}

Result<GuestMemory> GuestMemory::MapRegions(std::span<const RegionSpec> sorted, int fd) {
  GuestMemory memory;
  memory.file_backed_ = fd >= 0;
  uint64_t file_offset = 0;
  for (const RegionSpec& spec : sorted) {
    Result<Mapping> mapping =
        fd < 0 ? Mapping::Map(spec.size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
               : Mapping::Map(spec.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd,
                              static_cast<off_t>(file_offset));
    if (!mapping.ok()) return mapping.error();
    memory.regions_.push_back({spec.guest_base, spec.size, mapping->data()});
    memory.mappings_.push_back(std::move(mapping).value());
    file_offset += spec.size;
  }
  return memory;
}

Result<GuestMemory> GuestMemory::Create(std::span<const RegionSpec> specs) {
  TERN_ASSIGN_OR_RETURN(std::vector<RegionSpec> sorted, SortedRegions(specs));
  return MapRegions(sorted, -1);
}

Result<GuestMemory> GuestMemory::CreateFromFile(std::span<const RegionSpec> specs,
                                                const std::string& path) {
  TERN_ASSIGN_OR_RETURN(std::vector<RegionSpec> sorted, SortedRegions(specs));
  // Regions neither overlap nor wrap, so their total fits in 64 bits.
  uint64_t total = 0;
  for (const RegionSpec& spec : sorted) total += spec.size;
  Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file.valid()) return Error::FromErrno("open " + path);
  struct stat st;
  if (::fstat(file.get(), &st) < 0) return Error::FromErrno("fstat " + path);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != total) {
    return Error("memory file " + path + " is " +
                     (S_ISREG(st.st_mode) ? std::to_string(st.st_size) + " bytes"
                                          : std::string("not a regular file")) +
                     " but the guest memory regions total " + std::to_string(total) + " bytes",
                 EINVAL);
  }
  // The mappings keep the file open; the descriptor is not needed afterwards.
  return MapRegions(sorted, file.get());
}

Result<GuestMemory::Location> GuestMemory::Locate(uint64_t gpa, uint64_t len) const {
  for (size_t i = 0; i < regions_.size(); ++i) {
    const MemoryRegion& region = regions_[i];
    if (gpa < region.guest_base) continue;
    uint64_t offset = gpa - region.guest_base;
    if (offset > region.size || len > region.size - offset) continue;
    return Location{i, offset};
  }
  return Error("guest-physical range is not RAM", EFAULT);
}

void GuestMemory::MarkDirty(size_t region, uint64_t offset, uint64_t len) const {
  if (len == 0) return;
  const uint64_t first = offset >> kPageShift;
  const uint64_t last = (offset + len - 1) >> kPageShift;
  std::atomic<uint64_t>* bitmap = dirty_[region].get();
  for (uint64_t word = first / 64; word <= last / 64; ++word) {
    uint64_t low = word == first / 64 ? first % 64 : 0;
    uint64_t high = word == last / 64 ? last % 64 : 63;
    uint64_t mask = (~uint64_t{0} << low) & (~uint64_t{0} >> (63 - high));
    bitmap[word].fetch_or(mask, std::memory_order_release);
  }
}

Result<std::span<uint8_t>> GuestMemory::Slice(uint64_t gpa, uint64_t len) const {
  TERN_ASSIGN_OR_RETURN(Location at, Locate(gpa, len));
  if (!dirty_.empty()) [[unlikely]] {
    MarkDirty(at.region, at.offset, len);
  }
  return std::span<uint8_t>(regions_[at.region].host + at.offset, len);
}

Status GuestMemory::Write(uint64_t gpa, std::span<const uint8_t> data) const {
  TERN_ASSIGN_OR_RETURN(Location at, Locate(gpa, data.size()));
  std::memcpy(regions_[at.region].host + at.offset, data.data(), data.size());
  // Marked after the copy (a release): a TakeDirtyBitmaps() that sees the mark also sees the
  // bytes, and one that runs before the mark leaves the page to the next round.
  if (!dirty_.empty()) [[unlikely]] {
    MarkDirty(at.region, at.offset, data.size());
  }
  return Ok();
}

Status GuestMemory::Read(uint64_t gpa, std::span<uint8_t> data) const {
  TERN_ASSIGN_OR_RETURN(Location at, Locate(gpa, data.size()));
  std::memcpy(data.data(), regions_[at.region].host + at.offset, data.size());
  return Ok();
}

Status GuestMemory::Discard(uint64_t gpa, uint64_t length) const {
  if (gpa % kPageSize != 0 || length % kPageSize != 0 || gpa + length < gpa) {
    return Error("discard range is unaligned or wraps", EINVAL);
  }
  // The pieces of the range, one per region, in address order; the range must be covered
  // without a hole before anything is discarded.
  struct Piece {
    size_t region;
    uint64_t offset;
    uint64_t size;
  };
  std::vector<Piece> pieces;
  uint64_t next = gpa;
  const uint64_t end = gpa + length;
  for (size_t i = 0; i < regions_.size(); ++i) {
    const MemoryRegion& region = regions_[i];
    if (next == end) break;
    uint64_t region_end = region.guest_base + region.size;
    if (next >= region_end) continue;
    if (next < region.guest_base) break;  // a hole before this region
    uint64_t piece_end = std::min(end, region_end);
    pieces.push_back({i, next - region.guest_base, piece_end - next});
    next = piece_end;
  }
  if (next != end) return Error("discard range is not guest RAM", EFAULT);
  for (const Piece& piece : pieces) {
    uint8_t* host = regions_[piece.region].host + piece.offset;
    if (!file_backed_) {
      if (::madvise(host, piece.size, MADV_DONTNEED) < 0) {
        return Error::FromErrno("madvise(MADV_DONTNEED)");
      }
    } else {
      // MADV_DONTNEED would bring back the file's bytes: map fresh zero pages over the range.
      void* address = ::mmap(host, piece.size, PROT_READ | PROT_WRITE,
                             MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (address == MAP_FAILED) return Error::FromErrno("mmap(MAP_FIXED | MAP_ANONYMOUS)");
    }
    if (!dirty_.empty()) MarkDirty(piece.region, piece.offset, piece.size);
  }
  return Ok();
}

void GuestMemory::EnableDirtyTracking() {
  if (!dirty_.empty()) return;
  for (const MemoryRegion& region : regions_) {
    uint64_t words = BitmapWords(region.size);
    dirty_.push_back(std::make_unique<std::atomic<uint64_t>[]>(words));  // value-initialized: 0
  }
}

std::vector<std::vector<uint64_t>> GuestMemory::TakeDirtyBitmaps() {
  std::vector<std::vector<uint64_t>> bitmaps;
  bitmaps.reserve(dirty_.size());
  for (size_t i = 0; i < dirty_.size(); ++i) {
    std::vector<uint64_t>& bitmap = bitmaps.emplace_back(BitmapWords(regions_[i].size));
    for (size_t w = 0; w < bitmap.size(); ++w) {
      std::atomic<uint64_t>& word = dirty_[i][w];
      // Only words with bits set are written: clean ones keep their cache lines shared.
      if (word.load(std::memory_order_relaxed) != 0) {
        bitmap[w] = word.exchange(0, std::memory_order_acquire);
      }
    }
  }
  return bitmaps;
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const MemoryRegion& region : regions_) total += region.size;
  return total;
}

}  // namespace tern
