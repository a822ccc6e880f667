// Copies of disk images for AMIs and instance root disks: a reflink (FICLONE, copy-on-write:
// instant, shares blocks until written) where the file system allows, otherwise a sparse copy
// (only the data extents, found with SEEK_DATA/SEEK_HOLE). Either way the copy is independent:
// writes to it never reach the source.
#pragma once

#include <string>

#include "base/result.h"

namespace tern::cloud {

// How CopyDisk made the copy.
enum class CopyKind { kReflink, kSparse };

// Copies the regular file `source` to `destination` (created, mode 0600; must not exist),
// fsynced. On error nothing is left at `destination`. Not for concurrent use on one destination.
Result<CopyKind> CopyDisk(const std::string& source, const std::string& destination);

}  // namespace tern::cloud
