// The instance supervisor (see instance_manager.h). EC2's state machine:
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html
#include "cloud/instance_manager.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "cloud/disk_copy.h"
#include "cloud/instance_types.h"
#include "cloud/sigv4.h"

namespace tern::cloud {
namespace {

// The instance's SMBIOS UUID, also its serial number, as on EC2: "ec2" and hex digits, the same
// for every launch of the instance. cloud-init (ds-identify, DataSourceEc2) takes a UUID and a
// serial that are equal and start with "ec2" for AWS.
std::string Ec2Uuid(const std::string& instance_id) {
  std::string hex = "ec2" + Sha256Hex(instance_id).substr(0, 29);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20, 12);
}

constexpr auto kLaunchTimeout = std::chrono::seconds(30);
constexpr int kIdlePollMs = 1000;
// A stop, terminate or reboot presses the guest's power button again this often while the guest
// has not acted on it: a press while the guest boots comes before its ACPI handler listens
// (busybox acpid, systemd-logind) and is lost.
constexpr auto kPowerButtonRepeat = std::chrono::seconds(10);
// How often the supervisor forgets instances terminated over an hour ago.
constexpr auto kPurgeInterval = std::chrono::seconds(60);

// EC2's StateReason codes and messages.
constexpr const char* kUserShutdown = "Client.UserInitiatedShutdown";
constexpr const char* kUserShutdownMessage =
    "Client.UserInitiatedShutdown: User initiated shutdown";
constexpr const char* kInstanceShutdown = "Client.InstanceInitiatedShutdown";
constexpr const char* kInstanceShutdownMessage =
    "Client.InstanceInitiatedShutdown: Instance initiated shutdown";
constexpr const char* kInternalError = "Server.InternalError";

bool IsFinal(InstanceStateName state) {
  return state == InstanceStateName::kStopped || state == InstanceStateName::kTerminated;
}

}  // namespace

InstanceManager::InstanceManager(Store& store, ManagerOptions options)
    : store_(store), options_(std::move(options)) {}

InstanceManager::~InstanceManager() {
  stop_ = true;
  Wake();
  if (thread_.joinable()) thread_.join();
}

VmmPaths InstanceManager::PathsOf(const std::string& instance_id) const {
  return VmmPaths{options_.data_dir + "/instances/" + instance_id};
}

Status InstanceManager::Start() {
  TERN_ASSIGN_OR_RETURN(EventFd wake, EventFd::Create());
  wake_ = std::move(wake);
  for (const Instance& instance : store_.ListInstances()) {
    if (IsFinal(instance.state)) continue;
    if (std::optional<VmmProcess> vmm =
            VmmProcess::Adopt(instance.instance_id, PathsOf(instance.instance_id))) {
      spdlog::info("{}: found its VMM again (pid {})", instance.instance_id, vmm->pid());
      vmms_.emplace(instance.instance_id, std::move(*vmm));
    }
  }
  thread_ = std::thread([this] { Loop(); });
  return Ok();
}

void InstanceManager::Wake() {
  if (wake_) (void)wake_->Write();
}

void InstanceManager::Reboot(const std::string& instance_id) {
  {
    std::lock_guard lock(mutex_);
    reboot_deadline_[instance_id] = std::chrono::steady_clock::now() + options_.reboot_timeout;
  }
  Wake();
}

void InstanceManager::ForceStop(const std::string& instance_id) {
  {
    std::lock_guard lock(mutex_);
    force_stop_.insert(instance_id);
  }
  Wake();
}

void InstanceManager::Loop() {
  while (!stop_) {
    ReconcileAll();
    WaitForEvents();
  }
}

void InstanceManager::WaitForEvents() {
  std::vector<pollfd> fds{{wake_->fd(), POLLIN, 0}};
  for (const auto& [id, vmm] : vmms_) fds.push_back({vmm.pidfd(), POLLIN, 0});
  ::poll(fds.data(), fds.size(), kIdlePollMs);
  (void)wake_->Read();
}

void InstanceManager::ReconcileAll() {
  for (Instance& instance : store_.ListInstances()) {
    if (stop_) return;
    try {
      Reconcile(instance);
    } catch (const std::exception& e) {  // a store failure: retried on the next round
      spdlog::error("{}: {}", instance.instance_id, e.what());
    }
  }
  auto now = std::chrono::steady_clock::now();
  if (now - last_purge_ < kPurgeInterval) return;
  last_purge_ = now;
  try {
    store_.PurgeTerminatedBefore(std::time(nullptr) - Store::kTerminatedVisibleSeconds);
  } catch (const std::exception& e) {
    spdlog::error("purging terminated instances: {}", e.what());
  }
}

void InstanceManager::Reconcile(Instance& instance) {
  const std::string& id = instance.instance_id;
  auto found = vmms_.find(id);
  if (found != vmms_.end() && found->second.Exited()) {
    vmms_.erase(found);
    ctrl_alt_del_sent_.erase(id);
    shutdown_sent_.erase(id);
    OnExit(instance, VmmProcess::TakeExit(PathsOf(id)));
    found = vmms_.find(id);  // a reboot has launched its next VMM
  }
  bool running = found != vmms_.end();
  switch (instance.state) {
    case InstanceStateName::kPending:
      if (!running) {
        // A new instance has no root disk yet; one that fails its first launch is terminated.
        bool first = ::access(PathsOf(id).root_disk().c_str(), F_OK) != 0;
        if (Status launched = Launch(instance); !launched.ok()) {
          spdlog::error("{}: launch failed: {}", id, launched.error().ToString());
          Transition(instance, first ? InstanceStateName::kTerminated : InstanceStateName::kStopped,
                     kInternalError, "Server.InternalError: " + launched.error().message());
          return;
        }
      }
      Transition(instance, InstanceStateName::kRunning, "", "");
      return;
    case InstanceStateName::kRunning: {
      if (!running) {  // its VMM vanished while no ternd watched
        OnExit(instance, VmmProcess::TakeExit(PathsOf(id)));
        return;
      }
      std::optional<std::chrono::steady_clock::time_point> deadline;
      {
        std::lock_guard lock(mutex_);
        if (auto r = reboot_deadline_.find(id); r != reboot_deadline_.end()) deadline = r->second;
      }
      if (!deadline) return;
      if (ctrl_alt_del_sent_.count(id) && std::chrono::steady_clock::now() > *deadline) {
        spdlog::warn("{}: no reboot within {} s: hard reboot", id, options_.reboot_timeout.count());
        found->second.Kill();  // OnExit sees "missing" while a reboot is due: relaunches
        return;
      }
      PressPowerButton(id, found->second, ctrl_alt_del_sent_);
      return;
    }
    case InstanceStateName::kStopping:
    case InstanceStateName::kShuttingDown: {
      InstanceStateName next = instance.state == InstanceStateName::kStopping
                                   ? InstanceStateName::kStopped
                                   : InstanceStateName::kTerminated;
      if (!running) {
        Transition(instance, next, kUserShutdown, kUserShutdownMessage);
        return;
      }
      bool force;
      {
        std::lock_guard lock(mutex_);
        force = force_stop_.count(id) > 0;
      }
      if (force) {
        found->second.Kill();
      } else if (!shutdown_sent_.count(id)) {
        // The VMM presses the power button and stops the VM hard after its shutdown timeout.
        if (Status sent = found->second.Action("Shutdown"); !sent.ok()) {
          spdlog::warn("{}: Shutdown: {}; stopping it hard", id, sent.error().ToString());
          found->second.Kill();
        }
        shutdown_sent_[id] = std::chrono::steady_clock::now();
      } else {
        PressPowerButton(id, found->second, shutdown_sent_);
      }
      return;
    }
    case InstanceStateName::kStopped:
    case InstanceStateName::kTerminated:
      return;
  }
}

void InstanceManager::PressPowerButton(
    const std::string& id, const VmmProcess& vmm,
    std::map<std::string, std::chrono::steady_clock::time_point>& last_press) {
  auto now = std::chrono::steady_clock::now();
  auto last = last_press.find(id);
  if (last != last_press.end() && now - last->second < kPowerButtonRepeat) return;
  if (Status sent = vmm.Action("SendCtrlAltDel"); !sent.ok()) {
    spdlog::warn("{}: power button: {}", id, sent.error().ToString());
  }
  last_press[id] = now;
}

void InstanceManager::OnExit(Instance& instance, const VmmExit& exit) {
  const std::string& id = instance.instance_id;
  bool reboot_due;
  {
    std::lock_guard lock(mutex_);
    reboot_due = reboot_deadline_.erase(id) > 0;
  }
  spdlog::info("{}: VMM exited: {} ({})", id, exit.reason, exit.message);
  switch (instance.state) {
    case InstanceStateName::kStopping:
      Transition(instance, InstanceStateName::kStopped, kUserShutdown, kUserShutdownMessage);
      return;
    case InstanceStateName::kShuttingDown:
      Transition(instance, InstanceStateName::kTerminated, kUserShutdown, kUserShutdownMessage);
      return;
    case InstanceStateName::kRunning:
      if (exit.reason == "reset" || exit.reason == "triple_fault" || reboot_due) {
        // The guest rebooted: a new VMM, same instance, still running.
        Status launched = Launch(instance);
        if (launched.ok()) return;
        spdlog::error("{}: relaunch after reboot: {}", id, launched.error().ToString());
        Transition(instance, InstanceStateName::kStopped, kInternalError,
                   "Server.InternalError: " + launched.error().message());
      } else if (exit.reason == "power_off") {
        Transition(instance, InstanceStateName::kStopped, kInstanceShutdown,
                   kInstanceShutdownMessage);
      } else {
        Transition(instance, InstanceStateName::kStopped, kInternalError,
                   "Server.InternalError: " + exit.message);
      }
      return;
    default:
      return;
  }
}

// The instance's own copies of its AMI's boot files (kernel, initrd, command line) and root
// disk, made at its first launch: later launches need nothing from the AMI, which may be gone.
Status InstanceManager::PrepareFiles(const Instance& instance, const VmmPaths& paths) {
  std::error_code ec;
  std::filesystem::create_directories(paths.dir, ec);
  if (ec) return Error("create " + paths.dir + ": " + ec.message(), EIO);
  if (::access(paths.root_disk().c_str(), F_OK) == 0) return Ok();
  std::optional<Image> image = store_.GetImage(instance.image_id);
  if (!image) return Error("its image " + instance.image_id + " no longer exists", ENOENT);
  std::filesystem::copy_file(image->kernel_path, paths.kernel(),
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (!ec && image->initrd_path) {
    std::filesystem::copy_file(*image->initrd_path, paths.initrd(),
                               std::filesystem::copy_options::overwrite_existing, ec);
  }
  if (ec) return Error("copy the boot files of " + image->image_id + ": " + ec.message(), EIO);
  std::ofstream(paths.cmdline()) << image->kernel_cmdline.value_or("console=ttyS0");
  // The root disk last, under a temporary name: its presence says the files are complete (a
  // ternd killed mid-copy copies again at its next launch).
  std::string partial = paths.root_disk() + ".partial";
  ::unlink(partial.c_str());  // left by a ternd killed mid-copy
  Result<CopyKind> copied = CopyDisk(image->root_disk_path, partial);
  if (!copied.ok()) return copied.error();
  if (::rename(partial.c_str(), paths.root_disk().c_str()) != 0) {
    return Error::FromErrno("rename " + partial);
  }
  return Ok();
}

Status InstanceManager::Launch(Instance& instance) {
  const std::string& id = instance.instance_id;
  VmmPaths paths = PathsOf(id);
  TERN_RETURN_IF_ERROR(PrepareFiles(instance, paths));
  const InstanceType* type = FindInstanceType(instance.instance_type);
  if (!type) return Error("unknown instance type " + instance.instance_type, EINVAL);
  std::string cmdline;
  std::getline(std::ifstream(paths.cmdline()), cmdline);
  nlohmann::json boot = {{"kernel_image_path", paths.kernel()}, {"boot_args", cmdline}};
  if (::access(paths.initrd().c_str(), F_OK) == 0) boot["initrd_path"] = paths.initrd();
  nlohmann::json config = {
      {"boot-source", boot},
      {"machine-config", {{"vcpu_count", type->vcpus}, {"mem_size_mib", type->memory_mib}}},
      {"drives",
       {{{"drive_id", "rootfs"},
         {"path_on_host", paths.root_disk()},
         {"is_root_device", true},
         {"is_read_only", false}}}},
      {"smbios",
       {{"manufacturer", "Amazon EC2"},
        {"product_name", type->name},
        {"serial_number", Ec2Uuid(id)},
        {"uuid", Ec2Uuid(id)}}}};
  TERN_ASSIGN_OR_RETURN(VmmProcess vmm,
                        VmmProcess::Launch(options_.vmm_path, id, paths, config, kLaunchTimeout,
                                           options_.shutdown_timeout));
  spdlog::info("{}: VMM started (pid {})", id, vmm.pid());
  vmms_.insert_or_assign(id, std::move(vmm));
  return Ok();
}

void InstanceManager::Transition(Instance& instance, InstanceStateName state,
                                 const std::string& reason_code,
                                 const std::string& reason_message) {
  InstanceStateName previous = instance.state;
  Instance next = instance;
  next.state = state;
  next.state_reason_code = reason_code.empty() ? std::nullopt : std::optional(reason_code);
  next.state_reason_message = reason_message.empty() ? std::nullopt : std::optional(reason_message);
  // A user's stop or terminate keeps the API's "User initiated (<time> GMT)", as EC2 shows it.
  bool user_initiated = reason_code == kUserShutdown && !instance.state_transition_reason.empty();
  if (IsFinal(state) && !user_initiated) next.state_transition_reason = reason_message;
  if (state == InstanceStateName::kTerminated) next.terminated_at = std::time(nullptr);
  if (!store_.UpdateInstanceIf(next, previous)) return;  // an API call changed it: next round
  instance = next;
  {
    std::lock_guard lock(mutex_);
    force_stop_.erase(instance.instance_id);
  }
  if (state == InstanceStateName::kTerminated) {
    std::error_code ec;
    std::filesystem::remove_all(PathsOf(instance.instance_id).dir, ec);
  }
  spdlog::info("{}: {}", instance.instance_id, StateName(state));
}

}  // namespace tern::cloud
