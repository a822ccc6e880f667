// The supervisor of ternd's instances: drives each instance from the state the API committed
// (pending, stopping, shutting-down) to the next one (running, stopped, terminated) by
// launching, signalling and watching its tern-vmm; turns VMM exits into EC2 state changes (a
// guest reboot relaunches the VMM and the instance stays running; a guest power-off stops it);
// and, at start, finds the VMMs of a previous ternd again (VmmProcess::Adopt) so that none is
// lost, duplicated or orphaned. One thread; the API threads only write the store and Wake() it.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "base/event_fd.h"
#include "cloud/store.h"
#include "cloud/vmm_process.h"

namespace tern::cloud {

struct ManagerOptions {
  std::string data_dir;  // instances live in data_dir/instances/<id>/
  std::string vmm_path;  // the tern-vmm executable
  // How long StopInstances/TerminateInstances wait after the ACPI power button before the VMM
  // stops the guest hard (tern-vmm --shutdown-timeout).
  std::chrono::seconds shutdown_timeout{90};
  // How long RebootInstances waits for the guest to reboot (Ctrl-Alt-Del) before a hard reboot.
  std::chrono::seconds reboot_timeout{240};
};

// Thread-safe: Wake(), Reboot() and ForceStop() may be called from any thread.
class InstanceManager {
 public:
  InstanceManager(Store& store, ManagerOptions options);
  ~InstanceManager();  // stops the supervisor thread; the VMMs keep running

  // Adopts the VMMs that still run, then starts the supervisor thread.
  Status Start();

  // Something changed in the store (a new pending instance, a stop...): reconcile soon.
  void Wake();
  // RebootInstances for a running instance: Ctrl-Alt-Del now, a hard reboot after
  // reboot_timeout if the guest has not rebooted by then.
  void Reboot(const std::string& instance_id);
  // StopInstances/TerminateInstances with Force: kill the VMM instead of the ACPI power button.
  void ForceStop(const std::string& instance_id);

  // The directory of `instance_id`'s files (root disk, console log, API socket).
  VmmPaths PathsOf(const std::string& instance_id) const;

 private:
  void Loop();
  void ReconcileAll();
  void Reconcile(Instance& instance);
  // Presses the VMM's power button (SendCtrlAltDel) unless `last_press` says it was pressed for
  // `id` less than kPowerButtonRepeat ago; records the press.
  void PressPowerButton(const std::string& id, const VmmProcess& vmm,
                        std::map<std::string, std::chrono::steady_clock::time_point>& last_press);
  void OnExit(Instance& instance, const VmmExit& exit);
  Status PrepareFiles(const Instance& instance, const VmmPaths& paths);
  Status Launch(Instance& instance);
  void Transition(Instance& instance, InstanceStateName state, const std::string& reason_code,
                  const std::string& reason_message);
  void WaitForEvents();

  Store& store_;
  ManagerOptions options_;
  std::optional<EventFd> wake_;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  std::mutex mutex_;  // guards the requests below, written by API threads
  std::set<std::string> force_stop_;
  std::map<std::string, std::chrono::steady_clock::time_point> reboot_deadline_;

  // Owned by the supervisor thread only.
  std::map<std::string, VmmProcess> vmms_;
  std::chrono::steady_clock::time_point last_purge_;
  // When the power button was last pressed for a reboot, and for a stop or terminate.
  std::map<std::string, std::chrono::steady_clock::time_point> ctrl_alt_del_sent_;
  std::map<std::string, std::chrono::steady_clock::time_point> shutdown_sent_;
};

}  // namespace tern::cloud
