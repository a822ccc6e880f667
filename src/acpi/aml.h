// A small ACPI Machine Language (AML) encoder (ACPI 6.4 §20, "ACPI Machine Language
// Specification") for building the DSDT's definition block: name strings, integers, strings,
// packages, Name/Scope/Device/Method/Return, operation regions and fields, the statements and
// operators a simple event method needs (Store, If, Notify, And, LAnd, LEqual, Local0-7,
// Arg0-6), and resource templates (ACPI 6.4 §6.4) with the I/O port, IRQ, extended interrupt,
// fixed memory and Word/DWord/QWord address space descriptors. Each builder returns a value
// holding its encoded bytes; nest them like the ASL they mirror:
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

// Address space of an OperationRegion (ACPI 6.4 §20.2.5.2 RegionSpace). Only the two Tern uses.
enum class RegionSpace : uint8_t { kSystemMemory = 0x00, kSystemIo = 0x01 };

// OperationRegion (name, space, offset, length) (ACPI 6.4 §20.2.5.2 DefOpRegion):
// `length` bytes of `space` from `offset` (a guest-physical address or an I/O port), with
// offset and length encoded as the shortest Integer.
Term OperationRegion(std::string_view name, RegionSpace space, uint64_t offset, uint64_t length);

// Field access type, lock rule and update rule: the FieldFlags byte of DefField (ACPI 6.4
// §20.2.5.2): bits 3:0 AccessType, bit 4 LockRule, bits 6:5 UpdateRule.
enum class FieldAccess : uint8_t { kAny = 0, kByte = 1, kWord = 2, kDWord = 3, kQWord = 4 };
enum class FieldLock : uint8_t { kNoLock = 0, kLock = 1 };
enum class FieldUpdate : uint8_t { kPreserve = 0, kWriteAsOnes = 1, kWriteAsZeros = 2 };

// One element of a Field's list: a named field unit of `bits` bits (NamedField, `NAME, bits`
// in ASL), or, when `name` is empty, `bits` bits skipped (ReservedField, `, bits` in ASL).
// `name` is a single NameSeg of 1-4 characters; `bits` is 1 to 2^28 - 1.
struct FieldUnit {
  std::string_view name;
  uint32_t bits = 0;
};

// Field (region, access, lock, update) { units } (ACPI 6.4 §20.2.5.2 DefField): field
// units laid out from bit 0 of the OperationRegion named `region`, in order.
// Errors: EINVAL for a bad region name, a unit name that is not one NameSeg, or a unit of 0 or
// more than 2^28 - 1 bits.
Term Field(std::string_view region, FieldAccess access, FieldLock lock, FieldUpdate update,
           const std::vector<FieldUnit>& units);

// LocalN (ACPI 6.4 §20.2.6.2, Local0Op..Local7Op): a method's local variable, n = 0..7.
// Errors: EINVAL for n > 7.
Term Local(uint8_t n);

// ArgN (ACPI 6.4 §20.2.6.1, Arg0Op..Arg6Op): a method's argument, n = 0..6.
// Errors: EINVAL for n > 6.
Term Arg(uint8_t n);

// Store (value, target) (ACPI 6.4 §20.2.5.4 DefStore): `target` = `value`. `target`
// is a SuperName: a NameString, Local(n) or Arg(n).
Term Store(const Term& value, const Term& target);

// If (predicate) { body } (ACPI 6.4 §20.2.5.3 DefIfElse without an Else): runs `body`
// when `predicate` evaluates to a nonzero Integer.
Term If(const Term& predicate, const std::vector<Term>& body);

// Notify (object, value) (ACPI 6.4 §20.2.5.3 DefNotify): sends notification `value`
// (e.g. 0x80, "status change", which a power button device reports as a press, §5.6.6 and
// §4.8.2.2.1.2) to `object`, a NameString term naming a device.
Term Notify(const Term& object, const Term& value);

// And (a, b) (ACPI 6.4 §20.2.5.4 DefAnd) with no target (NullName): the bitwise AND
// of two Integers, as an expression.
Term And(const Term& a, const Term& b);

// LAnd (a, b) (ACPI 6.4 §20.2.5.4 DefLAnd): One if both Integers are nonzero, else
// Zero.
Term LAnd(const Term& a, const Term& b);

// LEqual (a, b) (ACPI 6.4 §20.2.5.4 DefLEqual): One if a == b, else Zero.
Term LEqual(const Term& a, const Term& b);

// ResourceTemplate () { descriptors } (ACPI 6.4 §19.3.3): a Buffer holding the descriptors
// followed by an End Tag with checksum 0 ("treated as valid", §6.4.2.9).
Term ResourceTemplate(const std::vector<Resource>& descriptors);

// IO (Decode16, min, max, alignment, length): I/O Port Descriptor, ACPI 6.4 §6.4.2.5.
Resource Io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);

// IRQNoFlags () {irq}: IRQ Descriptor without the information byte (edge-triggered, active-high,
// exclusive: the ISA defaults), ACPI 6.4 §6.4.2.1. Errors: EINVAL for irq > 15.
Resource IrqNoFlags(uint8_t irq);

// Interrupt (usage, trigger, polarity, sharing) { interrupts }: Extended Interrupt Descriptor,
// ACPI 6.4 §6.4.3.6, without a resource source. On x86 each interrupt number is
// a GSI. Errors: EINVAL for an empty list or more than 255 interrupts.
enum class ResourceUsage : uint8_t { kProducer = 0, kConsumer = 1 };
enum class InterruptTrigger : uint8_t { kLevel = 0, kEdge = 1 };
enum class InterruptPolarity : uint8_t { kActiveHigh = 0, kActiveLow = 1 };
enum class InterruptSharing : uint8_t {
  kExclusive = 0,
  kShared = 1,
  kExclusiveAndWake = 2,
  kSharedAndWake = 3,
};
Resource Interrupt(ResourceUsage usage, InterruptTrigger trigger, InterruptPolarity polarity,
                   InterruptSharing sharing, const std::vector<uint32_t>& interrupts);

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
