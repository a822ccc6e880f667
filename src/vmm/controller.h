// The VMM's control surface, what Firecracker calls its API controller: configuration before
// boot (VmResources), InstanceStart, pause/resume, metrics, and the state checks that refuse a
// request the current state does not allow. The HTTP API (src/api/) and the CLI drive it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "base/result.h"
#include "vmm/vm_resources.h"
#include "vmm/vmm.h"

namespace tern {

// Thread safety: every method may be called from any thread (one mutex); Run() blocks the
// thread that owns the console (the main thread). Errors are EINVAL with a message for the
// API's fault_message, or the failing step's error for InstanceStart.
class Controller {
 public:
  // `instance_id`: the "id" of GET / (Firecracker's --id). `shutdown_timeout`: how long the
  // "Shutdown" action waits for the guest to power off before stopping it hard.
  Controller(VmResources resources, std::string instance_id,
             std::chrono::milliseconds shutdown_timeout = std::chrono::seconds(90));

  std::chrono::milliseconds shutdown_timeout() const { return shutdown_timeout_; }

  // GET /: {"id", "state": "Not started" | "Running" | "Paused", "vmm_version", "app_name"}.
  nlohmann::json InstanceInfo() const;
  // GET /vm/config and GET /machine-config.
  nlohmann::json VmConfigJson() const;
  nlohmann::json MachineConfigJson() const;

  // Applies `change` to the pre-boot configuration; EINVAL ("... not supported after starting
  // the microVM") once InstanceStart has run. `what` names the request in that message.
  Status Configure(const std::string& what, const std::function<Status(VmResources&)>& change);

  // InstanceStart: builds the Vmm from the configuration and starts its threads. EINVAL when
  // already started or when there is no boot source; otherwise Vmm::Create's error.
  Status Start();
  // PUT /snapshot/create (Firecracker's body: {"snapshot_type": "Full" | "Diff", default
  // Full; "snapshot_path"; "mem_file_path"}): Vmm::SaveSnapshot. EINVAL before start, unless
  // paused, or for a malformed body.
  Status CreateSnapshot(const nlohmann::json& body);
  // PUT /snapshot/load ({"snapshot_path"; "mem_backend": {"backend_type": "File",
  // "backend_path"} or the older "mem_file_path"; "track_dirty_pages" or the older
  // "enable_diff_snapshots"; "resume_vm"; "network_overrides": [{"iface_id",
  // "host_dev_name"}]}): Vmm::Restore, then starts the VM paused or, with resume_vm, running.
  // EINVAL once started or once a boot source is configured (a snapshot brings its own
  // configuration), or for a malformed body; otherwise Vmm::Restore's error.
  Status LoadSnapshot(const nlohmann::json& body);
  // PATCH /vm {"state": "Paused" | "Resumed"}. EINVAL before start or in the wrong state.
  Status Pause();
  Status Resume();
  // FlushMetrics: appends Metrics() as one JSON line to the metrics file. EINVAL when no
  // metrics file is configured (PUT /metrics).
  Status FlushMetrics();
  // Per-VM counters: {"utc_timestamp_ms", "vcpu": {"exits": {reason: count}},
  // "unknown_accesses": {"port_io", "mmio"}, "devices": Vmm::DeviceMetrics() (empty before
  // InstanceStart)}.
  nlohmann::json Metrics() const;

  // The balloon: GET /balloon, PATCH /balloon ({"amount_mib"}: before boot the configuration,
  // after it the device's target), GET /balloon/statistics, PATCH /balloon/statistics
  // ({"stats_polling_interval_s"}, after boot). EINVAL without a balloon device.
  Result<nlohmann::json> GetBalloon() const;
  Status PatchBalloon(const nlohmann::json& body);
  Result<nlohmann::json> BalloonStatistics() const;
  Status PatchBalloonStatistics(const nlohmann::json& body);

  // Graceful shutdown (what EC2 StopInstances does): presses the ACPI power button, and stops
  // the VM hard if it is still running `timeout` later (zero: never). EINVAL before start or
  // while paused. A second call presses the button again (keeping the first deadline).
  Status GracefulShutdown(std::chrono::milliseconds timeout);

  // Waits until the VM has been started (InstanceStart) or Shutdown(), then runs it to its end
  // (Vmm::Wait) on the calling thread. Returns the guest's exit, or kStopped.
  Result<VmExit> Run();
  // Ends the VM (or the wait for InstanceStart) hard. Idempotent.
  void Shutdown();
  ~Controller();

 private:
  const char* StateName() const;  // needs mutex_

  mutable std::mutex mutex_;
  std::condition_variable started_or_shutdown_;
  VmResources resources_;
  const std::string instance_id_;
  const std::chrono::milliseconds shutdown_timeout_;
  std::unique_ptr<Vmm> vmm_;
  bool shutdown_ = false;
  bool finished_ = false;          // Run() has returned
  std::thread shutdown_watchdog_;  // hard stop after a graceful shutdown's timeout
};

}  // namespace tern
