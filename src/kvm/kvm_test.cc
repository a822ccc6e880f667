// Unit tests for the host check that refuses KVM without hardware virtualization (PVM).
#include "kvm/kvm.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string>

namespace tern::kvm {
namespace {

std::string MakeSysModuleDir(std::initializer_list<const char*> modules) {
  char templ[] = "/tmp/tern-sysmodule-XXXXXX";
  std::string dir = ::mkdtemp(templ);
  for (const char* module : modules) ::mkdir((dir + "/" + module).c_str(), 0755);
  return dir;
}

TEST(HardwareVirtualizationTest, RefusesPvmWithOneLineHint) {
  auto status = CheckHardwareVirtualization(MakeSysModuleDir({"kvm", "kvm_pvm"}));
  ASSERT_FALSE(status.ok());
  const std::string& message = status.error().message();
  EXPECT_NE(message.find("PVM"), std::string::npos);
  EXPECT_NE(message.find("test host"), std::string::npos);
  EXPECT_EQ(message.find('\n'), std::string::npos);
}

TEST(HardwareVirtualizationTest, RefusesHostWithoutVendorModule) {
  auto status = CheckHardwareVirtualization(MakeSysModuleDir({"kvm"}));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("VT-x/AMD-V"), std::string::npos);
}

}  // namespace
}  // namespace tern::kvm
