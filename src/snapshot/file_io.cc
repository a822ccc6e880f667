// Whole-buffer file I/O and write-then-rename files for snapshots.
#include "snapshot/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace tern::snapshot {

Status PwriteAll(int fd, std::span<const uint8_t> data, uint64_t offset, const std::string& name) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("write " + name);
    }
    data = data.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return Ok();
}

Status PreadAll(int fd, std::span<uint8_t> data, uint64_t offset, const std::string& name) {
  while (!data.empty()) {
    ssize_t n = ::pread(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("read " + name);
    }
    if (n == 0) return Error("read " + name + ": unexpected end of file", EIO);
    data = data.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return Ok();
}

PendingFile::PendingFile(std::string path, Fd fd)
    : path_(std::move(path)), temp_path_(path_ + ".tmp"), fd_(std::move(fd)) {}

PendingFile::PendingFile(PendingFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::exchange(other.temp_path_, std::string())),
      fd_(std::move(other.fd_)) {}

PendingFile& PendingFile::operator=(PendingFile&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temp_path_ = std::exchange(other.temp_path_, std::string());
    fd_ = std::move(other.fd_);
  }
  return *this;
}

PendingFile::~PendingFile() { Abandon(); }

void PendingFile::Abandon() {
  fd_.Reset();
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

Result<PendingFile> PendingFile::Create(const std::string& path) {
  std::string temp_path = path + ".tmp";
  Fd fd(::open(temp_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::FromErrno("create " + temp_path);
  return PendingFile(path, std::move(fd));
}

Status PendingFile::Commit() {
  if (temp_path_.empty() || !fd_.valid()) {
    return Error("snapshot file " + path_ + " was already committed", EINVAL);
  }
  if (::fsync(fd_.get()) < 0) {
    Status status = Error::FromErrno("fsync " + temp_path_);
    Abandon();
    return status;
  }
  // After a successful fsync, close(2) has nothing left to report.
  fd_.Reset();
  if (::rename(temp_path_.c_str(), path_.c_str()) < 0) {
    Status status = Error::FromErrno("rename " + temp_path_ + " to " + path_);
    Abandon();
    return status;
  }
  temp_path_.clear();
  // The rename itself is durable once the directory is.
  size_t slash = path_.rfind('/');
  std::string directory = slash == std::string::npos ? std::string(".")
                          : slash == 0               ? "/"
                                                     : path_.substr(0, slash);
  Fd dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return Error::FromErrno("open " + directory);
  if (::fsync(dir.get()) < 0) return Error::FromErrno("fsync " + directory);
  return Ok();
}

}  // namespace tern::snapshot
