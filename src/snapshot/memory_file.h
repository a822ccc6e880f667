// The guest-memory file of a VM snapshot: all guest RAM regions, in GuestMemory::regions() order
// (by guest-physical address), concatenated; region i starts at the sum of the sizes of regions
// 0..i-1, so the file is GuestMemory::total_size() bytes. GuestMemory::CreateFromFile() maps it
// back. A full file (WriteMemoryFile()) leaves all-zero pages as holes; a diff file
// (WriteDirtyPages()) has data only at dirty pages and is applied over a full one with
// RebaseMemoryFile() (like Firecracker's rebase-snap).
//
// The writers read guest memory without synchronization: the VM must be paused, with no device
// writing into guest memory, or the file is a torn copy. They write `path + ".tmp"` and rename
// it over `path` once complete (mode 0600), so `path` is never half-written and a VM restored
// from `path` keeps its own (old) file.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/guest_memory.h"
#include "base/result.h"

namespace tern::snapshot {

// Writes all of guest memory to a sparse file at `path`: the file is sized to total_size() and
// only pages that are not all zero are written (each run of such pages with one pwrite), so
// pages the guest never touched become holes and cost neither time nor disk. Scanning reads
// every page; an untouched page of anonymous memory then maps the shared zero page, so the VMM
// allocates no memory for it. fsyncs before the rename.
// Errors: the system calls' (nothing is left at `path` or `path + ".tmp"`).
// Thread-safe for different paths (see above for the guest).
Status WriteMemoryFile(const GuestMemory& memory, const std::string& path);

// Writes a diff of guest memory to a sparse file at `path`: sized to total_size(), with data
// only at the dirty pages (also all-zero ones: a page that became zero is a change), holes
// elsewhere. dirty_bitmaps[i] covers region i: ceil(pages / 64) words, bit n of word w = page
// 64 * w + n (4 KiB pages), as GuestMemory::TakeDirtyBitmaps() (OR-ed with KVM's dirty log)
// gives them. After writing, the file's data extents (SEEK_DATA/SEEK_HOLE) are checked to be
// exactly the dirty pages: a file system that cannot keep 4 KiB holes, or that turns zero
// pages into holes, would make RebaseMemoryFile() wrong.
// Errors: EINVAL unless there is one bitmap per region, of the right length, with no bit past
// the region's last page; EOPNOTSUPP if the file system does not keep the holes exactly; the
// system calls' (nothing is left at `path` or `path + ".tmp"` on any error).
Status WriteDirtyPages(const GuestMemory& memory,
                       std::span<const std::vector<uint64_t>> dirty_bitmaps,
                       const std::string& path);

// Applies a diff (WriteDirtyPages()) to a full memory file in place: copies every data extent
// of `diff_path` (lseek SEEK_DATA/SEEK_HOLE) over the same offsets of `base_path`, then fsyncs
// it. Do not rebase a file that running VMs were restored from: pages they have not written
// would change under them.
// Errors: EINVAL if the two files differ in size; the system calls' (`base_path` may then be
// partly rebased).
Status RebaseMemoryFile(const std::string& base_path, const std::string& diff_path);

}  // namespace tern::snapshot
