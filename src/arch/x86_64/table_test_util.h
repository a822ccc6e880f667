// Test helpers for firmware-table tests: read guest memory the way a guest parses a table (raw
// bytes at spec offsets), independent of the structs the code under test writes with.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <span>
#include <string>

#include "base/guest_memory.h"

namespace tern::x86_64::testing {

// Guest bytes [gpa, gpa + len); an empty span (and a test failure) when not guest RAM.
inline std::span<const uint8_t> Bytes(const GuestMemory& memory, uint64_t gpa, uint64_t len) {
  auto slice = memory.Slice(gpa, len);
  EXPECT_TRUE(slice.ok()) << "range " << gpa << "+" << len << " is not guest memory";
  return slice.ok() ? std::span<const uint8_t>(*slice) : std::span<const uint8_t>();
}

// The 8-bit sum of `bytes` (0 for a table with a correct checksum).
inline uint8_t Sum(std::span<const uint8_t> bytes) {
  return static_cast<uint8_t>(std::accumulate(bytes.begin(), bytes.end(), 0u));
}

// A little-endian T at `offset`.
template <typename T>
T Load(std::span<const uint8_t> bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// `length` characters at `offset` (a signature or OEM id).
inline std::string Text(std::span<const uint8_t> bytes, size_t offset, size_t length) {
  return std::string(reinterpret_cast<const char*>(bytes.data()) + offset, length);
}

}  // namespace tern::x86_64::testing
