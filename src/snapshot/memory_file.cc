// Writing full and diff guest-memory files of snapshots, and rebasing a diff onto a full file.
#include "snapshot/memory_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <optional>

#include "base/fd.h"
#include "snapshot/file_io.h"

namespace tern::snapshot {
namespace {

constexpr uint64_t kPageSize = GuestMemory::kPageSize;

// Bytes [offset, offset + size) of the memory file.
struct Extent {
  uint64_t offset;
  uint64_t size;
};

// Whether the 4 KiB page at `page` is all zero; stops at the first non-zero 256-byte block.
bool IsZeroPage(const uint8_t* page) {
  constexpr size_t kBlock = 256;
  for (size_t block = 0; block < kPageSize; block += kBlock) {
    uint64_t any = 0;
    for (size_t i = 0; i < kBlock; i += sizeof(uint64_t)) {
      uint64_t word;
      std::memcpy(&word, page + block + i, sizeof(word));
      any |= word;
    }
    if (any != 0) return false;
  }
  return true;
}

// Sets the size of `file`'s temporary file to `size` bytes (all holes).
Status Truncate(const PendingFile& file, uint64_t size) {
  if (::ftruncate(file.fd(), static_cast<off_t>(size)) < 0) {
    return Error::FromErrno("ftruncate " + file.temp_path());
  }
  return Ok();
}

// The next data extent of `fd` at or after `offset`, or nullopt if only holes follow.
Result<std::optional<Extent>> NextData(int fd, uint64_t offset, const std::string& name) {
  off_t data = ::lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
  if (data < 0) {
    if (errno == ENXIO) return std::optional<Extent>();
    return Error::FromErrno("lseek(SEEK_DATA) " + name);
  }
  off_t hole = ::lseek(fd, data, SEEK_HOLE);
  if (hole < 0) return Error::FromErrno("lseek(SEEK_HOLE) " + name);
  return std::optional<Extent>(
      Extent{static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data)});
}

// Checks that the data extents of `file` are exactly `expected` (sorted, maximal runs).
Status CheckDataExtents(const PendingFile& file, std::span<const Extent> expected) {
  uint64_t offset = 0;
  size_t next = 0;
  while (true) {
    TERN_ASSIGN_OR_RETURN(std::optional<Extent> data,
                          NextData(file.fd(), offset, file.temp_path()));
    if (!data.has_value() && next == expected.size()) return Ok();
    if (!data.has_value() || next == expected.size() || data->offset != expected[next].offset ||
        data->size != expected[next].size) {
      std::string where = data.has_value() ? "data at [" + std::to_string(data->offset) + ", " +
                                                 std::to_string(data->offset + data->size) + ")"
                                           : "a hole at " + std::to_string(offset);
      return Error("the file system of " + file.temp_path() +
                       " does not keep the 4 KiB holes of a diff snapshot exactly (" + where +
                       " does not match the dirty pages)",
                   EOPNOTSUPP);
    }
    offset = data->offset + data->size;
    ++next;
  }
}

}  // namespace

Status WriteMemoryFile(const GuestMemory& memory, const std::string& path) {
  TERN_ASSIGN_OR_RETURN(PendingFile file, PendingFile::Create(path));
  TERN_RETURN_IF_ERROR(Truncate(file, memory.total_size()));
  uint64_t file_offset = 0;
  for (const MemoryRegion& region : memory.regions()) {
    const uint64_t pages = region.size / kPageSize;
    uint64_t page = 0;
    while (page < pages) {
      if (IsZeroPage(region.host + page * kPageSize)) {
        ++page;
        continue;
      }
      const uint64_t start = page;
      while (page < pages && !IsZeroPage(region.host + page * kPageSize)) ++page;
      TERN_RETURN_IF_ERROR(PwriteAll(
          file.fd(), std::span(region.host + start * kPageSize, (page - start) * kPageSize),
          file_offset + start * kPageSize, file.temp_path()));
    }
    file_offset += region.size;
  }
  return file.Commit();
}

Status WriteDirtyPages(const GuestMemory& memory,
                       std::span<const std::vector<uint64_t>> dirty_bitmaps,
                       const std::string& path) {
  const std::vector<MemoryRegion>& regions = memory.regions();
  if (dirty_bitmaps.size() != regions.size()) {
    return Error(std::to_string(dirty_bitmaps.size()) + " dirty bitmaps for " +
                     std::to_string(regions.size()) + " guest memory regions",
                 EINVAL);
  }
  for (size_t i = 0; i < regions.size(); ++i) {
    const uint64_t pages = regions[i].size / kPageSize;
    const std::vector<uint64_t>& bitmap = dirty_bitmaps[i];
    if (bitmap.size() != (pages + 63) / 64 ||
        (pages % 64 != 0 && (bitmap.back() >> (pages % 64)) != 0)) {
      return Error("dirty bitmap of guest memory region " + std::to_string(i) +
                       " does not match its " + std::to_string(pages) + " pages",
                   EINVAL);
    }
  }

  TERN_ASSIGN_OR_RETURN(PendingFile file, PendingFile::Create(path));
  TERN_RETURN_IF_ERROR(Truncate(file, memory.total_size()));
  std::vector<Extent> written;  // maximal runs of dirty pages in the file, in order
  uint64_t file_offset = 0;
  for (size_t i = 0; i < regions.size(); ++i) {
    const MemoryRegion& region = regions[i];
    const std::vector<uint64_t>& bitmap = dirty_bitmaps[i];
    const uint64_t pages = region.size / kPageSize;
    uint64_t page = 0;
    while (page < pages) {
      // Skip clean pages, then take the run of dirty ones, a word at a time.
      uint64_t clean = std::countr_zero(bitmap[page / 64] >> (page % 64));
      if (clean != 0) {
        page += std::min<uint64_t>(clean, 64 - page % 64);
        continue;
      }
      const uint64_t start = page;
      while (page < pages) {
        const uint64_t bit = page % 64;
        const uint64_t dirty =
            std::min<uint64_t>(std::countr_one(bitmap[page / 64] >> bit), 64 - bit);
        page += dirty;
        if (bit + dirty < 64) break;  // the run ends inside this word
      }
      page = std::min(page, pages);
      const uint64_t offset = file_offset + start * kPageSize;
      const uint64_t size = (page - start) * kPageSize;
      TERN_RETURN_IF_ERROR(PwriteAll(file.fd(), std::span(region.host + start * kPageSize, size),
                                     offset, file.temp_path()));
      if (!written.empty() && written.back().offset + written.back().size == offset) {
        written.back().size += size;
      } else {
        written.push_back({offset, size});
      }
    }
    file_offset += region.size;
  }
  // The extents are checked as they are on disk.
  if (::fsync(file.fd()) < 0) return Error::FromErrno("fsync " + file.temp_path());
  TERN_RETURN_IF_ERROR(CheckDataExtents(file, written));
  return file.Commit();
}

Status RebaseMemoryFile(const std::string& base_path, const std::string& diff_path) {
  Fd base(::open(base_path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!base.valid()) return Error::FromErrno("open " + base_path);
  Fd diff(::open(diff_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!diff.valid()) return Error::FromErrno("open " + diff_path);
  struct stat base_stat;
  struct stat diff_stat;
  if (::fstat(base.get(), &base_stat) < 0) return Error::FromErrno("fstat " + base_path);
  if (::fstat(diff.get(), &diff_stat) < 0) return Error::FromErrno("fstat " + diff_path);
  if (base_stat.st_size != diff_stat.st_size) {
    return Error("diff memory file " + diff_path + " is " + std::to_string(diff_stat.st_size) +
                     " bytes but base memory file " + base_path + " is " +
                     std::to_string(base_stat.st_size) + " bytes",
                 EINVAL);
  }
  constexpr uint64_t kChunk = 1 << 20;
  std::vector<uint8_t> buffer(kChunk);
  uint64_t offset = 0;
  while (true) {
    TERN_ASSIGN_OR_RETURN(std::optional<Extent> data, NextData(diff.get(), offset, diff_path));
    if (!data.has_value()) break;
    for (uint64_t done = 0; done < data->size;) {
      std::span<uint8_t> chunk(buffer.data(), std::min(kChunk, data->size - done));
      TERN_RETURN_IF_ERROR(PreadAll(diff.get(), chunk, data->offset + done, diff_path));
      TERN_RETURN_IF_ERROR(PwriteAll(base.get(), chunk, data->offset + done, base_path));
      done += chunk.size();
    }
    offset = data->offset + data->size;
  }
  if (::fsync(base.get()) < 0) return Error::FromErrno("fsync " + base_path);
  return Ok();
}

}  // namespace tern::snapshot
