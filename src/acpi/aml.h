// A small ACPI Machine Language (AML) encoder (ACPI 6.4 §20, "ACPI Machine Language
// Specification") for building the DSDT's definition block: name strings, integers, strings,
// packages, Name/Scope/Device/Method/Return, and resource templates (ACPI 6.4 §6.4) with the I/O
// port, IRQ, fixed memory and Word/DWord/QWord address space descriptors. Each builder returns a
// value holding its encoded bytes; nest them like the ASL they mirror:
//
//   Scope("\\_SB_", {Device("COM1", {Name("_HID", EisaId("PNP0501")),
//                                    Name("_CRS", ResourceTemplate({Io(0x3f8, 0x3f8, 1, 8),
//                                                                   IrqNoFlags(4)}))})})
//
// Invalid input (a bad name, an out-of-range count) does not abort: the term carries the first
// error met while building it or any part of it, and Encode() returns that error.
// Thread safety: the builders are pure functions of their arguments; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

namespace tern::acpi::aml {
namespace internal {

struct TermKind {};
struct ResourceKind {};

// The bytes of one encoded construct of kind `Kind`, or the first error met while building it.
// A copyable value; thread-compatible.
template <typename Kind>
class Encoded {
 public:
  static Encoded FromBytes(std::vector<uint8_t> bytes) {
    Encoded encoded;
    encoded.bytes_ = std::move(bytes);
    return encoded;
  }
  static Encoded FromError(Error error) {
    Encoded encoded;
    encoded.error_ = std::move(error);
    return encoded;
  }

  bool ok() const { return !error_.has_value(); }
  // The encoded bytes; empty if !ok().
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  // The error; only meaningful if !ok().
  const std::optional<Error>& error() const { return error_; }

  // The encoded bytes, or the first error met while building this construct.
  Result<std::vector<uint8_t>> Encode() const {
    if (error_) return *error_;
    return bytes_;
  }

 private:
  Encoded() = default;

  std::vector<uint8_t> bytes_;
  std::optional<Error> error_;
};

}  // namespace internal

// An AML term or data object (ACPI 6.4 §20.2.5, §20.2.3).
using Term = internal::Encoded<internal::TermKind>;
// One resource descriptor (ACPI 6.4 §6.4), for ResourceTemplate only.
using Resource = internal::Encoded<internal::ResourceKind>;

// PkgLength (ACPI 6.4 §20.2.4) for a package whose contents after the PkgLength are
// `content_length` bytes: 1 to 4 bytes encoding content_length plus the PkgLength's own size.
// One byte holds totals up to 63; then 2 bytes up to 4095, 3 bytes up to 2^20 - 1 and 4 bytes up
// to 2^28 - 1. Errors: EINVAL if the total exceeds 2^28 - 1.
Result<std::vector<uint8_t>> PkgLength(size_t content_length);

// NameString (ACPI 6.4 §20.2.2): an optional root prefix '\' or parent prefixes '^', then
// '.'-separated NameSegs of 1-4 characters (first A-Z or '_', then A-Z, 0-9 or '_'; short segs
// are padded with '_'). "\\" alone is the root. Examples: "_S5", "\\_SB_.COM1", "^PCI0".
// Errors (in the term): EINVAL for an empty or malformed path or more than 255 segments.
Term NameString(std::string_view path);

// Integer (ACPI 6.4 §20.2.3) in its shortest encoding: ZeroOp, OneOp, or a Byte, Word, DWord or
// QWord constant.
Term Integer(uint64_t value);

// String (ACPI 6.4 §20.2.3): StringPrefix, ASCII characters 0x01-0x7f, NUL.
// Errors: EINVAL for a NUL or non-ASCII character.
Term String(std::string_view text);

// EISAID("PNP0501") (ACPI 6.4 §19.6.35): the 32-bit compressed EISA id as a DWord constant.
// `id` is 3 capital letters then 4 hex digits (0-9, A-F). Errors: EINVAL otherwise.
Term EisaId(std::string_view id);

// Package (ACPI 6.4 §20.2.5.4, DefPackage) of up to 255 elements.
Term Package(const std::vector<Term>& elements);

// Name (ACPI 6.4 §20.2.5.1, DefName): binds `value` to `name` (a NameString).
Term Name(std::string_view name, const Term& value);

// Scope (ACPI 6.4 §20.2.5.1, DefScope) opening the existing namespace `name` around `body`.
Term Scope(std::string_view name, const std::vector<Term>& body);

// Device (ACPI 6.4 §20.2.5.2, DefDevice) named `name` containing `body`.
Term Device(std::string_view name, const std::vector<Term>& body);

// Method (ACPI 6.4 §20.2.5.2, DefMethod) with `arg_count` (0-7) arguments, sync level 0,
// NotSerialized or Serialized. Errors: EINVAL for arg_count > 7.
Term Method(std::string_view name, uint8_t arg_count, bool serialized,
            const std::vector<Term>& body);

// Return (ACPI 6.4 §20.2.5.3, DefReturn) of `value`.
Term Return(const Term& value);

// ResourceTemplate () { descriptors } (ACPI 6.4 §19.3.3): a Buffer holding the descriptors
// followed by an End Tag with checksum 0 ("treated as valid", §6.4.2.9).
Term ResourceTemplate(const std::vector<Resource>& descriptors);

// IO (Decode16, min, max, alignment, length): I/O Port Descriptor, ACPI 6.4 §6.4.2.5.
Resource Io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);

// IRQNoFlags () {irq}: IRQ Descriptor without the information byte (edge-triggered, active-high,
// exclusive: the ISA defaults), ACPI 6.4 §6.4.2.1. Errors: EINVAL for irq > 15.
Resource IrqNoFlags(uint8_t irq);

// Memory32Fixed (ReadWrite or ReadOnly, base, length): 32-Bit Fixed Memory Range Descriptor,
// ACPI 6.4 §6.4.3.4.
Resource Memory32Fixed(bool read_write, uint32_t base, uint32_t length);

// Address Space Descriptors (ACPI 6.4 §6.4.3.5) as a PCI host bridge's _CRS uses them: a range
// the device produces (bridges to its children), MinFixed, MaxFixed, PosDecode, granularity 0,
// no translation, length max - min + 1. Errors: EINVAL if min > max.
//   WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len)
Resource WordBusNumber(uint16_t min, uint16_t max);
//   WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, len)
Resource WordIo(uint16_t min, uint16_t max);
//   DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0, min,
//                max, 0, len)
Resource DWordMemory(uint32_t min, uint32_t max);
//   QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0, min,
//                max, 0, len)
Resource QWordMemory(uint64_t min, uint64_t max);

}  // namespace tern::acpi::aml
