// AML byte encodings (ACPI 6.4 §20) and small resource descriptors (ACPI 6.4 §6.4).
#include "acpi/aml.h"

#include <cerrno>
#include <initializer_list>
#include <optional>
#include <string>

namespace tern::acpi::aml {
namespace {

// Opcodes and prefixes, ACPI 6.4 §20.3 Table 20.2.
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kOpRegionOp = 0x80;  // after kExtOpPrefix
constexpr uint8_t kFieldOp = 0x81;     // after kExtOpPrefix
constexpr uint8_t kDeviceOp = 0x82;    // after kExtOpPrefix
constexpr uint8_t kRootChar = 0x5c;
constexpr uint8_t kParentPrefixChar = 0x5e;
constexpr uint8_t kLocal0Op = 0x60;
constexpr uint8_t kArg0Op = 0x68;
constexpr uint8_t kStoreOp = 0x70;
constexpr uint8_t kAndOp = 0x7b;
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kLAndOp = 0x90;
constexpr uint8_t kLEqualOp = 0x93;
constexpr uint8_t kIfOp = 0xa0;
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kNullName = 0x00;

// Small resource items, ACPI 6.4 §6.4.2: tag byte = (item name << 3) | body length.
constexpr uint8_t kIrqNoFlagsTag = 0x22;  // IRQ, 2-byte body
constexpr uint8_t kIoPortTag = 0x47;      // I/O port, 7-byte body
constexpr uint8_t kEndTag = 0x79;         // End Tag, 1-byte body (checksum)
constexpr uint8_t kIoDecode16 = 0x01;

// Large resource items, ACPI 6.4 §6.4.3: tag byte, then a 16-bit length of the rest.
constexpr uint8_t kMemory32FixedTag = 0x86;
constexpr uint8_t kDWordAddressSpaceTag = 0x87;
constexpr uint8_t kWordAddressSpaceTag = 0x88;
constexpr uint8_t kExtendedInterruptTag = 0x89;
constexpr uint8_t kQWordAddressSpaceTag = 0x8a;
// Extended Interrupt Descriptor flags, ACPI 6.4 §6.4.3.6: bit 0 consumer, bit 1 edge, bit 2
// active-low, bits 4:3 sharing and wake.
constexpr int kInterruptModeShift = 1;
constexpr int kInterruptPolarityShift = 2;
constexpr int kInterruptSharingShift = 3;
// Address space descriptor fields, ACPI 6.4 §6.4.3.5.1 Table 6.44.
constexpr uint8_t kResourceTypeMemory = 0;
constexpr uint8_t kResourceTypeIo = 1;
constexpr uint8_t kResourceTypeBusNumber = 2;
constexpr uint8_t kMinFixed = 1u << 2;  // _MIF; bit 0 clear: producer, bit 1 clear: PosDecode
constexpr uint8_t kMaxFixed = 1u << 3;  // _MAF
constexpr uint8_t kMemoryReadWrite = 1u << 0;  // _RW, Table 6.47
constexpr uint8_t kMemoryCacheable = 1u << 1;  // _MEM = 1
constexpr uint8_t kIoEntireRange = 0x3;        // _RNG, Table 6.48

constexpr size_t kMaxPkgLength = (size_t{1} << 28) - 1;
// FieldFlags, ACPI 6.4 §20.2.5.2: bits 3:0 AccessType, bit 4 LockRule, bits 6:5 UpdateRule.
constexpr int kFieldLockShift = 4;
constexpr int kFieldUpdateShift = 5;

Error InvalidArgument(const std::string& message) { return Error(message, EINVAL); }

void AppendLe(std::vector<uint8_t>& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// The PkgLength encoding (ACPI 6.4 §20.2.4) of `value` itself, with no adjustment for the
// encoding's own size (what a field unit's bit count uses). `value` <= kMaxPkgLength.
std::vector<uint8_t> EncodeLength(size_t value) {
  if (value <= 63) return {static_cast<uint8_t>(value)};
  const int extra = value < (size_t{1} << 12) ? 1 : value < (size_t{1} << 20) ? 2 : 3;
  std::vector<uint8_t> bytes{static_cast<uint8_t>((extra << 6) | (value & 0x0f))};
  AppendLe(bytes, value >> 4, extra);
  return bytes;
}

// Appends each part's bytes to `out`; returns the first part's error instead, if any.
template <typename Kind>
std::optional<Error> AppendAll(std::vector<uint8_t>& out,
                               std::span<const internal::Encoded<Kind>> parts) {
  for (const auto& part : parts) {
    if (!part.ok()) return part.error();
    out.insert(out.end(), part.bytes().begin(), part.bytes().end());
  }
  return std::nullopt;
}

// `opcode` bytes, then PkgLength, then `content` (the shape of every package-like object).
Term WithPkgLength(std::initializer_list<uint8_t> opcode, const std::vector<uint8_t>& content) {
  Result<std::vector<uint8_t>> length = PkgLength(content.size());
  if (!length.ok()) return Term::FromError(length.error());
  std::vector<uint8_t> bytes(opcode);
  bytes.insert(bytes.end(), length->begin(), length->end());
  bytes.insert(bytes.end(), content.begin(), content.end());
  return Term::FromBytes(std::move(bytes));
}

// The content of a named package-like object: NameString, `extra` bytes, then the body terms.
Result<std::vector<uint8_t>> NamedContent(std::string_view name, std::span<const uint8_t> extra,
                                          std::span<const Term> body) {
  TERN_ASSIGN_OR_RETURN(std::vector<uint8_t> content, NameString(name).Encode());
  content.insert(content.end(), extra.begin(), extra.end());
  if (std::optional<Error> error = AppendAll(content, body)) return *error;
  return content;
}

// Opcode + PkgLength + NameString + extra + body.
Term NamedPackage(std::initializer_list<uint8_t> opcode, std::string_view name,
                  std::span<const uint8_t> extra, std::span<const Term> body) {
  Result<std::vector<uint8_t>> content = NamedContent(name, extra, body);
  if (!content.ok()) return Term::FromError(content.error());
  return WithPkgLength(opcode, *content);
}

// `prefix` bytes followed by each part's bytes, or the first part's error.
Term Concat(std::initializer_list<uint8_t> prefix, std::initializer_list<Term> parts) {
  std::vector<uint8_t> bytes(prefix);
  if (std::optional<Error> error = AppendAll(bytes, std::span(parts.begin(), parts.size()))) {
    return Term::FromError(*error);
  }
  return Term::FromBytes(std::move(bytes));
}

bool IsLeadNameChar(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsLeadNameChar(c) || (c >= '0' && c <= '9'); }

// Appends one NameSeg (ACPI 6.4 §20.2.2), padded to 4 characters with '_'.
Status AppendNameSeg(std::vector<uint8_t>& out, std::string_view seg) {
  if (seg.empty() || seg.size() > 4 || !IsLeadNameChar(seg[0])) {
    return InvalidArgument("invalid AML NameSeg '" + std::string(seg) + "'");
  }
  for (char c : seg) {
    if (!IsNameChar(c)) return InvalidArgument("invalid AML NameSeg '" + std::string(seg) + "'");
    out.push_back(static_cast<uint8_t>(c));
  }
  out.insert(out.end(), 4 - seg.size(), '_');
  return Ok();
}

// Splits "A.B.C" into segments; an empty path gives no segments.
std::vector<std::string_view> SplitSegments(std::string_view path) {
  std::vector<std::string_view> segments;
  while (!path.empty()) {
    size_t dot = path.find('.');
    segments.push_back(path.substr(0, dot));
    if (dot == std::string_view::npos) break;
    path.remove_prefix(dot + 1);
    if (path.empty()) segments.push_back(path);  // trailing '.' is an empty (invalid) segment
  }
  return segments;
}

// Appends NamePath (ACPI 6.4 §20.2.2): NullName, one NameSeg, DualNamePath or MultiNamePath.
Status AppendNamePath(std::vector<uint8_t>& out, std::string_view path) {
  std::vector<std::string_view> segments = SplitSegments(path);
  if (segments.size() > 255) return InvalidArgument("AML name path has over 255 segments");
  if (segments.empty()) {
    out.push_back(kNullName);
  } else if (segments.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segments.size() > 2) {
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segments.size()));
  }
  for (std::string_view seg : segments) TERN_RETURN_IF_ERROR(AppendNameSeg(out, seg));
  return Ok();
}

Status ValidateEisaId(std::string_view id) {
  bool ok = id.size() == 7;
  for (size_t i = 0; ok && i < 3; ++i) ok = id[i] >= 'A' && id[i] <= 'Z';
  for (size_t i = 3; ok && i < 7; ++i) {
    ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'A' && id[i] <= 'F');
  }
  if (!ok) return InvalidArgument("invalid EISA id '" + std::string(id) + "'");
  return Ok();
}

uint32_t HexDigit(char c) { return c <= '9' ? c - '0' : c - 'A' + 10; }

// A producer address space descriptor with MinFixed and MaxFixed, of `width` bytes per field:
// tag, length, resource type, general flags, type-specific flags, then _GRA, _MIN, _MAX, _TRA,
// _LEN (ACPI 6.4 §6.4.3.5.1-3).
Resource AddressSpace(uint8_t tag, int width, uint8_t resource_type, uint8_t type_flags,
                      uint64_t min, uint64_t max) {
  if (min > max) {
    return Resource::FromError(InvalidArgument("address space descriptor has min > max"));
  }
  std::vector<uint8_t> bytes{tag};
  AppendLe(bytes, 3 + 5 * width, 2);
  bytes.insert(bytes.end(), {resource_type, kMinFixed | kMaxFixed, type_flags});
  for (uint64_t field : {uint64_t{0}, min, max, uint64_t{0}, max - min + 1}) {
    AppendLe(bytes, field, width);
  }
  return Resource::FromBytes(std::move(bytes));
}

}  // namespace

Result<std::vector<uint8_t>> PkgLength(size_t content_length) {
  for (size_t extra = 0; extra <= 3; ++extra) {
    size_t total = content_length + 1 + extra;
    size_t limit = extra == 0 ? 63 : (size_t{1} << (4 + 8 * extra)) - 1;
    if (total < content_length || total > limit) continue;
    return EncodeLength(total);
  }
  return InvalidArgument("AML package of " + std::to_string(content_length) +
                         " bytes exceeds the PkgLength limit of " + std::to_string(kMaxPkgLength));
}

Term NameString(std::string_view path) {
  std::vector<uint8_t> bytes;
  if (!path.empty() && path[0] == '\\') {
    bytes.push_back(kRootChar);
    path.remove_prefix(1);
  } else {
    while (!path.empty() && path[0] == '^') {
      bytes.push_back(kParentPrefixChar);
      path.remove_prefix(1);
    }
    if (path.empty()) return Term::FromError(InvalidArgument("empty AML name"));
  }
  Status status = AppendNamePath(bytes, path);
  if (!status.ok()) return Term::FromError(status.error());
  return Term::FromBytes(std::move(bytes));
}

Term Integer(uint64_t value) {
  if (value == 0) return Term::FromBytes({kZeroOp});
  if (value == 1) return Term::FromBytes({kOneOp});
  std::vector<uint8_t> bytes;
  if (value <= 0xff) {
    bytes = {kBytePrefix};
    AppendLe(bytes, value, 1);
  } else if (value <= 0xffff) {
    bytes = {kWordPrefix};
    AppendLe(bytes, value, 2);
  } else if (value <= 0xffffffff) {
    bytes = {kDWordPrefix};
    AppendLe(bytes, value, 4);
  } else {
    bytes = {kQWordPrefix};
    AppendLe(bytes, value, 8);
  }
  return Term::FromBytes(std::move(bytes));
}

Term String(std::string_view text) {
  std::vector<uint8_t> bytes{kStringPrefix};
  for (char c : text) {
    auto byte = static_cast<uint8_t>(c);
    if (byte == 0 || byte > 0x7f) {
      return Term::FromError(InvalidArgument("AML string has a NUL or non-ASCII character"));
    }
    bytes.push_back(byte);
  }
  bytes.push_back(0);
  return Term::FromBytes(std::move(bytes));
}

Term EisaId(std::string_view id) {
  Status valid = ValidateEisaId(id);
  if (!valid.ok()) return Term::FromError(valid.error());
  // Big-endian: 5 bits per letter ('A' = 1) in bits 30..16, then the 16-bit product number.
  uint32_t big_endian = (uint32_t{id[0] - 0x40u} << 26) | (uint32_t{id[1] - 0x40u} << 21) |
                        (uint32_t{id[2] - 0x40u} << 16);
  for (size_t i = 3; i < 7; ++i) big_endian |= HexDigit(id[i]) << (4 * (6 - i));
  std::vector<uint8_t> bytes{kDWordPrefix};
  for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(uint8_t(big_endian >> shift));
  return Term::FromBytes(std::move(bytes));
}

Term Package(const std::vector<Term>& elements) {
  if (elements.size() > 255) {
    return Term::FromError(InvalidArgument("AML Package has over 255 elements"));
  }
  std::vector<uint8_t> content{static_cast<uint8_t>(elements.size())};
  if (std::optional<Error> error = AppendAll(content, std::span(elements))) {
    return Term::FromError(*error);
  }
  return WithPkgLength({kPackageOp}, content);
}

Term Name(std::string_view name, const Term& value) {
  const Term name_string = NameString(name);
  if (!name_string.ok()) return name_string;
  if (!value.ok()) return value;
  std::vector<uint8_t> bytes{kNameOp};
  bytes.insert(bytes.end(), name_string.bytes().begin(), name_string.bytes().end());
  bytes.insert(bytes.end(), value.bytes().begin(), value.bytes().end());
  return Term::FromBytes(std::move(bytes));
}

Term Scope(std::string_view name, const std::vector<Term>& body) {
  return NamedPackage({kScopeOp}, name, {}, body);
}

Term Device(std::string_view name, const std::vector<Term>& body) {
  return NamedPackage({kExtOpPrefix, kDeviceOp}, name, {}, body);
}

Term Method(std::string_view name, uint8_t arg_count, bool serialized,
            const std::vector<Term>& body) {
  if (arg_count > 7) {
    return Term::FromError(InvalidArgument("AML Method takes at most 7 arguments"));
  }
  // MethodFlags: bits 0-2 ArgCount, bit 3 SerializeFlag, bits 4-7 SyncLevel (0).
  const uint8_t flags = static_cast<uint8_t>(arg_count | (serialized ? 0x08 : 0));
  return NamedPackage({kMethodOp}, name, std::span(&flags, 1), body);
}

Term Return(const Term& value) {
  if (!value.ok()) return value;
  std::vector<uint8_t> bytes{kReturnOp};
  bytes.insert(bytes.end(), value.bytes().begin(), value.bytes().end());
  return Term::FromBytes(std::move(bytes));
}

Term OperationRegion(std::string_view name, RegionSpace space, uint64_t offset, uint64_t length) {
  // DefOpRegion := OpRegionOp NameString RegionSpace RegionOffset RegionLen.
  return Concat({kExtOpPrefix, kOpRegionOp},
                {NameString(name), Term::FromBytes({static_cast<uint8_t>(space)}), Integer(offset),
                 Integer(length)});
}

Term Field(std::string_view region, FieldAccess access, FieldLock lock, FieldUpdate update,
           const std::vector<FieldUnit>& units) {
  // DefField := FieldOp PkgLength NameString FieldFlags FieldList, where a NamedField is
  // NameSeg PkgLength and a ReservedField is 0x00 PkgLength, the PkgLength holding the bit count.
  const auto flags = static_cast<uint8_t>(static_cast<uint8_t>(access) |
                                          (static_cast<uint8_t>(lock) << kFieldLockShift) |
                                          (static_cast<uint8_t>(update) << kFieldUpdateShift));
  std::vector<uint8_t> field_list;
  for (const FieldUnit& unit : units) {
    if (unit.bits == 0 || unit.bits > kMaxPkgLength) {
      return Term::FromError(InvalidArgument("AML field unit '" + std::string(unit.name) +
                                             "' must be 1 to 2^28 - 1 bits wide"));
    }
    if (unit.name.empty()) {
      field_list.push_back(kNullName);
    } else if (Status seg = AppendNameSeg(field_list, unit.name); !seg.ok()) {
      return Term::FromError(seg.error());
    }
    std::vector<uint8_t> bits = EncodeLength(unit.bits);
    field_list.insert(field_list.end(), bits.begin(), bits.end());
  }
  const uint8_t extra[] = {flags};
  std::vector<Term> body = {Term::FromBytes(std::move(field_list))};
  return NamedPackage({kExtOpPrefix, kFieldOp}, region, extra, body);
}

Term Local(uint8_t n) {
  if (n > 7) return Term::FromError(InvalidArgument("AML has Local0 to Local7 only"));
  return Term::FromBytes({static_cast<uint8_t>(kLocal0Op + n)});
}

Term Arg(uint8_t n) {
  if (n > 6) return Term::FromError(InvalidArgument("AML has Arg0 to Arg6 only"));
  return Term::FromBytes({static_cast<uint8_t>(kArg0Op + n)});
}

Term Store(const Term& value, const Term& target) { return Concat({kStoreOp}, {value, target}); }

Term If(const Term& predicate, const std::vector<Term>& body) {
  std::vector<uint8_t> content;
  std::initializer_list<Term> head = {predicate};
  std::optional<Error> error = AppendAll(content, std::span(head.begin(), head.size()));
  if (!error) error = AppendAll(content, std::span(body));
  if (error) return Term::FromError(*error);
  return WithPkgLength({kIfOp}, content);
}

Term Notify(const Term& object, const Term& value) { return Concat({kNotifyOp}, {object, value}); }

Term And(const Term& a, const Term& b) {
  return Concat({kAndOp}, {a, b, Term::FromBytes({kNullName})});
}

Term LAnd(const Term& a, const Term& b) { return Concat({kLAndOp}, {a, b}); }

Term LEqual(const Term& a, const Term& b) { return Concat({kLEqualOp}, {a, b}); }

Term ResourceTemplate(const std::vector<Resource>& descriptors) {
  std::vector<uint8_t> data;
  if (std::optional<Error> error = AppendAll(data, std::span(descriptors))) {
    return Term::FromError(*error);
  }
  data.insert(data.end(), {kEndTag, 0});
  // DefBuffer := BufferOp PkgLength BufferSize ByteList (ACPI 6.4 §20.2.5.4).
  std::vector<uint8_t> content = Integer(data.size()).bytes();
  content.insert(content.end(), data.begin(), data.end());
  return WithPkgLength({kBufferOp}, content);
}

Resource Io(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
  std::vector<uint8_t> bytes{kIoPortTag, kIoDecode16};
  AppendLe(bytes, min, 2);
  AppendLe(bytes, max, 2);
  bytes.push_back(alignment);
  bytes.push_back(length);
  return Resource::FromBytes(std::move(bytes));
}

Resource IrqNoFlags(uint8_t irq) {
  if (irq > 15) return Resource::FromError(InvalidArgument("IRQ descriptor needs an IRQ 0-15"));
  std::vector<uint8_t> bytes{kIrqNoFlagsTag};
  AppendLe(bytes, 1u << irq, 2);
  return Resource::FromBytes(std::move(bytes));
}

Resource Interrupt(ResourceUsage usage, InterruptTrigger trigger, InterruptPolarity polarity,
                   InterruptSharing sharing, const std::vector<uint32_t>& interrupts) {
  if (interrupts.empty() || interrupts.size() > 255) {
    return Resource::FromError(
        InvalidArgument("extended interrupt descriptor needs 1 to 255 interrupts"));
  }
  std::vector<uint8_t> bytes{kExtendedInterruptTag};
  AppendLe(bytes, 2 + 4 * interrupts.size(), 2);  // flags, table length, the interrupts
  bytes.push_back(static_cast<uint8_t>(static_cast<uint8_t>(usage) |
                                       (static_cast<uint8_t>(trigger) << kInterruptModeShift) |
                                       (static_cast<uint8_t>(polarity) << kInterruptPolarityShift) |
                                       (static_cast<uint8_t>(sharing) << kInterruptSharingShift)));
  bytes.push_back(static_cast<uint8_t>(interrupts.size()));
  for (uint32_t interrupt : interrupts) AppendLe(bytes, interrupt, 4);
  return Resource::FromBytes(std::move(bytes));
}

Resource Memory32Fixed(bool read_write, uint32_t base, uint32_t length) {
  std::vector<uint8_t> bytes{kMemory32FixedTag};
  AppendLe(bytes, 9, 2);
  bytes.push_back(read_write ? kMemoryReadWrite : 0);
  AppendLe(bytes, base, 4);
  AppendLe(bytes, length, 4);
  return Resource::FromBytes(std::move(bytes));
}

Resource WordBusNumber(uint16_t min, uint16_t max) {
  return AddressSpace(kWordAddressSpaceTag, 2, kResourceTypeBusNumber, 0, min, max);
}

Resource WordIo(uint16_t min, uint16_t max) {
  return AddressSpace(kWordAddressSpaceTag, 2, kResourceTypeIo, kIoEntireRange, min, max);
}

Resource DWordMemory(uint32_t min, uint32_t max) {
  return AddressSpace(kDWordAddressSpaceTag, 4, kResourceTypeMemory,
                      kMemoryCacheable | kMemoryReadWrite, min, max);
}

Resource QWordMemory(uint64_t min, uint64_t max) {
  return AddressSpace(kQWordAddressSpaceTag, 8, kResourceTypeMemory,
                      kMemoryCacheable | kMemoryReadWrite, min, max);
}

}  // namespace tern::acpi::aml
