// ACPI checksums, SDT headers, the RSDP, the XSDT and table placement (ACPI 6.4 §5.2).
#include "acpi/sdt.h"

#include <cerrno>
#include <cstdio>
#include <limits>
#include <string>

namespace tern::acpi {
namespace {

// Copies the N - 1 characters of a string literal (without its NUL) into a fixed-width field.
template <size_t N>
void CopyId(char (&field)[N - 1], const char (&value)[N]) {
  std::memcpy(field, value, N - 1);
}

std::string Hex(uint64_t value) {
  char text[19];
  std::snprintf(text, sizeof(text), "%#llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

uint8_t Checksum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t byte : bytes) sum = static_cast<uint8_t>(sum + byte);
  return static_cast<uint8_t>(0 - sum);
}

GenericAddress IoPortByteRegister(uint16_t port) {
  return GenericAddress{.address_space_id = kAddressSpaceSystemIo,
                        .register_bit_width = 8,
                        .register_bit_offset = 0,
                        .access_size = kAccessSizeByte,
                        .address = port};
}

SdtHeader MakeSdtHeader(const char (&signature)[5], uint8_t revision) {
  SdtHeader header{};
  CopyId(header.signature, signature);
  header.revision = revision;
  CopyId(header.oem_id, kOemId);
  CopyId(header.oem_table_id, kOemTableId);
  header.oem_revision = kOemRevision;
  CopyId(header.creator_id, kCreatorId);
  header.creator_revision = kCreatorRevision;
  return header;
}

Status SealSdt(std::span<uint8_t> table) {
  if (table.size() < sizeof(SdtHeader) || table.size() > std::numeric_limits<uint32_t>::max()) {
    return Error("ACPI table size " + std::to_string(table.size()) + " is out of range", EINVAL);
  }
  SdtHeader header;
  std::memcpy(&header, table.data(), sizeof(header));
  header.length = static_cast<uint32_t>(table.size());
  header.checksum = 0;
  std::memcpy(table.data(), &header, sizeof(header));
  header.checksum = Checksum(table);
  std::memcpy(table.data(), &header, sizeof(header));
  return Ok();
}

Result<std::vector<uint8_t>> BuildSdt(const char (&signature)[5], uint8_t revision,
                                      std::span<const uint8_t> body) {
  std::vector<uint8_t> table;
  table.reserve(sizeof(SdtHeader) + body.size());
  AppendBytes(table, MakeSdtHeader(signature, revision));
  table.insert(table.end(), body.begin(), body.end());
  TERN_RETURN_IF_ERROR(SealSdt(table));
  return table;
}

Rsdp MakeRsdp(uint64_t xsdt_address) {
  Rsdp rsdp{};
  std::memcpy(rsdp.signature, "RSD PTR ", sizeof(rsdp.signature));
  CopyId(rsdp.oem_id, kOemId);
  rsdp.revision = 2;
  rsdp.length = sizeof(Rsdp);
  rsdp.xsdt_address = xsdt_address;
  const auto* bytes = reinterpret_cast<const uint8_t*>(&rsdp);
  rsdp.checksum = Checksum(std::span(bytes, kRsdpV1Length));
  rsdp.extended_checksum = Checksum(std::span(bytes, sizeof(Rsdp)));
  return rsdp;
}

Result<std::vector<uint8_t>> BuildXsdt(std::span<const uint64_t> table_addresses) {
  std::vector<uint8_t> body;
  for (uint64_t address : table_addresses) AppendBytes(body, address);
  return BuildSdt("XSDT", kXsdtRevision, body);
}

Result<uint64_t> TableArea::Allocate(uint64_t size, uint64_t alignment) {
  if (alignment == 0 || !std::has_single_bit(alignment)) {
    return Error("table alignment " + std::to_string(alignment) + " is not a power of two", EINVAL);
  }
  uint64_t start = (next_ + alignment - 1) & ~(alignment - 1);
  if (start < next_ || start > end_ || size > end_ - start) {
    return Error("a " + std::to_string(size) + "-byte table does not fit below " + Hex(end_),
                 ENOSPC);
  }
  next_ = start + size;
  return start;
}

}  // namespace tern::acpi
