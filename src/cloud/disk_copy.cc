// Reflink-or-sparse disk copies (see disk_copy.h).
#include "cloud/disk_copy.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fd.h"

namespace tern::cloud {
namespace {

// Copies [offset, offset + length) of `in` to the same offset of `out`.
Status CopyRange(int in, int out, off_t offset, off_t length) {
  while (length > 0) {
    loff_t in_off = offset, out_off = offset;
    ssize_t n = ::copy_file_range(in, &in_off, out, &out_off, static_cast<size_t>(length), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::FromErrno("copy_file_range");
    if (n == 0) return Error("copy_file_range: source shrank during the copy", EIO);
    offset += n;
    length -= n;
  }
  return Ok();
}

// Copies every data extent of `in` (size `size`) to `out`, leaving holes as holes.
Status CopySparse(int in, int out, off_t size) {
  if (::ftruncate(out, size) != 0) return Error::FromErrno("ftruncate");
  off_t data = 0;
  while (data < size) {
    data = ::lseek(in, data, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole remains
    if (data < 0) return Error::FromErrno("lseek(SEEK_DATA)");
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0) return Error::FromErrno("lseek(SEEK_HOLE)");
    TERN_RETURN_IF_ERROR(CopyRange(in, out, data, hole - data));
    data = hole;
  }
  return Ok();
}

Result<CopyKind> CopyOpen(int in, int out, off_t size) {
  if (::ioctl(out, FICLONE, in) == 0) return CopyKind::kReflink;
  TERN_RETURN_IF_ERROR(CopySparse(in, out, size));
  return CopyKind::kSparse;
}

}  // namespace

Result<CopyKind> CopyDisk(const std::string& source, const std::string& destination) {
  Fd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error::FromErrno("open " + source);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return Error::FromErrno("stat " + source);
  if (!S_ISREG(st.st_mode)) return Error(source + " is not a regular file", EINVAL);
  Fd out(::open(destination.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out.valid()) return Error::FromErrno("create " + destination);
  Result<CopyKind> kind = CopyOpen(in.get(), out.get(), st.st_size);
  if (kind.ok() && ::fsync(out.get()) != 0) kind = Error::FromErrno("fsync " + destination);
  if (!kind.ok()) {
    ::unlink(destination.c_str());
    return kind.error().WithContext("copy " + source + " to " + destination);
  }
  return kind;
}

}  // namespace tern::cloud
