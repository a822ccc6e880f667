// Test helpers on guest pages (4 KiB): fill one, compare one, and ask whether the host page
// behind it is resident. Shared by the GuestMemory and virtio-balloon unit tests.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <vector>

#include "base/guest_memory.h"

namespace tern::testing {

inline constexpr uint64_t kTestPage = 4096;

// Fills guest page `gpa` with `byte`.
inline void FillPage(const GuestMemory& memory, uint64_t gpa, uint8_t byte) {
  std::vector<uint8_t> bytes(kTestPage, byte);
  ASSERT_TRUE(memory.Write(gpa, bytes).ok());
}

// Whether every byte of guest page `gpa` is `byte`.
inline bool PageIs(const GuestMemory& memory, uint64_t gpa, uint8_t byte) {
  std::vector<uint8_t> bytes(kTestPage);
  EXPECT_TRUE(memory.Read(gpa, bytes).ok());
  for (uint8_t b : bytes) {
    if (b != byte) return false;
  }
  return true;
}

// Whether the host page behind guest page `gpa` is resident (mincore(2)).
inline bool Resident(const GuestMemory& memory, uint64_t gpa) {
  Result<std::span<uint8_t>> host = memory.Slice(gpa, kTestPage);
  EXPECT_TRUE(host.ok());
  unsigned char vec = 0;
  EXPECT_EQ(::mincore(host->data(), kTestPage, &vec), 0);
  return (vec & 1) != 0;
}

}  // namespace tern::testing
