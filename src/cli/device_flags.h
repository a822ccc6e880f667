// Parsing of the device flags of tern-vmm, in QEMU's key=value style:
//   --disk path=PATH[,readonly=on|off]   --net tap=NAME[,mac=52:54:00:12:34:56]
// A literal comma inside a value is written ",," (as in QEMU's -drive file=...).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "net/tap.h"
#include "virtio/block.h"
#include "vmm/vmm.h"

namespace tern::cli {

// Splits "k1=v1,k2=v2" into keys and values. EINVAL errors naming `flag` for an empty item, an
// item without '=', an empty key, a key not in `allowed` (the message lists them) and a key
// given twice.
Result<std::map<std::string, std::string>> ParseKeyValues(
    std::string_view flag, std::string_view text, std::initializer_list<std::string_view> allowed);

// "--disk path=PATH[,readonly=on|off]": path is required and non-empty; readonly accepts on/off
// (also true/false, yes/no, 1/0) and defaults to off. EINVAL errors name --disk.
Result<virtio::BlockOptions> ParseDiskFlag(std::string_view text);

// "--net tap=NAME[,mac=MAC]": tap is required, 1..15 bytes (IFNAMSIZ - 1), no '/' or
// whitespace; mac as net::ParseMacAddress. EINVAL errors name --net.
Result<NetConfig> ParseNetFlag(std::string_view text);

}  // namespace tern::cli
