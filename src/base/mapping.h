// Move-only owner of an mmap(2) mapping: unmapped exactly once, on destruction or Reset().
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/result.h"

namespace tern {

class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&& other) noexcept
      : address_(std::exchange(other.address_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      Reset();
      address_ = std::exchange(other.address_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~Mapping() { Reset(); }

  // mmap(nullptr, size, prot, flags, fd, offset), owned by the returned Mapping.
  static Result<Mapping> Map(size_t size, int prot, int flags, int fd = -1, off_t offset = 0) {
    void* address = ::mmap(nullptr, size, prot, flags, fd, offset);
    if (address == MAP_FAILED) return Error::FromErrno("mmap");
    return Mapping(static_cast<uint8_t*>(address), size);
  }

  uint8_t* data() const { return address_; }
  size_t size() const { return size_; }

  void Reset() {
    if (address_ != nullptr) ::munmap(address_, size_);
    address_ = nullptr;
    size_ = 0;
  }

 private:
  Mapping(uint8_t* address, size_t size) : address_(address), size_(size) {}
  uint8_t* address_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tern
