// Unit tests for VmResources: Firecracker-shaped JSON validation, PUT/PATCH semantics, the
// --config-file format and the VmConfig it builds.
#include "vmm/vm_resources.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

using nlohmann::json;

json Drive(const std::string& id, bool root, const std::string& path = "/img") {
  return {{"drive_id", id}, {"path_on_host", path}, {"is_root_device", root}};
}

TEST(VmResourcesTest, MachineConfigPutNeedsBothFieldsPatchChangesSome) {
  VmResources r;
  EXPECT_FALSE(r.SetMachineConfig({{"vcpu_count", 2}}, false).ok());
  ASSERT_TRUE(r.SetMachineConfig({{"vcpu_count", 2}, {"mem_size_mib", 512}}, false).ok());
  ASSERT_TRUE(r.SetMachineConfig({{"mem_size_mib", 1024}}, true).ok());
  EXPECT_EQ(r.MachineConfigJson()["vcpu_count"], 2);
  EXPECT_EQ(r.MachineConfigJson()["mem_size_mib"], 1024);
}

TEST(VmResourcesTest, RefusedRequestsChangeNothing) {
  VmResources r;
  for (const json& bad :
       {json{{"vcpu_count", 0}}, json{{"vcpu_count", -1}}, json{{"vcpu_count", 1.5}},
        json{{"mem_size_mib", "big"}}, json{{"vcpu_count", 3}, {"smt", true}},
        json{{"surprise", 1}}, json::array(), json{{"cpu_template", "T2"}}}) {
    Status status = r.SetMachineConfig(bad, true);
    EXPECT_FALSE(status.ok()) << bad.dump();
    EXPECT_EQ(status.error().errno_value(), EINVAL);
  }
  EXPECT_EQ(r.MachineConfigJson()["vcpu_count"], 1);
}

TEST(VmResourcesTest, DrivesNeedMatchingIdsAndOneRoot) {
  VmResources r;
  EXPECT_FALSE(r.PutDrive("a", Drive("b", false)).ok());
  EXPECT_FALSE(r.PutDrive("a-b", Drive("a-b", false)).ok());
  ASSERT_TRUE(r.PutDrive("root", Drive("root", true)).ok());
  EXPECT_FALSE(r.PutDrive("other", Drive("other", true)).ok());
  ASSERT_TRUE(r.PutDrive("root", Drive("root", true, "/new")).ok());  // replace itself
  ASSERT_TRUE(r.PatchDrive("root", {{"drive_id", "root"}, {"path_on_host", "/p"}}).ok());
  EXPECT_FALSE(r.PatchDrive("none", {{"drive_id", "none"}}).ok());
  EXPECT_EQ(r.ToJson()["drives"][0]["path_on_host"], "/p");
}

TEST(VmResourcesTest, NetworkInterfacesValidateMacAndTapName) {
  VmResources r;
  json net = {{"iface_id", "eth0"}, {"host_dev_name", "tap0"}, {"guest_mac", "aa:bb"}};
  EXPECT_FALSE(r.PutNetworkInterface("eth0", net).ok());
  net["guest_mac"] = "06:00:00:00:00:01";
  ASSERT_TRUE(r.PutNetworkInterface("eth0", net).ok());
  json second = {{"iface_id", "eth1"}, {"host_dev_name", "tap0"}};
  EXPECT_FALSE(r.PutNetworkInterface("eth1", second).ok());  // same TAP
  second["host_dev_name"] = "a-very-long-tap-name";
  EXPECT_FALSE(r.PutNetworkInterface("eth1", second).ok());
}

TEST(VmResourcesTest, BuildPutsRootDriveFirstAndAddsRootArgument) {
  VmResources r;
  EXPECT_FALSE(r.BuildVmConfig().ok());  // no boot source
  ASSERT_TRUE(r.SetBootSource({{"kernel_image_path", "/k"}, {"boot_args", "console=ttyS0"}}).ok());
  ASSERT_TRUE(r.PutDrive("data", Drive("data", false, "/data")).ok());
  json root = Drive("root", true, "/root");
  root["is_read_only"] = true;
  ASSERT_TRUE(r.PutDrive("root", root).ok());
  auto config = r.BuildVmConfig();
  ASSERT_TRUE(config.ok());
  ASSERT_EQ(config->disks.size(), 2u);
  EXPECT_EQ(config->disks[0].path, "/root");
  EXPECT_TRUE(config->disks[0].read_only);
  EXPECT_EQ(config->cmdline, "console=ttyS0 root=/dev/vda ro");
}

TEST(VmResourcesTest, LoadIsAllOrNothingAndRoundTrips) {
  VmResources r;
  json config = {{"boot-source", {{"kernel_image_path", "/k"}}},
                 {"machine-config", {{"vcpu_count", 2}, {"mem_size_mib", 128}}},
                 {"drives", {Drive("root", true)}},
                 {"network-interfaces", {{{"iface_id", "n"}, {"host_dev_name", "tap1"}}}}};
  json bad = config;
  bad["drives"].push_back(Drive("second", true));
  EXPECT_FALSE(r.Load(bad).ok());
  EXPECT_FALSE(r.has_boot_source());
  EXPECT_FALSE(r.Load({{"balloons", json::object()}}).ok());
  ASSERT_TRUE(r.Load(config).ok());
  VmResources copy;
  ASSERT_TRUE(copy.Load(r.ToJson()).ok());
  EXPECT_EQ(copy.ToJson(), r.ToJson());
}

TEST(VmResourcesTest, SmbiosReachesTheVmConfigAndRoundTrips) {
  VmResources r;
  ASSERT_TRUE(r.SetBootSource({{"kernel_image_path", "/k"}}).ok());
  for (const json& bad : {json{{"uuid", "ec2-not-a-uuid"}}, json{{"product_name", "a\tb"}},
                          json{{"family", std::string(65, 'f')}}, json{{"vendor", "x"}},
                          json{{"serial_number", 7}}}) {
    EXPECT_EQ(r.SetSmbios(bad).error().errno_value(), EINVAL) << bad.dump();
  }
  EXPECT_EQ(r.BuildVmConfig()->smbios.manufacturer, "Tern");  // the default, unchanged
  json smbios = {{"manufacturer", "Amazon EC2"},
                 {"product_name", "t3.micro"},
                 {"serial_number", "ec2e1916-9099-7caf-fd21-012345abcdef"},
                 {"uuid", "ec2e1916-9099-7caf-fd21-012345abcdef"}};
  ASSERT_TRUE(r.Load({{"smbios", smbios}}).ok());
  Result<VmConfig> config = r.BuildVmConfig();
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->smbios.manufacturer, "Amazon EC2");
  EXPECT_EQ(config->smbios.product_name, "t3.micro");
  EXPECT_EQ(config->smbios.uuid[0], 0xec);
  EXPECT_EQ(config->smbios.uuid[15], 0xef);
  VmResources copy;
  ASSERT_TRUE(copy.Load(r.ToJson()).ok());
  EXPECT_EQ(copy.ToJson(), r.ToJson());
  EXPECT_EQ(r.ToJson()["smbios"]["uuid"], smbios["uuid"]);
}

}  // namespace
}  // namespace tern
