// Unit tests for the instance type catalog and the capacity check.
#include "cloud/instance_types.h"

#include <gtest/gtest.h>

namespace tern::cloud {
namespace {

TEST(InstanceTypesTest, CatalogHasEc2Sizes) {
  const InstanceType* micro = FindInstanceType("t3.micro");
  ASSERT_NE(micro, nullptr);
  EXPECT_EQ(micro->vcpus, 2u);
  EXPECT_EQ(micro->memory_mib, 1024u);
  const InstanceType* m5 = FindInstanceType("m5.xlarge");
  ASSERT_NE(m5, nullptr);
  EXPECT_EQ(m5->vcpus, 4u);
  EXPECT_EQ(m5->memory_mib, 16384u);
  EXPECT_EQ(FindInstanceType("t3.nano")->memory_mib, 512u);
  EXPECT_EQ(FindInstanceType("t3.mega"), nullptr);
  EXPECT_EQ(InstanceTypes().front().name, std::string("t3.nano"));
}

TEST(InstanceTypesTest, FitsCountsMemoryOfAllAndCpusOfOne) {
  HostCapacity host{2, 3000};
  const InstanceType& micro = *FindInstanceType("t3.micro");
  EXPECT_TRUE(host.Fits(micro, 0));
  EXPECT_TRUE(host.Fits(micro, 1976));
  EXPECT_FALSE(host.Fits(micro, 1977));
  EXPECT_FALSE(host.Fits(*FindInstanceType("t3.xlarge"), 0));  // 4 vCPUs on 2 CPUs
}

TEST(InstanceTypesTest, ProbeReadsThisMachine) {
  HostCapacity host = HostCapacity::Probe(0);
  EXPECT_GE(host.cpus, 1u);
  EXPECT_GT(host.memory_mib, 64u);
  EXPECT_EQ(HostCapacity::Probe(host.memory_mib + 1).memory_mib, 0u);
}

}  // namespace
}  // namespace tern::cloud
