// The state file of a VM snapshot: vCPU and device state (a JSON document built elsewhere),
// stored as CBOR behind a fixed header that identifies the file, its format version, and the
// payload's length and CRC32.
//
// Layout (all integers little-endian), 28 bytes of header then the payload:
//   offset  0: magic "TERNSNAP" (8 bytes)
//   offset  8: uint32 format version (kStateFormatVersion)
//   offset 12: uint32 reserved, written as 0, ignored on read
//   offset 16: uint64 payload bytes
//   offset 24: uint32 CRC32 of the payload (zlib's crc32())
//   offset 28: payload: nlohmann::json::to_cbor(state)
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "base/result.h"

namespace tern::snapshot {

// The state file format this build writes and reads.
inline constexpr uint32_t kStateFormatVersion = 1;
// Bytes of the fixed header before the payload.
inline constexpr uint64_t kStateHeaderBytes = 28;
// The largest payload written or read (bytes); a larger length in a header is refused before
// anything is allocated for it.
inline constexpr uint64_t kMaxStatePayloadBytes = uint64_t{64} << 20;

// Writes `state` to `path`: to `path + ".tmp"` first, fsync, then rename over `path` (so `path`
// is never a half-written file). JSON binary values are kept, subtypes included (CBOR byte
// strings, tagged with the subtype).
// Errors: EINVAL if the encoded state exceeds kMaxStatePayloadBytes or cannot be encoded; the
// system calls' errors. Thread-safe for different paths.
Status WriteStateFile(const std::string& path, const nlohmann::json& state);

// Reads and checks a state file written by WriteStateFile().
// Errors (EINVAL, one line each): too short to be a snapshot; not a Tern snapshot (magic);
// "snapshot format version N; this tern-vmm reads version 1"; payload length above
// kMaxStatePayloadBytes; truncated payload; trailing bytes; "snapshot state file is corrupt:
// CRC32 mismatch"; payload that is not CBOR. open/fstat/read errors otherwise.
// Thread-safe.
Result<nlohmann::json> ReadStateFile(const std::string& path);

}  // namespace tern::snapshot
