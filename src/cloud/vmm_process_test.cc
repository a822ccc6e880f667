// Unit tests for VmmProcess: finding a VMM by its API socket (a stand-in API server in this
// process), stale sockets, control actions, exit reasons, and launches of VMMs that start, fail
// to start, exit or hang (scripts or tern_fake_vmm, fake_vmm_main.cc, in tern-vmm's place). Real
// VMMs run in the system tests (tests/system/test_ternd.py).
#include "cloud/vmm_process.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cloud/process_test_util.h"

namespace tern::cloud {
namespace {

class VmmProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vmm-process-test-XXXXXX";
    paths_.dir = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    if (server_thread_.joinable()) {
      server_.stop();
      server_thread_.join();
    }
    for (int pid : ProcessesMentioning(paths_.dir)) ::kill(pid, SIGKILL);  // a failed test's
    std::filesystem::remove_all(paths_.dir);
  }

  // Writes an executable shell script `body` and returns its path.
  std::string Script(const std::string& body) {
    std::string path = paths_.dir + "/fake-vmm";
    std::ofstream(path) << "#!/bin/sh\n" << body;
    ::chmod(path.c_str(), 0755);
    return path;
  }

  // Serves a minimal VMM API for `id` on paths_.api_socket() from a thread.
  void ServeApi(const std::string& id) {
    server_.set_address_family(AF_UNIX);
    server_.Get("/", [id](const httplib::Request&, httplib::Response& res) {
      res.set_content(nlohmann::json{{"id", id}, {"state", "Running"}}.dump(), "application/json");
    });
    server_.Put("/actions", [this](const httplib::Request& req, httplib::Response& res) {
      actions_.push_back(nlohmann::json::parse(req.body)["action_type"]);
      if (actions_.back() == "Bad") {
        res.status = 400;
        res.set_content(R"({"fault_message": "unknown action"})", "application/json");
      } else {
        res.status = 204;
      }
    });
    ASSERT_TRUE(server_.bind_to_port(paths_.api_socket(), 80));
    server_thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();
  }

  VmmPaths paths_;
  httplib::Server server_;
  std::thread server_thread_;
  std::vector<std::string> actions_;
};

TEST_F(VmmProcessTest, AdoptsTheProcessServingTheInstanceApi) {
  ServeApi("i-0123456789abcdef0");
  std::optional<VmmProcess> vmm = VmmProcess::Adopt("i-0123456789abcdef0", paths_);
  ASSERT_TRUE(vmm.has_value());
  EXPECT_EQ(vmm->pid(), ::getpid());
  EXPECT_FALSE(vmm->Exited());
  ASSERT_TRUE(vmm->Action("SendCtrlAltDel").ok());
  Status bad = vmm->Action("Bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "unknown action");
  EXPECT_EQ(actions_, (std::vector<std::string>{"SendCtrlAltDel", "Bad"}));
}

TEST_F(VmmProcessTest, IgnoresAnApiServingAnotherInstance) {
  ServeApi("i-ffffffffffffffff0");
  EXPECT_FALSE(VmmProcess::Adopt("i-0123456789abcdef0", paths_).has_value());
  EXPECT_TRUE(std::filesystem::exists(paths_.api_socket()));  // not ours: left alone
}

TEST_F(VmmProcessTest, RemovesAStaleSocket) {
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, paths_.api_socket().c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(sock);  // bound, never listened: connections are refused, as after a VMM's death
  EXPECT_FALSE(VmmProcess::Adopt("i-0123456789abcdef0", paths_).has_value());
  EXPECT_FALSE(std::filesystem::exists(paths_.api_socket()));
}

TEST_F(VmmProcessTest, ReportsTheMessageOfAVmmThatFailsToStart) {
  // The argument after --exit-reason-file is the path.
  std::string fake = Script(
      "while [ \"$1\" != --exit-reason-file ]; do shift; done\nlast=$2\n"
      "echo '{\"reason\": \"error\", \"message\": \"no KVM here\"}' >\"$last\"\n");
  auto vmm = VmmProcess::Launch(fake, "i-0123456789abcdef0", paths_, {{"boot-source", {}}},
                                std::chrono::seconds(10), std::chrono::seconds(90));
  ASSERT_FALSE(vmm.ok());
  EXPECT_EQ(vmm.error().message(), "tern-vmm failed to start: no KVM here");
  EXPECT_FALSE(std::filesystem::exists(paths_.exit_reason()));  // taken
  std::ifstream config(paths_.config());
  EXPECT_EQ(nlohmann::json::parse(config), (nlohmann::json{{"boot-source", {}}}));
}

TEST_F(VmmProcessTest, LaunchesAVmmAndDrivesIt) {
  auto vmm = VmmProcess::Launch(TERN_FAKE_VMM, "i-0123456789abcdef0", paths_, {},
                                std::chrono::seconds(10), std::chrono::seconds(90));
  ASSERT_TRUE(vmm.ok()) << vmm.error().ToString();
  EXPECT_EQ(ProcessesMentioning(paths_.dir), std::vector<int>{vmm->pid()});
  EXPECT_FALSE(vmm->Exited());
  ASSERT_TRUE(vmm->Action("Shutdown").ok());
  pollfd fd{vmm->pidfd(), POLLIN, 0};
  ASSERT_EQ(::poll(&fd, 1, 10000), 1);
  EXPECT_TRUE(vmm->Exited());
  EXPECT_EQ(VmmProcess::TakeExit(paths_).reason, "power_off");
}

TEST_F(VmmProcessTest, ReportsAVmmThatExitsWithoutServingItsApi) {
  auto start = std::chrono::steady_clock::now();
  auto vmm = VmmProcess::Launch(Script("exit 3\n"), "i-0123456789abcdef0", paths_, {},
                                std::chrono::seconds(20), std::chrono::seconds(90));
  ASSERT_FALSE(vmm.ok());
  EXPECT_EQ(vmm.error().errno_value(), EIO);
  EXPECT_NE(vmm.error().message().find("exited without serving its API"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));  // not 20 s
}

TEST_F(VmmProcessTest, KillsAVmmThatDoesNotServeItsApiInTime) {
  nlohmann::json config = {{"boot-source", {{"boot_args", "tern_fake_vmm=no-api"}}}};
  auto vmm = VmmProcess::Launch(TERN_FAKE_VMM, "i-0123456789abcdef0", paths_, config,
                                std::chrono::milliseconds(300), std::chrono::seconds(90));
  ASSERT_FALSE(vmm.ok());
  EXPECT_EQ(vmm.error().errno_value(), ETIMEDOUT);
  EXPECT_EQ(ProcessesMentioning(paths_.dir), std::vector<int>{});  // killed, not left running
}

TEST_F(VmmProcessTest, MissingExitReasonMeansKilled) {
  EXPECT_EQ(VmmProcess::TakeExit(paths_).reason, "missing");
  std::ofstream(paths_.exit_reason()) << R"({"reason": "reset", "message": "guest reset"})";
  VmmExit exit = VmmProcess::TakeExit(paths_);
  EXPECT_EQ(exit.reason, "reset");
  EXPECT_EQ(exit.message, "guest reset");
}

}  // namespace
}  // namespace tern::cloud
