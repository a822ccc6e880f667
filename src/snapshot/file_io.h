// File helpers of the snapshot writers and readers: whole-buffer pread/pwrite, and a file that
// is written beside its final path and renamed into place when complete.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace tern::snapshot {

// Writes all of `data` at byte `offset` of `fd` (pwrite(2) until done, retrying EINTR).
// Errors: pwrite's, with context "write <name>".
Status PwriteAll(int fd, std::span<const uint8_t> data, uint64_t offset, const std::string& name);

// Reads exactly data.size() bytes at byte `offset` of `fd` (pread(2) until done, retrying
// EINTR). Errors: pread's, with context "read <name>"; EIO if the file ends first.
Status PreadAll(int fd, std::span<uint8_t> data, uint64_t offset, const std::string& name);

// A file being written at `path + ".tmp"` and moved to `path` by Commit(): `path` is always
// either the previous file or the complete new one, never a half-written file, and a process
// that still maps the previous file (GuestMemory::CreateFromFile()) keeps seeing its bytes.
// The temporary file is removed by the destructor unless committed.
// Move-only; not thread-safe. Two writers of one path at once would share the temporary file.
class PendingFile {
 public:
  // Creates `path + ".tmp"` (or truncates one a crashed writer left; a symbolic link there is
  // refused), readable and writable by the owner only (mode 0600: snapshots hold guest
  // memory). Errors: open's.
  static Result<PendingFile> Create(const std::string& path);

  PendingFile(PendingFile&& other) noexcept;
  PendingFile& operator=(PendingFile&& other) noexcept;
  ~PendingFile();

  // The open temporary file (read-write), valid until Commit().
  int fd() const { return fd_.get(); }
  // The temporary file's path, for error messages.
  const std::string& temp_path() const { return temp_path_; }

  // Makes the file durable and visible at `path`: fsync, close, rename over `path`, fsync of
  // its directory. Call at most once. Errors: those system calls' (the temporary file is then
  // removed and `path` keeps its previous state, unless only the directory fsync failed).
  Status Commit();

 private:
  PendingFile(std::string path, Fd fd);
  // Removes the temporary file if it was not committed.
  void Abandon();

  std::string path_;
  std::string temp_path_;  // empty once committed or moved from
  Fd fd_;
};

}  // namespace tern::snapshot
