// Builds the SMBIOS 3.0 entry point and structure table (see smbios.h) and writes them at
// kSmbiosStart.
#include "arch/x86_64/smbios.h"

#include <cstring>
#include <vector>

#include "arch/x86_64/layout.h"

namespace tern::x86_64 {
namespace {

constexpr uint8_t kBiosInformation = 0;
constexpr uint8_t kSystemInformation = 1;
constexpr uint8_t kEndOfTable = 127;
constexpr uint8_t kWakeUpPowerSwitch = 0x06;               // §7.2.2
constexpr uint64_t kCharacteristicsNotSupported = 1 << 3;  // §7.1.1, bit 3
constexpr uint8_t kExtensionVirtualMachine = 1 << 4;       // §7.1.2.2, byte 2 bit 4

#pragma pack(push, 1)
struct EntryPoint3 {  // §5.2.2, 24 bytes
  char anchor[5];
  uint8_t checksum;
  uint8_t length;
  uint8_t major, minor, docrev;
  uint8_t revision;
  uint8_t reserved;
  uint32_t max_table_size;
  uint64_t table_address;
};
struct Header {  // §6.1.2
  uint8_t type;
  uint8_t length;
  uint16_t handle;
};
struct BiosInformation {  // §7.1, SMBIOS 2.4+ layout
  Header header;
  uint8_t vendor, version;
  uint16_t starting_segment;
  uint8_t release_date;
  uint8_t rom_size;
  uint64_t characteristics;
  uint8_t extension[2];
  uint8_t major_release, minor_release;
  uint8_t ec_major_release, ec_minor_release;
};
struct SystemInformation {  // §7.2, SMBIOS 2.4+ layout
  Header header;
  uint8_t manufacturer, product_name, version, serial_number;
  uint8_t uuid[16];
  uint8_t wake_up_type;
  uint8_t sku_number, family;
};
#pragma pack(pop)
static_assert(sizeof(EntryPoint3) == 0x18);
static_assert(sizeof(BiosInformation) == 0x18);
static_assert(sizeof(SystemInformation) == 0x1b);

// One structure: its formatted area, then its string set (§6.1.3).
class Structure {
 public:
  // The number to store for `text` (0 when empty: no string).
  uint8_t Add(const std::string& text) {
    if (text.empty()) return 0;
    strings_.insert(strings_.end(), text.begin(), text.end());
    strings_.push_back(0);
    return ++count_;
  }
  template <typename T>
  void AppendTo(std::vector<uint8_t>& table, const T& formatted) const {
    auto bytes = reinterpret_cast<const uint8_t*>(&formatted);
    table.insert(table.end(), bytes, bytes + sizeof(T));
    table.insert(table.end(), strings_.begin(), strings_.end());
    table.push_back(0);  // the set's terminator (a second NUL when there are no strings)
    if (strings_.empty()) table.push_back(0);
  }

 private:
  std::vector<uint8_t> strings_;
  uint8_t count_ = 0;
};

std::vector<uint8_t> BuildTable(const SmbiosSystemInfo& info) {
  std::vector<uint8_t> table;
  Structure bios;
  BiosInformation b{};
  b.header = {kBiosInformation, sizeof(BiosInformation), 0};
  b.vendor = bios.Add("Tern");
  b.version = bios.Add("tern-vmm");
  b.release_date = bios.Add("11/21/2026");
  b.characteristics = kCharacteristicsNotSupported;
  b.extension[1] = kExtensionVirtualMachine;
  b.ec_major_release = b.ec_minor_release = 0xff;  // no embedded controller
  bios.AppendTo(table, b);

  Structure system;
  SystemInformation s{};
  s.header = {kSystemInformation, sizeof(SystemInformation), 1};
  s.manufacturer = system.Add(info.manufacturer);
  s.product_name = system.Add(info.product_name);
  s.version = system.Add(info.version);
  s.serial_number = system.Add(info.serial_number);
  // §7.2.1: time_low, time_mid and time_hi_and_version little-endian, the rest as in RFC 4122.
  static constexpr int kOrder[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int i = 0; i < 16; ++i) s.uuid[i] = info.uuid[kOrder[i]];
  s.wake_up_type = kWakeUpPowerSwitch;
  s.sku_number = system.Add(info.sku_number);
  s.family = system.Add(info.family);
  system.AppendTo(table, s);

  Structure end;
  end.AppendTo(table, Header{kEndOfTable, sizeof(Header), 2});
  return table;
}

uint8_t Checksum(const void* data, size_t size) {
  uint8_t sum = 0;
  for (size_t i = 0; i < size; ++i) sum += static_cast<const uint8_t*>(data)[i];
  return static_cast<uint8_t>(-sum);
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<std::array<uint8_t, 16>> ParseSmbiosUuid(std::string_view text) {
  std::array<uint8_t, 16> uuid{};
  auto bad = [&] {
    return Error("UUID '" + std::string(text) +
                     "' is not of the form "
                     "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
                 EINVAL);
  };
  if (text.size() != 36) return bad();
  size_t at = 0;
  for (size_t i = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return bad();
      continue;
    }
    int digit = HexDigit(text[i]);
    if (digit < 0) return bad();
    uuid[at / 2] = static_cast<uint8_t>(uuid[at / 2] << 4 | digit);
    ++at;
  }
  return uuid;
}

Status ValidateSmbiosSystemInfo(const SmbiosSystemInfo& info) {
  const std::pair<const char*, const std::string*> fields[] = {
      {"manufacturer", &info.manufacturer}, {"product_name", &info.product_name},
      {"version", &info.version},           {"serial_number", &info.serial_number},
      {"sku_number", &info.sku_number},     {"family", &info.family}};
  for (const auto& [name, value] : fields) {
    if (value->size() > kSmbiosMaxStringLength) {
      return Error(std::string("SMBIOS ") + name + " is longer than " +
                       std::to_string(kSmbiosMaxStringLength) + " bytes",
                   EINVAL);
    }
    for (char c : *value) {
      if (c < 0x20 || c > 0x7e) {
        return Error(std::string("SMBIOS ") + name + " must be printable ASCII", EINVAL);
      }
    }
  }
  return Ok();
}

Status SetupSmbios(const GuestMemory& memory, const SmbiosSystemInfo& info) {
  TERN_RETURN_IF_ERROR(ValidateSmbiosSystemInfo(info));
  std::vector<uint8_t> table = BuildTable(info);
  const uint64_t table_address = kSmbiosStart + sizeof(EntryPoint3);
  if (table.size() > kFirmwareEnd - table_address) {
    return Error("SMBIOS tables do not fit below the end of the firmware area", ENOSPC);
  }
  EntryPoint3 entry{};
  std::memcpy(entry.anchor, "_SM3_", 5);
  entry.length = sizeof(EntryPoint3);
  entry.major = 3;
  entry.revision = 1;  // §5.2.2: the SMBIOS 3.0 entry point structure
  entry.max_table_size = static_cast<uint32_t>(table.size());
  entry.table_address = table_address;
  entry.checksum = Checksum(&entry, sizeof(entry));
  Status status = memory.WriteObj(kSmbiosStart, entry);
  if (status.ok()) status = memory.Write(table_address, table);
  if (!status.ok()) return status.error().WithContext("writing the SMBIOS tables");
  return Ok();
}

}  // namespace tern::x86_64
