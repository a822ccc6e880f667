// Controller: state checks around VmResources and the Vmm, and the per-VM metrics.
#include "vmm/controller.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>

#include "base/json_fields.h"
#include "kvm/linux_kvm.h"

namespace tern {
namespace {

using nlohmann::json;

// Names of the KVM exit reasons a VM sees, as in linux/kvm.h (KVM_EXIT_ without the prefix).
const char* ExitReasonName(size_t reason) {
  switch (reason) {
    case KVM_EXIT_IO:
      return "io";
    case KVM_EXIT_MMIO:
      return "mmio";
    case KVM_EXIT_HLT:
      return "hlt";
    case KVM_EXIT_SHUTDOWN:
      return "shutdown";
    case KVM_EXIT_SYSTEM_EVENT:
      return "system_event";
    case KVM_EXIT_FAIL_ENTRY:
      return "fail_entry";
    case KVM_EXIT_INTERNAL_ERROR:
      return "internal_error";
    case KVM_EXIT_INTR:
      return "intr";
    default:
      return nullptr;
  }
}

// The body of PUT /snapshot/load as RestoreOptions.
Result<RestoreOptions> ParseLoad(const json& body, bool& resume) {
  TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(body, "snapshot/load",
                                                  {"snapshot_path", "mem_backend", "mem_file_path",
                                                   "track_dirty_pages", "enable_diff_snapshots",
                                                   "resume_vm", "network_overrides"}));
  RestoreOptions options;
  TERN_RETURN_IF_ERROR(fields.Read("snapshot_path", options.state_path, true));
  if (fields.Has("mem_backend") == fields.Has("mem_file_path")) {
    return Error("snapshot/load: give exactly one of mem_backend and mem_file_path", EINVAL);
  }
  TERN_RETURN_IF_ERROR(fields.Read("mem_file_path", options.mem_path));
  if (fields.Has("mem_backend")) {
    TERN_ASSIGN_OR_RETURN(Fields backend,
                          Fields::Of(body["mem_backend"], "snapshot/load: mem_backend",
                                     {"backend_type", "backend_path"}));
    std::string type;
    TERN_RETURN_IF_ERROR(backend.Read("backend_type", type, true));
    if (type != "File") {
      return Error("snapshot/load: backend_type `" + type + "` is not supported (File is)", EINVAL);
    }
    TERN_RETURN_IF_ERROR(backend.Read("backend_path", options.mem_path, true));
  }
  TERN_RETURN_IF_ERROR(fields.Read("track_dirty_pages", options.track_dirty_pages));
  bool diff = false;
  TERN_RETURN_IF_ERROR(fields.Read("enable_diff_snapshots", diff));
  options.track_dirty_pages = options.track_dirty_pages || diff;
  TERN_RETURN_IF_ERROR(fields.Read("resume_vm", resume));
  if (fields.Has("network_overrides")) {
    TERN_ASSIGN_OR_RETURN(const json* overrides, fields.Array("network_overrides"));
    for (const json& entry : *overrides) {
      TERN_ASSIGN_OR_RETURN(Fields item, Fields::Of(entry, "snapshot/load: network_overrides",
                                                    {"iface_id", "host_dev_name"}));
      auto& [id, tap] = options.network_overrides.emplace_back();
      TERN_RETURN_IF_ERROR(item.Read("iface_id", id, true));
      TERN_RETURN_IF_ERROR(item.Read("host_dev_name", tap, true));
    }
  }
  return options;
}

}  // namespace

Controller::Controller(VmResources resources, std::string instance_id,
                       std::chrono::milliseconds shutdown_timeout)
    : resources_(std::move(resources)),
      instance_id_(std::move(instance_id)),
      shutdown_timeout_(shutdown_timeout) {}

const char* Controller::StateName() const {
  if (!vmm_) return "Not started";
  return vmm_->state() == VmState::kPaused ? "Paused" : "Running";
}

json Controller::InstanceInfo() const {
  std::lock_guard lock(mutex_);
  return {{"id", instance_id_},
          {"state", StateName()},
          {"vmm_version", TERN_VERSION},
          {"app_name", "tern"}};
}

json Controller::VmConfigJson() const {
  std::lock_guard lock(mutex_);
  return resources_.ToJson();
}

json Controller::MachineConfigJson() const {
  std::lock_guard lock(mutex_);
  return resources_.MachineConfigJson();
}

Status Controller::Configure(const std::string& what,
                             const std::function<Status(VmResources&)>& change) {
  std::lock_guard lock(mutex_);
  if (vmm_) {
    return Error(what + ": the requested operation is not supported after starting the microVM",
                 EINVAL);
  }
  return change(resources_);
}

Status Controller::Start() {
  std::lock_guard lock(mutex_);
  if (vmm_) return Error("the microVM is already running", EINVAL);
  if (shutdown_) return Error("the VMM is shutting down", EINVAL);
  TERN_ASSIGN_OR_RETURN(VmConfig config, resources_.BuildVmConfig());
  TERN_ASSIGN_OR_RETURN(vmm_, Vmm::Create(config));
  vmm_->Start();
  started_or_shutdown_.notify_all();
  return Ok();
}

Status Controller::CreateSnapshot(const json& body) {
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(body, "snapshot/create",
                                   {"snapshot_type", "snapshot_path", "mem_file_path", "version"}));
  SnapshotOptions options;
  std::string type = "Full";
  TERN_RETURN_IF_ERROR(fields.Read("snapshot_type", type));
  if (type != "Full" && type != "Diff") {
    return Error("snapshot/create: `" + type + "` is not a valid snapshot_type", EINVAL);
  }
  options.diff = type == "Diff";
  TERN_RETURN_IF_ERROR(fields.Read("snapshot_path", options.state_path, true));
  TERN_RETURN_IF_ERROR(fields.Read("mem_file_path", options.mem_path, true));
  std::lock_guard lock(mutex_);
  if (!vmm_) return Error("snapshot/create: the microVM has not been started", EINVAL);
  Status status = vmm_->SaveSnapshot(options);
  if (!status.ok()) return status.error().WithContext("snapshot/create");
  return Ok();
}

Status Controller::LoadSnapshot(const json& body) {
  bool resume = false;
  TERN_ASSIGN_OR_RETURN(RestoreOptions options, ParseLoad(body, resume));
  std::lock_guard lock(mutex_);
  if (vmm_) return Error("snapshot/load: the microVM is already running", EINVAL);
  if (shutdown_) return Error("snapshot/load: the VMM is shutting down", EINVAL);
  if (resources_.has_boot_source()) {
    return Error("snapshot/load: not allowed after configuring a boot source", EINVAL);
  }
  options.console_in_fd = resources_.console_in_fd();
  options.console_out_fd = resources_.console_out_fd();
  auto vmm = Vmm::Restore(options);
  if (!vmm.ok()) return vmm.error().WithContext("snapshot/load");
  vmm_ = std::move(vmm).value();
  vmm_->Start(/*paused=*/!resume);
  started_or_shutdown_.notify_all();
  return Ok();
}

Status Controller::Pause() {
  std::lock_guard lock(mutex_);
  if (!vmm_) return Error("Paused: the microVM has not been started", EINVAL);
  if (Status status = vmm_->Pause(); !status.ok()) return status.error().WithContext("Paused");
  return Ok();
}

Status Controller::Resume() {
  std::lock_guard lock(mutex_);
  if (!vmm_) return Error("Resumed: the microVM has not been started", EINVAL);
  if (Status status = vmm_->Resume(); !status.ok()) return status.error().WithContext("Resumed");
  return Ok();
}

json Controller::Metrics() const {
  std::lock_guard lock(mutex_);
  json exits = json::object();
  json unknown = {{"port_io", 0}, {"mmio", 0}};
  json devices = json::object();
  if (vmm_) {
    auto counts = vmm_->exit_counts();
    for (size_t reason = 0; reason < counts.size(); ++reason) {
      if (counts[reason] == 0) continue;
      const char* name = ExitReasonName(reason);
      exits[name ? name : "other_" + std::to_string(reason)] = counts[reason];
    }
    UnknownAccessCounts accesses = vmm_->unknown_accesses();
    unknown = {{"port_io", accesses.port_io}, {"mmio", accesses.mmio}};
    devices = vmm_->DeviceMetrics();
  }
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return {{"utc_timestamp_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now).count()},
          {"vcpu", {{"exits", exits}}},
          {"unknown_accesses", unknown},
          {"devices", devices}};
}

Status Controller::FlushMetrics() {
  std::string path;
  {
    std::lock_guard lock(mutex_);
    if (!resources_.metrics()) {
      return Error("FlushMetrics: no metrics file configured (PUT /metrics first)", EINVAL);
    }
    path = resources_.metrics()->metrics_path;
  }
  std::ofstream out(path, std::ios::app);
  out << Metrics().dump() << "\n";
  out.flush();
  if (!out) return Error("FlushMetrics: cannot write " + path, EIO);
  return Ok();
}

Result<json> Controller::GetBalloon() const {
  std::lock_guard lock(mutex_);
  if (!vmm_) return resources_.BalloonJson();
  if (!vmm_->balloon()) return Error("balloon: no balloon device", EINVAL);
  return BalloonConfigJson(vmm_->balloon()->Config());
}

Status Controller::PatchBalloon(const json& body) {
  std::lock_guard lock(mutex_);
  if (!vmm_) return resources_.PatchBalloon(body);
  if (!vmm_->balloon()) return Error("balloon: no balloon device", EINVAL);
  TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(body, "balloon", {"amount_mib"}));
  uint32_t amount = 0;
  TERN_RETURN_IF_ERROR(fields.Read("amount_mib", amount, true, 0, UINT32_MAX));
  return vmm_->balloon()->SetTargetMib(amount);
}

Result<json> Controller::BalloonStatistics() const {
  std::lock_guard lock(mutex_);
  if (!vmm_ || !vmm_->balloon()) return Error("balloon: no running balloon device", EINVAL);
  TERN_ASSIGN_OR_RETURN(virtio::BalloonStatistics stats, vmm_->balloon()->Statistics());
  json j = {{"target_pages", stats.target_pages},
            {"actual_pages", stats.actual_pages},
            {"target_mib", stats.target_mib},
            {"actual_mib", stats.actual_mib}};
  auto optional = [&](const char* name, const std::optional<uint64_t>& value) {
    if (value) j[name] = *value;
  };
  optional("swap_in", stats.swap_in);
  optional("swap_out", stats.swap_out);
  optional("major_faults", stats.major_faults);
  optional("minor_faults", stats.minor_faults);
  optional("free_memory", stats.free_memory);
  optional("total_memory", stats.total_memory);
  optional("available_memory", stats.available_memory);
  optional("disk_caches", stats.disk_caches);
  optional("hugetlb_allocations", stats.hugetlb_allocations);
  optional("hugetlb_failures", stats.hugetlb_failures);
  return j;
}

Status Controller::PatchBalloonStatistics(const json& body) {
  std::lock_guard lock(mutex_);
  if (!vmm_ || !vmm_->balloon()) return Error("balloon: no running balloon device", EINVAL);
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(body, "balloon/statistics", {"stats_polling_interval_s"}));
  uint32_t interval = 0;
  TERN_RETURN_IF_ERROR(fields.Read("stats_polling_interval_s", interval, true, 0, 65535));
  return vmm_->balloon()->SetStatsInterval(static_cast<uint16_t>(interval));
}

Status Controller::GracefulShutdown(std::chrono::milliseconds timeout) {
  std::lock_guard lock(mutex_);
  if (!vmm_) return Error("graceful shutdown: the microVM has not been started", EINVAL);
  if (Status pressed = vmm_->PressPowerButton(); !pressed.ok()) {
    return pressed.error().WithContext("graceful shutdown");
  }
  if (timeout.count() > 0 && !shutdown_watchdog_.joinable()) {
    shutdown_watchdog_ = std::thread([this, timeout] {
      std::unique_lock lock(mutex_);
      if (started_or_shutdown_.wait_for(lock, timeout, [&] { return finished_; })) return;
      spdlog::warn("the guest did not power off within {} ms of the power button; stopping it",
                   timeout.count());
      vmm_->Stop();
    });
  }
  return Ok();
}

Result<VmExit> Controller::Run() {
  Vmm* vmm;
  {
    std::unique_lock lock(mutex_);
    started_or_shutdown_.wait(lock, [&] { return vmm_ || shutdown_; });
    if (!vmm_) return VmExit::kStopped;
    vmm = vmm_.get();
  }
  Result<VmExit> exit = vmm->Wait();  // vmm_ is never replaced once set
  {
    std::lock_guard lock(mutex_);
    finished_ = true;
  }
  started_or_shutdown_.notify_all();
  return exit;
}

Controller::~Controller() {
  {
    std::lock_guard lock(mutex_);
    finished_ = true;
  }
  started_or_shutdown_.notify_all();
  if (shutdown_watchdog_.joinable()) shutdown_watchdog_.join();
}

void Controller::Shutdown() {
  std::lock_guard lock(mutex_);
  shutdown_ = true;
  if (vmm_) vmm_->Stop();
  started_or_shutdown_.notify_all();
}

}  // namespace tern
