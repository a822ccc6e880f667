// Unit tests for AddAwsProfile: fresh files, existing profiles kept, other profiles untouched.
#include "cloud/aws_profile.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace tern::cloud {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class AwsProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/aws-profile-test-XXXXXX";
    dir_ = std::string(::mkdtemp(tmpl)) + "/.aws";
  }
  void TearDown() override {
    std::filesystem::remove_all(std::filesystem::path(dir_).parent_path());
  }

  std::string dir_;
  AwsProfile profile_{"tern", "AKIAEXAMPLE", "secret/key", "us-east-1", "http://127.0.0.1:8787"};
};

TEST_F(AwsProfileTest, CreatesBothFilesPrivately) {
  Result<bool> wrote = AddAwsProfile(dir_, profile_);
  ASSERT_TRUE(wrote.ok()) << wrote.error().ToString();
  EXPECT_TRUE(*wrote);
  EXPECT_EQ(Read(dir_ + "/credentials"),
            "[tern]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret/key\n");
  EXPECT_EQ(Read(dir_ + "/config"),
            "[profile tern]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:8787\n");
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/credentials").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AwsProfileTest, KeepsAnExistingProfileAndOthers) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ + "/credentials") << "[default]\naws_access_key_id = X\n [tern] \nkey = old";
  std::ofstream(dir_ + "/config") << "[default]\nregion = eu-west-1";
  Result<bool> wrote = AddAwsProfile(dir_, profile_);
  ASSERT_TRUE(wrote.ok());
  EXPECT_TRUE(*wrote);  // config had no [profile tern]
  EXPECT_EQ(Read(dir_ + "/credentials"), "[default]\naws_access_key_id = X\n [tern] \nkey = old");
  EXPECT_EQ(Read(dir_ + "/config"),
            "[default]\nregion = eu-west-1\n[profile tern]\nregion = us-east-1\n"
            "endpoint_url = http://127.0.0.1:8787\n");
  wrote = AddAwsProfile(dir_, profile_);
  ASSERT_TRUE(wrote.ok());
  EXPECT_FALSE(*wrote);
}

TEST_F(AwsProfileTest, ReadsWhatItWroteBesideOtherProfilesAndComments) {
  std::filesystem::create_directories(dir_);
  std::ofstream(dir_ + "/credentials") << "# mine\n[default]\naws_access_key_id = X\n"
                                          "aws_secret_access_key = Y\n";
  std::ofstream(dir_ + "/config") << "[default]\nregion = eu-west-1\n; old\n";
  ASSERT_TRUE(AddAwsProfile(dir_, profile_).ok());
  Result<AwsProfile> tern = ReadAwsProfile(dir_, "tern");
  ASSERT_TRUE(tern.ok()) << tern.error().ToString();
  EXPECT_EQ(tern->access_key_id, "AKIAEXAMPLE");
  EXPECT_EQ(tern->secret_access_key, "secret/key");
  EXPECT_EQ(tern->region, "us-east-1");
  EXPECT_EQ(tern->endpoint_url, "http://127.0.0.1:8787");
  Result<AwsProfile> other = ReadAwsProfile(dir_, "default");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->region, "eu-west-1");
  EXPECT_EQ(ReadAwsProfile(dir_, "nope").error().errno_value(), ENOENT);
  std::ofstream(dir_ + "/config") << "[profile tern\nregion";
  EXPECT_EQ(ReadAwsProfile(dir_, "tern").error().errno_value(), EINVAL);
  EXPECT_EQ(ReadAwsProfile(dir_ + "/missing", "tern").error().errno_value(), ENOENT);
}

}  // namespace
}  // namespace tern::cloud
