// The instance types ternd offers (DescribeInstanceTypes), with EC2's vCPUs and memory for the
// same names (https://aws.amazon.com/ec2/instance-types/), and whether one fits this host.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace tern::cloud {

struct InstanceType {
  const char* name;     // "t3.micro"
  uint32_t vcpus;       // defaultVCpus
  uint32_t cores;       // defaultCores (vcpus / threads per core)
  uint64_t memory_mib;  // memoryInfo.sizeInMiB
  bool burstable;       // burstablePerformanceSupported (the T family)
};

// Every offered type, t3.nano ... m5.xlarge, in EC2's order.
std::span<const InstanceType> InstanceTypes();

// The type named `name`, or nullptr.
const InstanceType* FindInstanceType(const std::string& name);

// What this host can give instances: its CPUs and memory (MiB) beyond a reserve for the host.
struct HostCapacity {
  uint32_t cpus = 0;
  uint64_t memory_mib = 0;

  // This machine: online CPUs, and MemTotal from /proc/meminfo minus `reserve_mib`.
  static HostCapacity Probe(uint64_t reserve_mib);

  // Whether an instance of `type` fits beside instances that already hold `used_memory_mib`:
  // its vCPUs must not exceed the host's CPUs (vCPUs of different instances may share CPUs)
  // and the memory of all must fit.
  bool Fits(const InstanceType& type, uint64_t used_memory_mib) const {
    return type.vcpus <= cpus && used_memory_mib + type.memory_mib <= memory_mib;
  }
};

}  // namespace tern::cloud
