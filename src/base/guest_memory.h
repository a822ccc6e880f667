// Guest RAM: host mappings (anonymous, or private views of a snapshot's memory file) placed at
// guest-physical addresses, with bounds-checked translation from guest-physical addresses (GPAs)
// to host memory, and optional tracking of the pages the VMM itself writes. A guest controls
// GPAs, so every access goes through these checks; nothing outside the mapped regions is
// reachable.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
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
// Regions are kept sorted by guest_base: "region i" below (regions(), the memory file's layout,
// dirty bitmaps) means the i-th region in that order.
// Thread safety: the region list is immutable after Create()/CreateFromFile(), so translation
// may run on any thread; concurrent access to the same guest bytes is the caller's (or the
// guest's) business. EnableDirtyTracking() is the one exception: call it before any concurrent
// use.
class GuestMemory {
 public:
  // The size of the pages of Discard() and of dirty tracking: 4 KiB.
  static constexpr uint64_t kPageSize = 4096;

  // Maps each region as private anonymous memory (MAP_NORESERVE: pages are only backed when
  // touched). Regions must be page-aligned, non-empty and must not overlap.
  // Errors: EINVAL for bad regions; mmap's error.
  static Result<GuestMemory> Create(std::span<const RegionSpec> regions);

  // Guest RAM restored from a snapshot's memory file at `path`: the regions (same rules as
  // Create()) sorted by guest_base, concatenated, are the file (region i starts at the sum of
  // the sizes of regions 0..i-1; WriteMemoryFile() in snapshot/memory_file.h writes this
  // layout). Each region is a MAP_PRIVATE | MAP_NORESERVE mapping of its part of the file,
  // readable and writable:
  //  - restore is lazy: nothing is read here; a page faults in from the page cache on its first
  //    touch, so the time taken does not depend on the size of guest RAM;
  //  - writes are copy-on-write: the file is never modified, and several VMs restored from one
  //    file share the page-cache pages none of them has written.
  // The file must keep its size and content while the mappings exist: a page not yet written
  // shows the file's current bytes, and truncation makes accesses fault (SIGBUS). Replacing the
  // file by rename (as the snapshot writers do) is safe: the mappings keep the old file.
  // Errors: EINVAL for bad regions or if the file's size is not the regions' total (the message
  // names both); open/fstat/mmap errors.
  static Result<GuestMemory> CreateFromFile(std::span<const RegionSpec> regions,
                                            const std::string& path);

  // Host view of guest bytes [gpa, gpa + len): an error (EFAULT) unless the whole range lies in
  // one region. len may be 0 (then gpa must still be inside or at the end of a region).
  // The view is writable, so with dirty tracking on, the pages it covers are marked dirty when
  // it is handed out (writes made through it later are not seen separately: take the dirty
  // bitmaps only once no such view is being written through).
  Result<std::span<uint8_t>> Slice(uint64_t gpa, uint64_t len) const;

  // Copies bytes in or out of guest memory; an error (EFAULT) if any byte is out of bounds.
  // With dirty tracking on, Write() marks the pages it wrote (after copying); Read() marks none.
  Status Write(uint64_t gpa, std::span<const uint8_t> data) const;
  Status Read(uint64_t gpa, std::span<uint8_t> data) const;

  // Copies a trivially copyable object to or from guest memory (same bounds checks and
  // dirty marking as Write() and Read()).
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

  // Gives the host memory behind guest bytes [gpa, gpa + length) back to the host kernel: the
  // pages stop counting towards the VMM's resident memory, and the next guest (or host) access
  // to one faults in a fresh zero-filled page. For the balloon's inflate (virtio 1.2 §5.5.6.1).
  // The range may span adjacent regions but must be guest RAM in full; length 0 does nothing.
  // How: memory from Create() gets madvise(MADV_DONTNEED). That is not enough for memory from
  // CreateFromFile(): on a private file mapping it drops the private copies but brings back the
  // file's bytes, not zeros. There the range is replaced by fresh private anonymous memory
  // instead (mmap MAP_FIXED | MAP_ANONYMOUS | MAP_NORESERVE over it, one atomic step for other
  // threads); each such range may cost the process one more mapping (VMA, at most
  // vm.max_map_count; adjacent discarded ranges merge).
  // With dirty tracking on, the discarded pages are marked dirty: they now read zeros.
  // Errors: EINVAL unless gpa and length are multiples of 4 KiB and the range does not wrap;
  // EFAULT if any page of it is not guest RAM (then nothing is discarded); madvise's or mmap's
  // error (the range may then be partly discarded).
  // Thread-safe; concurrent accesses to the range read either the old bytes or zeros.
  Status Discard(uint64_t gpa, uint64_t length) const;

  // Starts tracking the pages the VMM writes through Slice(), Write()/WriteObj() and Discard()
  // (virtio devices' writes into guest buffers, which KVM's dirty log does not see): allocates
  // one bitmap per region, one bit per 4 KiB page, all clear. Does nothing if already on.
  // Not thread-safe: call before any concurrent use of this GuestMemory.
  void EnableDirtyTracking();
  bool dirty_tracking() const { return !dirty_.empty(); }

  // The pages marked dirty since tracking started or since the last call, and clears them:
  // one bitmap per region (region order), ceil(pages / 64) words, bit n of word w = page
  // 64 * w + n of the region (KVM_GET_DIRTY_LOG's layout). Empty if tracking is off.
  // Thread-safe: each word is swapped for zero atomically, so a page marked concurrently is
  // reported by this call or by the next one, never lost.
  std::vector<std::vector<uint64_t>> TakeDirtyBitmaps();

  const std::vector<MemoryRegion>& regions() const { return regions_; }
  // Total bytes of guest RAM over all regions.
  uint64_t total_size() const;

 private:
  // Where guest bytes are: a region index and the offset in that region.
  struct Location {
    size_t region;
    uint64_t offset;
  };

  GuestMemory() = default;

  // Sorts and checks region specs (the rules of Create()).
  static Result<std::vector<RegionSpec>> SortedRegions(std::span<const RegionSpec> regions);
  // Maps `sorted` regions: anonymous memory if fd < 0, else consecutive parts of file `fd`.
  static Result<GuestMemory> MapRegions(std::span<const RegionSpec> sorted, int fd);

  // Translation without dirty marking: EFAULT unless [gpa, gpa + len) lies in one region.
  Result<Location> Locate(uint64_t gpa, uint64_t len) const;
  // Marks the pages of bytes [offset, offset + len) of region `region` dirty (tracking on).
  void MarkDirty(size_t region, uint64_t offset, uint64_t len) const;

  std::vector<MemoryRegion> regions_;  // sorted by guest_base, non-overlapping
  std::vector<Mapping> mappings_;      // one per region, same order
  bool file_backed_ = false;           // CreateFromFile(): private mappings of a file
  // Dirty bitmaps, one per region (same order) of ceil(pages / 64) words; empty when off.
  std::vector<std::unique_ptr<std::atomic<uint64_t>[]>> dirty_;
};

}  // namespace tern
