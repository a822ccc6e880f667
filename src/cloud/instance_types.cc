// The instance type catalog and host capacity (see instance_types.h).
#include "cloud/instance_types.h"

#include <unistd.h>

#include <array>
#include <fstream>

namespace tern::cloud {
namespace {

constexpr std::array kTypes = {
    InstanceType{"t3.nano", 2, 1, 512, true},      InstanceType{"t3.micro", 2, 1, 1024, true},
    InstanceType{"t3.small", 2, 1, 2048, true},    InstanceType{"t3.medium", 2, 1, 4096, true},
    InstanceType{"t3.large", 2, 1, 8192, true},    InstanceType{"t3.xlarge", 4, 2, 16384, true},
    InstanceType{"t3.2xlarge", 8, 4, 32768, true}, InstanceType{"m5.large", 2, 1, 8192, false},
    InstanceType{"m5.xlarge", 4, 2, 16384, false},
};

}  // namespace

std::span<const InstanceType> InstanceTypes() { return kTypes; }

const InstanceType* FindInstanceType(const std::string& name) {
  for (const InstanceType& type : kTypes) {
    if (name == type.name) return &type;
  }
  return nullptr;
}

HostCapacity HostCapacity::Probe(uint64_t reserve_mib) {
  HostCapacity capacity;
  capacity.cpus = static_cast<uint32_t>(::sysconf(_SC_NPROCESSORS_ONLN));
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (meminfo >> key >> kib && key != "MemTotal:") meminfo.ignore(256, '\n');
  uint64_t total_mib = kib / 1024;
  capacity.memory_mib = total_mib > reserve_mib ? total_mib - reserve_mib : 0;
  return capacity;
}

}  // namespace tern::cloud
