// Writing and validating snapshot state files (header, CRC32, CBOR payload).
#include "snapshot/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <vector>

#include "base/fd.h"
#include "snapshot/file_io.h"

namespace tern::snapshot {
namespace {

// The header's integers are stored in host order: x86-64 is little-endian, like the format.
static_assert(std::endian::native == std::endian::little);

constexpr std::array<char, 8> kMagic = {'T', 'E', 'R', 'N', 'S', 'N', 'A', 'P'};
constexpr size_t kVersionOffset = 8;
constexpr size_t kReservedOffset = 12;
constexpr size_t kPayloadBytesOffset = 16;
constexpr size_t kCrcOffset = 24;

using Header = std::array<uint8_t, kStateHeaderBytes>;

template <typename T>
void Store(Header& header, size_t offset, T value) {
  std::memcpy(header.data() + offset, &value, sizeof(value));
}

template <typename T>
T Load(const Header& header, size_t offset) {
  T value;
  std::memcpy(&value, header.data() + offset, sizeof(value));
  return value;
}

// zlib's crc32() of `bytes`, fed in pieces its 32-bit length parameter can take.
uint32_t Crc32(std::span<const uint8_t> bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  while (!bytes.empty()) {
    size_t n = std::min<size_t>(bytes.size(), 1u << 30);
    crc = ::crc32(crc, bytes.data(), static_cast<uInt>(n));
    bytes = bytes.subspan(n);
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace

Status WriteStateFile(const std::string& path, const nlohmann::json& state) {
  std::vector<uint8_t> payload;
  try {
    payload = nlohmann::json::to_cbor(state);
  } catch (const nlohmann::json::exception& e) {
    return Error(std::string("snapshot state cannot be encoded as CBOR: ") + e.what(), EINVAL);
  }
  if (payload.size() > kMaxStatePayloadBytes) {
    return Error("snapshot state of " + std::to_string(payload.size()) +
                     " bytes exceeds the limit of " + std::to_string(kMaxStatePayloadBytes) +
                     " bytes",
                 EINVAL);
  }
  Header header{};
  std::memcpy(header.data(), kMagic.data(), kMagic.size());
  Store<uint32_t>(header, kVersionOffset, kStateFormatVersion);
  Store<uint32_t>(header, kReservedOffset, 0);
  Store<uint64_t>(header, kPayloadBytesOffset, payload.size());
  Store<uint32_t>(header, kCrcOffset, Crc32(payload));

  TERN_ASSIGN_OR_RETURN(PendingFile file, PendingFile::Create(path));
  TERN_RETURN_IF_ERROR(PwriteAll(file.fd(), header, 0, file.temp_path()));
  TERN_RETURN_IF_ERROR(PwriteAll(file.fd(), payload, kStateHeaderBytes, file.temp_path()));
  return file.Commit();
}

Result<nlohmann::json> ReadStateFile(const std::string& path) {
  Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file.valid()) return Error::FromErrno("open " + path);
  struct stat st;
  if (::fstat(file.get(), &st) < 0) return Error::FromErrno("fstat " + path);
  if (!S_ISREG(st.st_mode)) return Error(path + " is not a regular file", EINVAL);
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kStateHeaderBytes) {
    return Error("snapshot state file is too short (" + std::to_string(file_bytes) +
                     " bytes) to be a Tern snapshot",
                 EINVAL);
  }
  Header header;
  TERN_RETURN_IF_ERROR(PreadAll(file.get(), header, 0, path));
  if (std::memcmp(header.data(), kMagic.data(), kMagic.size()) != 0) {
    return Error("not a Tern snapshot state file (no TERNSNAP magic)", EINVAL);
  }
  const uint32_t version = Load<uint32_t>(header, kVersionOffset);
  if (version != kStateFormatVersion) {
    return Error("snapshot format version " + std::to_string(version) +
                     "; this tern-vmm reads version " + std::to_string(kStateFormatVersion),
                 EINVAL);
  }
  const uint64_t payload_bytes = Load<uint64_t>(header, kPayloadBytesOffset);
  if (payload_bytes > kMaxStatePayloadBytes) {
    return Error("snapshot state payload of " + std::to_string(payload_bytes) +
                     " bytes exceeds the limit of " + std::to_string(kMaxStatePayloadBytes) +
                     " bytes",
                 EINVAL);
  }
  const uint64_t stored_bytes = file_bytes - kStateHeaderBytes;
  if (stored_bytes < payload_bytes) {
    return Error("snapshot state file is truncated: payload of " + std::to_string(payload_bytes) +
                     " bytes, file holds " + std::to_string(stored_bytes),
                 EINVAL);
  }
  if (stored_bytes > payload_bytes) {
    return Error("snapshot state file has " + std::to_string(stored_bytes - payload_bytes) +
                     " trailing bytes after its payload",
                 EINVAL);
  }
  std::vector<uint8_t> payload(payload_bytes);
  TERN_RETURN_IF_ERROR(PreadAll(file.get(), payload, kStateHeaderBytes, path));
  if (Crc32(payload) != Load<uint32_t>(header, kCrcOffset)) {
    return Error("snapshot state file is corrupt: CRC32 mismatch", EINVAL);
  }
  try {
    // Binary values with a subtype are CBOR byte strings behind a tag: keep the tag as the
    // subtype, as to_cbor() wrote it.
    return nlohmann::json::from_cbor(payload, /*strict=*/true, /*allow_exceptions=*/true,
                                     nlohmann::json::cbor_tag_handler_t::store);
  } catch (const nlohmann::json::exception& e) {
    return Error(std::string("snapshot state payload is not valid CBOR: ") + e.what(), EINVAL);
  }
}

}  // namespace tern::snapshot
