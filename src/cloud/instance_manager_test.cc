// Unit tests for InstanceManager, the supervisor of ternd's instances: EC2 state changes
// (launch, stop, start, reboot, terminate, the guest's own power-off and reboot, a VMM crash,
// forced and timed-out stops) and a restarted ternd adopting its VMMs. tern_fake_vmm
// (fake_vmm_main.cc) stands in for tern-vmm, steered per image through its kernel command line,
// so no KVM is needed; the tests drive the manager the way instances_api.cc does (write the
// store, then Wake/Reboot/ForceStop) and watch the store, the VMM processes and the files.
#include "cloud/instance_manager.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "cloud/process_test_util.h"

namespace tern::cloud {
namespace {

using namespace std::chrono_literals;
using S = InstanceStateName;

constexpr auto kDeadline = 20s;  // for any one state change

// Whether `pid` runs (exists and is not a zombie: the fakes are nobody's children to reap).
bool Alive(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t end = stat.rfind(") ");  // the state follows the command name
  return end != std::string::npos && end + 2 < stat.size() && stat[end + 2] != 'Z' &&
         stat[end + 2] != 'X';
}

class InstanceManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/instance-manager-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    store_.emplace(dir_ + "/ternd.db");
    std::ofstream(dir_ + "/vmlinuz") << "not a kernel: the fake never reads it";
    std::ofstream(dir_ + "/rootfs.raw") << "not a disk";
  }

  void TearDown() override {
    manager_.reset();  // first: it would relaunch what the next line kills
    for (int pid : ProcessesMentioning(dir_)) ::kill(pid, SIGKILL);
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Starts a manager as ternd does (a second call: ternd restarted).
  void StartManager(std::chrono::seconds shutdown_timeout = 90s,
                    std::chrono::seconds reboot_timeout = 240s) {
    manager_.reset();
    manager_.emplace(*store_,
                     ManagerOptions{dir_, TERN_FAKE_VMM, shutdown_timeout, reboot_timeout});
    ASSERT_TRUE(manager_->Start().ok());
  }

  // RunInstances of an image whose kernel command line sets the fake's mode (normal,
  // ignore-shutdown, fail: see fake_vmm_main.cc): the pending instance's id.
  std::string RunInstance(const std::string& fake_mode = "normal") {
    Image image;
    image.image_id = image.name = Store::NewId("ami");
    image.kernel_path = dir_ + "/vmlinuz";
    image.root_disk_path = dir_ + "/rootfs.raw";
    image.kernel_cmdline = "console=ttyS0 tern_fake_vmm=" + fake_mode;
    EXPECT_TRUE(store_->InsertImage(image));
    Instance instance;
    instance.instance_id = Store::NewId("i");
    instance.reservation_id = Store::NewId("r");
    instance.image_id = image.image_id;
    instance.instance_type = "t3.micro";
    instance.launch_time = std::time(nullptr);
    store_->InsertInstances({instance}, {});
    manager_->Wake();
    return instance.instance_id;
  }

  // Start/Stop/TerminateInstances: the API moves the instance to `to` (pending, stopping,
  // shutting-down), then tells the manager.
  void ChangeState(const std::string& id, S to, bool force = false) {
    Instance instance = *store_->GetInstance(id);
    S previous = instance.state;
    instance.state = to;
    instance.state_transition_reason = "User initiated";
    instance.state_reason_code.reset();
    instance.state_reason_message.reset();
    ASSERT_TRUE(store_->UpdateInstanceIf(instance, previous));
    if (force) manager_->ForceStop(id);
    manager_->Wake();
  }

  // The instance once it is in `state` or at rest elsewhere (stopped, terminated), or after
  // kDeadline.
  Instance WaitForState(const std::string& id, S state) {
    auto deadline = std::chrono::steady_clock::now() + kDeadline;
    for (;;) {
      Instance instance = *store_->GetInstance(id);
      bool at_rest = instance.state == S::kStopped || instance.state == S::kTerminated;
      if (instance.state == state || at_rest || std::chrono::steady_clock::now() > deadline) {
        return instance;
      }
      std::this_thread::sleep_for(10ms);
    }
  }

  // The pid of the process serving the instance's VMM API, or -1.
  int VmmPid(const std::string& id) {
    std::optional<VmmProcess> vmm =
        VmmProcess::Adopt(id, manager_->PathsOf(id), /*remove_stale=*/false);
    return vmm ? vmm->pid() : -1;
  }

  // The pid of the instance's VMM once it is not `old_pid`, or -1 after kDeadline.
  int WaitForVmmOtherThan(const std::string& id, int old_pid) {
    auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (std::chrono::steady_clock::now() < deadline) {
      if (int pid = VmmPid(id); pid > 0 && pid != old_pid) return pid;
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

  // Runs an instance and waits until it is running: its id and its VMM's pid.
  std::pair<std::string, int> RunningInstance(const std::string& fake_mode = "normal") {
    std::string id = RunInstance(fake_mode);
    Instance instance = WaitForState(id, S::kRunning);
    EXPECT_STREQ(StateName(instance.state), "running");
    return {id, VmmPid(id)};
  }

  std::string dir_;
  std::optional<Store> store_;
  std::optional<InstanceManager> manager_;
};

TEST_F(InstanceManagerTest, LaunchesAPendingInstance) {
  StartManager();
  auto [id, pid] = RunningInstance();
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(Alive(pid));
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{pid});
  Instance instance = *store_->GetInstance(id);
  EXPECT_FALSE(instance.state_reason_code.has_value());
  // The instance's own copies of its image's files, and the config the VMM was given.
  VmmPaths paths = manager_->PathsOf(id);
  EXPECT_TRUE(std::filesystem::exists(paths.root_disk()));
  EXPECT_TRUE(std::filesystem::exists(paths.kernel()));
  nlohmann::json config = nlohmann::json::parse(std::ifstream(paths.config()));
  EXPECT_EQ(config["machine-config"]["mem_size_mib"], 1024);  // t3.micro
  EXPECT_EQ(config["drives"][0]["path_on_host"], paths.root_disk());
}

TEST_F(InstanceManagerTest, StopsAndStartsAgain) {
  StartManager();
  auto [id, first] = RunningInstance();
  ChangeState(id, S::kStopping);
  Instance stopped = WaitForState(id, S::kStopped);
  EXPECT_STREQ(StateName(stopped.state), "stopped");
  EXPECT_EQ(stopped.state_reason_code.value_or(""), "Client.UserInitiatedShutdown");
  // The API's "User initiated (<time> GMT)" stays, as EC2 shows it.
  EXPECT_EQ(stopped.state_transition_reason, "User initiated");
  EXPECT_FALSE(Alive(first));
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{});

  ChangeState(id, S::kPending);  // StartInstances
  Instance running = WaitForState(id, S::kRunning);
  EXPECT_STREQ(StateName(running.state), "running");
  int second = VmmPid(id);
  EXPECT_GT(second, 0);
  EXPECT_NE(second, first);
  EXPECT_TRUE(Alive(second));
}

// RebootInstances presses the power button (SendCtrlAltDel); the guest powers off and the
// manager relaunches its VMM. The instance must stay running with one new VMM; before the fix in
// Reconcile, the relaunched VMM was taken for a vanished one and the instance was stopped with
// Server.InternalError (its new VMM left running).
TEST_F(InstanceManagerTest, RebootRelaunchesTheVmm) {
  StartManager();
  auto [id, first] = RunningInstance();
  manager_->Reboot(id);
  int second = WaitForVmmOtherThan(id, first);
  ASSERT_GT(second, 0);
  std::this_thread::sleep_for(300ms);  // the rest of the supervisor's round
  Instance instance = *store_->GetInstance(id);
  EXPECT_STREQ(StateName(instance.state), "running");
  EXPECT_FALSE(instance.state_reason_code.has_value());
  EXPECT_FALSE(Alive(first));
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{second});

  ChangeState(id, S::kStopping);  // and the manager drives the new VMM
  Instance stopped = WaitForState(id, S::kStopped);
  EXPECT_EQ(stopped.state_reason_code.value_or(""), "Client.UserInitiatedShutdown");
  EXPECT_FALSE(Alive(second));
}

// The guest reboots by itself (tern-vmm's exit reason "reset"): the same, without RebootInstances.
TEST_F(InstanceManagerTest, GuestRebootRelaunchesTheVmm) {
  StartManager();
  auto [id, first] = RunningInstance();
  ASSERT_EQ(::kill(first, SIGUSR1), 0);  // the fake's guest reset
  int second = WaitForVmmOtherThan(id, first);
  ASSERT_GT(second, 0);
  std::this_thread::sleep_for(300ms);
  Instance instance = *store_->GetInstance(id);
  EXPECT_STREQ(StateName(instance.state), "running");
  EXPECT_FALSE(instance.state_reason_code.has_value());
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{second});
}

// A guest that ignores Ctrl-Alt-Del is rebooted hard (its VMM killed and relaunched) after
// reboot_timeout.
TEST_F(InstanceManagerTest, RebootsHardAGuestThatIgnoresCtrlAltDel) {
  StartManager(/*shutdown_timeout=*/90s, /*reboot_timeout=*/1s);
  auto [id, first] = RunningInstance("ignore-shutdown");
  auto start = std::chrono::steady_clock::now();
  manager_->Reboot(id);
  int second = WaitForVmmOtherThan(id, first);
  ASSERT_GT(second, 0);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1s);
  std::this_thread::sleep_for(300ms);
  EXPECT_STREQ(StateName(store_->GetInstance(id)->state), "running");
  EXPECT_FALSE(Alive(first));
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{second});
}

TEST_F(InstanceManagerTest, GuestPowerOffStopsTheInstance) {
  StartManager();
  auto [id, pid] = RunningInstance();
  ASSERT_EQ(::kill(pid, SIGUSR2), 0);  // the fake's guest powers off
  Instance instance = WaitForState(id, S::kStopped);
  EXPECT_STREQ(StateName(instance.state), "stopped");
  EXPECT_EQ(instance.state_reason_code.value_or(""), "Client.InstanceInitiatedShutdown");
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{});
}

TEST_F(InstanceManagerTest, VmmCrashStopsTheInstanceWithAnInternalError) {
  StartManager();
  auto [id, pid] = RunningInstance();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);  // dies without an exit reason
  Instance instance = WaitForState(id, S::kStopped);
  EXPECT_STREQ(StateName(instance.state), "stopped");
  EXPECT_EQ(instance.state_reason_code.value_or(""), "Server.InternalError");
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{});  // not relaunched
}

// StopInstances --force: the VMM is killed rather than waiting out the 90 s shutdown timeout.
TEST_F(InstanceManagerTest, ForcedStopKillsAVmmWhoseGuestIgnoresThePowerButton) {
  StartManager();
  auto [id, pid] = RunningInstance("ignore-shutdown");
  ChangeState(id, S::kStopping, /*force=*/true);
  Instance instance = WaitForState(id, S::kStopped);
  EXPECT_STREQ(StateName(instance.state), "stopped");
  EXPECT_EQ(instance.state_reason_code.value_or(""), "Client.UserInitiatedShutdown");
  EXPECT_FALSE(Alive(pid));
}

// Without force, the VMM stops a guest that ignores the power button after shutdown_timeout
// (tern-vmm --shutdown-timeout, which the manager must pass on).
TEST_F(InstanceManagerTest, StopEndsAfterTheShutdownTimeout) {
  StartManager(/*shutdown_timeout=*/1s);
  auto [id, pid] = RunningInstance("ignore-shutdown");
  ChangeState(id, S::kStopping);
  std::this_thread::sleep_for(500ms);
  EXPECT_STREQ(StateName(store_->GetInstance(id)->state), "stopping");  // the guest ignored it
  Instance instance = WaitForState(id, S::kStopped);
  EXPECT_STREQ(StateName(instance.state), "stopped");
  EXPECT_EQ(instance.state_reason_code.value_or(""), "Client.UserInitiatedShutdown");
  EXPECT_FALSE(Alive(pid));
}

// A StopInstances after a RebootInstances the guest has not acted on yet still sends Shutdown
// (the power button, then the VMM's hard stop after shutdown_timeout).
TEST_F(InstanceManagerTest, StopAfterAnUnansweredRebootStillStops) {
  StartManager(/*shutdown_timeout=*/1s, /*reboot_timeout=*/240s);
  auto [id, pid] = RunningInstance("ignore-shutdown");
  manager_->Reboot(id);
  auto deadline = std::chrono::steady_clock::now() + kDeadline;
  auto log_mentions = [&](const std::string& text) {
    std::ifstream in(manager_->PathsOf(id).vmm_log());
    std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return log.find(text) != std::string::npos;
  };
  while (!log_mentions("action SendCtrlAltDel") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ChangeState(id, S::kStopping);
  Instance instance = WaitForState(id, S::kStopped);
  EXPECT_STREQ(StateName(instance.state), "stopped");
  EXPECT_TRUE(log_mentions("action Shutdown"));
  EXPECT_FALSE(Alive(pid));
}

// When the relaunch of a RebootInstances fails, the instance stops with Server.InternalError, not
// as if the guest had shut itself down (its exit on the button is a power-off).
TEST_F(InstanceManagerTest, AFailedRelaunchAfterARebootIsAnInternalError) {
  StartManager();
  auto [id, pid] = RunningInstance();
  std::ofstream(manager_->PathsOf(id).cmdline()) << "tern_fake_vmm=fail";  // the next launch
  manager_->Reboot(id);
  Instance instance = WaitForState(id, S::kStopped);
  EXPECT_STREQ(StateName(instance.state), "stopped");
  EXPECT_EQ(instance.state_reason_code.value_or(""), "Server.InternalError");
}

TEST_F(InstanceManagerTest, TerminateRemovesTheInstanceDirectory) {
  StartManager();
  auto [id, pid] = RunningInstance();
  ASSERT_TRUE(std::filesystem::exists(manager_->PathsOf(id).dir));
  ChangeState(id, S::kShuttingDown);
  Instance instance = WaitForState(id, S::kTerminated);
  EXPECT_STREQ(StateName(instance.state), "terminated");
  EXPECT_TRUE(instance.terminated_at.has_value());
  EXPECT_FALSE(Alive(pid));
  EXPECT_FALSE(std::filesystem::exists(manager_->PathsOf(id).dir));
}

TEST_F(InstanceManagerTest, AFailedFirstLaunchTerminatesTheInstance) {
  StartManager();
  std::string id = RunInstance("fail");
  Instance instance = WaitForState(id, S::kTerminated);
  EXPECT_STREQ(StateName(instance.state), "terminated");
  EXPECT_EQ(instance.state_reason_code.value_or(""), "Server.InternalError");
  EXPECT_NE(instance.state_reason_message.value_or("").find("no KVM here"), std::string::npos);
}

// ternd restarts: the new manager finds the running VMM again instead of launching a second one
// or declaring the instance's VMM lost, and drives it.
TEST_F(InstanceManagerTest, RestartedManagerAdoptsTheRunningVmm) {
  StartManager();
  auto [id, pid] = RunningInstance();
  manager_.reset();
  ASSERT_TRUE(Alive(pid));  // VMMs outlive ternd
  StartManager();
  std::this_thread::sleep_for(300ms);  // its first round
  EXPECT_STREQ(StateName(store_->GetInstance(id)->state), "running");
  EXPECT_EQ(VmmPid(id), pid);
  EXPECT_EQ(ProcessesMentioning(dir_), std::vector<int>{pid});

  ChangeState(id, S::kStopping);
  Instance instance = WaitForState(id, S::kStopped);
  EXPECT_EQ(instance.state_reason_code.value_or(""), "Client.UserInitiatedShutdown");
  EXPECT_FALSE(Alive(pid));
}

}  // namespace
}  // namespace tern::cloud
