// Parsing of tern-vmm's key=value device flags (--disk, --net).
#include "cli/device_flags.h"

#include <net/if.h>

namespace tern::cli {
namespace {

// The items of a comma-separated list, with ",," read as a literal comma.
std::vector<std::string> SplitItems(std::string_view text) {
  std::vector<std::string> items(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ',') {
      items.back() += text[i];
    } else if (i + 1 < text.size() && text[i + 1] == ',') {
      items.back() += ',';
      ++i;
    } else {
      items.emplace_back();
    }
  }
  return items;
}

std::string Join(std::initializer_list<std::string_view> names) {
  std::string out;
  for (std::string_view name : names) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

Result<bool> ParseSwitch(std::string_view flag, std::string_view key, std::string_view value) {
  if (value == "on" || value == "true" || value == "yes" || value == "1") return true;
  if (value == "off" || value == "false" || value == "no" || value == "0") return false;
  return Error(
      std::string(flag) + ": " + std::string(key) + "=" + std::string(value) + " is not on or off",
      EINVAL);
}

}  // namespace

Result<std::map<std::string, std::string>> ParseKeyValues(
    std::string_view flag, std::string_view text, std::initializer_list<std::string_view> allowed) {
  std::map<std::string, std::string> values;
  for (const std::string& item : SplitItems(text)) {
    size_t equals = item.find('=');
    if (equals == std::string::npos || equals == 0) {
      return Error(
          std::string(flag) + ": '" + item + "' is not key=value (keys: " + Join(allowed) + ")",
          EINVAL);
    }
    std::string key = item.substr(0, equals);
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Error(std::string(flag) + ": unknown key '" + key + "' (keys: " + Join(allowed) + ")",
                   EINVAL);
    }
    if (!values.emplace(key, item.substr(equals + 1)).second) {
      return Error(std::string(flag) + ": key '" + key + "' given twice", EINVAL);
    }
  }
  return values;
}

Result<virtio::BlockOptions> ParseDiskFlag(std::string_view text) {
  TERN_ASSIGN_OR_RETURN(auto values, ParseKeyValues("--disk", text, {"path", "readonly"}));
  virtio::BlockOptions options;
  options.path = values["path"];
  if (options.path.empty()) return Error("--disk: path=PATH is required", EINVAL);
  if (values.count("readonly")) {
    TERN_ASSIGN_OR_RETURN(options.read_only, ParseSwitch("--disk", "readonly", values["readonly"]));
  }
  return options;
}

Result<NetConfig> ParseNetFlag(std::string_view text) {
  TERN_ASSIGN_OR_RETURN(auto values, ParseKeyValues("--net", text, {"tap", "mac"}));
  NetConfig flag;
  flag.tap = values["tap"];
  if (flag.tap.empty()) return Error("--net: tap=NAME is required", EINVAL);
  if (flag.tap.size() >= IFNAMSIZ || flag.tap.find_first_of("/ \t\n") != std::string::npos) {
    return Error("--net: tap=" + flag.tap + " is not a valid interface name (1.." +
                     std::to_string(IFNAMSIZ - 1) + " bytes, no '/' or spaces)",
                 EINVAL);
  }
  if (values.count("mac")) {
    auto mac = net::ParseMacAddress(values["mac"]);
    if (!mac.ok()) return mac.error().WithContext("--net");
    flag.mac = *mac;
  }
  return flag;
}

}  // namespace tern::cli
