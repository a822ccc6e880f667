// Unit tests for ternd's Store: round trips, uniqueness, atomic inserts, durability across
// reopen, tags, concurrent writers.
#include "cloud/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace tern::cloud {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/store-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/ternd.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static Instance MakeInstance(const std::string& token = "") {
    Instance i;
    i.instance_id = Store::NewId("i");
    i.reservation_id = Store::NewId("r");
    i.image_id = "ami-0123456789abcdef0";
    i.instance_type = "t3.micro";
    i.user_data = std::string("#!/bin/sh\n\0\xff", 12);
    i.launch_time = 1763700000;
    if (!token.empty()) i.client_token = token;
    return i;
  }

  std::string dir_, path_;
};

TEST_F(StoreTest, IdsHaveEc2Shape) {
  std::string id = Store::NewId("i");
  ASSERT_EQ(id.size(), 19u);
  EXPECT_EQ(id.substr(0, 2), "i-");
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 2), std::string::npos);
  EXPECT_NE(Store::NewId("i"), id);
}

TEST_F(StoreTest, InstancesSurviveReopenWithTheSameAccount) {
  Instance a = MakeInstance("tok");
  a.key_name = "k";
  a.state_reason_code = "Client.UserInitiatedShutdown";
  Account account;
  {
    Store store(path_);
    account = store.account();
    store.InsertInstances({a}, {{"Name", "web"}});
    a.state = InstanceStateName::kRunning;
    store.UpdateInstance(a);
  }
  Store store(path_);
  EXPECT_EQ(store.account().access_key_id, account.access_key_id);
  EXPECT_EQ(store.account().secret_access_key.size(), 40u);
  EXPECT_EQ(store.account().account_id.size(), 12u);
  std::optional<Instance> got = store.GetInstance(a.instance_id);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->state, InstanceStateName::kRunning);
  EXPECT_EQ(got->user_data, a.user_data);
  EXPECT_EQ(got->key_name, "k");
  EXPECT_EQ(got->state_reason_code, "Client.UserInitiatedShutdown");
  EXPECT_EQ(store.FindByClientToken("tok").size(), 1u);
  EXPECT_EQ(store.AllTags()[a.instance_id]["Name"], "web");
  auto some = store.TagsOf({a.instance_id, "i-00000000000000000"});
  EXPECT_EQ(some.size(), 1u);
  EXPECT_EQ(some[a.instance_id]["Name"], "web");
  EXPECT_FALSE(store.GetInstance("i-00000000000000000").has_value());
}

TEST_F(StoreTest, UpdateIfComparesTheStoredState) {
  Store store(path_);
  Instance a = MakeInstance();
  store.InsertInstances({a}, {});
  a.state = InstanceStateName::kStopping;
  EXPECT_FALSE(store.UpdateInstanceIf(a, InstanceStateName::kRunning));  // still pending
  EXPECT_TRUE(store.UpdateInstanceIf(a, InstanceStateName::kPending));
  EXPECT_EQ(store.GetInstance(a.instance_id)->state, InstanceStateName::kStopping);
}

TEST_F(StoreTest, InsertInstancesIsAllOrNothing) {
  Store store(path_);
  Instance a = MakeInstance(), b = MakeInstance();
  b.instance_id = a.instance_id;  // the second insert fails
  EXPECT_THROW(store.InsertInstances({a, b}, {{"k", "v"}}), StoreError);
  EXPECT_TRUE(store.ListInstances().empty());
  EXPECT_TRUE(store.AllTags().empty());
}

TEST_F(StoreTest, ImageAndKeyNamesAreUnique) {
  Store store(path_);
  Image image;
  image.image_id = Store::NewId("ami");
  image.name = "debian-12";
  image.kernel_path = "/k";
  image.root_disk_path = "/d";
  EXPECT_TRUE(store.InsertImage(image));
  Image other = image;
  other.image_id = Store::NewId("ami");
  EXPECT_FALSE(store.InsertImage(other));
  EXPECT_EQ(store.GetImage(image.image_id)->name, "debian-12");
  store.DeleteImage(image.image_id);
  EXPECT_TRUE(store.ListImages().empty());

  KeyPair key{Store::NewId("key"), "k1", "aa:bb", "rsa", "ssh-rsa AAAA", 1};
  EXPECT_TRUE(store.InsertKeyPair(key));
  EXPECT_FALSE(store.InsertKeyPair(key));
  EXPECT_EQ(store.GetKeyPair("k1")->key_fingerprint, "aa:bb");
  store.DeleteKeyPair("k1");
  EXPECT_FALSE(store.GetKeyPair("k1").has_value());
}

TEST_F(StoreTest, TagsSetAndDelete) {
  Store store(path_);
  store.SetTags({"i-1", "i-2"}, {{"a", "1"}, {"b", "2"}});
  store.DeleteTags({"i-1"}, {{"a", std::nullopt}, {"b", "other"}});
  auto tags = store.AllTags();
  EXPECT_EQ(tags["i-1"], (std::map<std::string, std::string>{{"b", "2"}}));
  EXPECT_EQ(tags["i-2"].size(), 2u);
  store.DeleteTags({"i-2"}, {});
  EXPECT_EQ(store.AllTags().count("i-2"), 0u);
}

TEST_F(StoreTest, PurgesOldTerminatedInstances) {
  Store store(path_);
  Instance old = MakeInstance(), recent = MakeInstance();
  old.terminated_at = 100;
  recent.terminated_at = 5000;
  store.InsertInstances({old, recent}, {});
  store.PurgeTerminatedBefore(1000);
  auto left = store.ListInstances();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].instance_id, recent.instance_id);
}

// Reads come from memory: after every kind of write, a second store opened on the same file (it
// loads from SQLite) reads the same instances and tags.
TEST_F(StoreTest, MemoryMatchesTheDatabase) {
  auto summary = [](Store& store) {
    std::vector<std::string> out;
    for (const Instance& i : store.ListInstances()) {
      out.push_back(i.instance_id + " " + StateName(i.state) + " " + i.user_data + " " +
                    i.state_transition_reason);
    }
    for (const auto& [id, tags] : store.AllTags()) {
      for (const auto& [key, value] : tags) out.push_back(id + " " + key + "=" + value);
    }
    return out;
  };
  Store store(path_);
  Instance a = MakeInstance(), b = MakeInstance(), c = MakeInstance();
  c.terminated_at = 10;
  store.InsertInstances({a, b, c}, {{"team", "tern"}, {"env", "test"}});
  a.state = InstanceStateName::kRunning;
  store.UpdateInstance(a);
  b.state_transition_reason = "User initiated";
  EXPECT_TRUE(store.UpdateInstanceIf(b, InstanceStateName::kPending));
  EXPECT_FALSE(store.UpdateInstanceIf(a, InstanceStateName::kStopped));
  store.SetTags({a.instance_id}, {{"team", "other"}});
  store.DeleteTags({b.instance_id}, {{"env", std::nullopt}, {"team", "nope"}});
  store.PurgeTerminatedBefore(100);
  EXPECT_EQ(store.ListInstances().size(), 2u);
  EXPECT_EQ(store.GetInstance(a.instance_id)->state, InstanceStateName::kRunning);
  EXPECT_FALSE(store.GetInstance(c.instance_id).has_value());
  EXPECT_EQ(store.TagsOf({a.instance_id})[a.instance_id]["team"], "other");
  Store reopened(path_);
  EXPECT_EQ(summary(store), summary(reopened));
}

TEST_F(StoreTest, ConcurrentWritersAndAThousandInstances) {
  Store store(path_);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 250; ++i) store.InsertInstances({MakeInstance()}, {{"n", "v"}});
    });
  }
  for (auto& thread : threads) thread.join();
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(store.ListInstances().size(), 1000u);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  start);
  std::printf("ListInstances with 1000 instances: %ld us\n", static_cast<long>(us.count()));
}

}  // namespace
}  // namespace tern::cloud
