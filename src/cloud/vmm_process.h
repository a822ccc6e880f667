// One instance's tern-vmm process as ternd sees it: launched detached (it outlives ternd, so a
// restarted ternd finds it again), identified by its control API socket (the instance directory's
// api.sock answers GET / with the instance id; SO_PEERCRED names the process), watched through a
// pidfd, driven with the Firecracker-compatible control API, and asked why it exited
// (tern-vmm --exit-reason-file).
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace tern::cloud {

// The files of one instance, all in its instance directory.
struct VmmPaths {
  std::string dir;
  std::string api_socket() const { return dir + "/api.sock"; }
  std::string config() const { return dir + "/vmm-config.json"; }
  std::string console_log() const { return dir + "/console.log"; }  // the guest's serial output
  std::string vmm_log() const { return dir + "/vmm.log"; }          // tern-vmm's own messages
  std::string exit_reason() const { return dir + "/exit-reason.json"; }
  std::string root_disk() const { return dir + "/root.raw"; }  // the instance's own copy
  std::string kernel() const { return dir + "/vmlinuz"; }
  std::string initrd() const { return dir + "/initrd.img"; }
  std::string cmdline() const { return dir + "/cmdline"; }
};

// What tern-vmm wrote to --exit-reason-file: reason "power_off" | "reset" | "triple_fault" |
// "stopped" | "error", or "missing" when it wrote nothing (killed, crashed, or ternd's SIGKILL).
struct VmmExit {
  std::string reason;
  std::string message;
};

// A running tern-vmm. Move-only (owns the pidfd). Not thread-safe: one owner drives it.
class VmmProcess {
 public:
  // Starts `vmm_path` for `instance_id` with `config` (the JSON of the VMM's GET /vm/config:
  // boot-source, machine-config, drives, network-interfaces), detached from ternd (its own
  // session; stdin /dev/null, the serial console appended to console_log(), its messages to
  // vmm_log()). Waits up to `timeout` for the API to answer. `shutdown_timeout`: the VMM's
  // --shutdown-timeout (ACPI power button to hard stop). Errors: the VMM's own message from its
  // exit reason when it failed to start, its exit without serving the API, or a timeout (the
  // VMM is then killed).
  static Result<VmmProcess> Launch(const std::string& vmm_path, const std::string& instance_id,
                                   const VmmPaths& paths, const nlohmann::json& config,
                                   std::chrono::milliseconds timeout,
                                   std::chrono::seconds shutdown_timeout);

  // The VMM of `instance_id` if one is alive behind paths.api_socket(), else nullopt; with
  // `remove_stale`, a socket file nobody accepts on is removed (never while a VMM we launched
  // may be between bind() and listen()).
  static std::optional<VmmProcess> Adopt(const std::string& instance_id, const VmmPaths& paths,
                                         bool remove_stale = true);

  // Reads and removes the exit reason file (reason "missing" when there is none).
  static VmmExit TakeExit(const VmmPaths& paths);

  int pid() const { return pid_; }
  // Readable (POLLIN) once the process has exited.
  int pidfd() const { return pidfd_.get(); }
  bool Exited() const;

  // PUT /actions {"action_type": type} ("Shutdown": ACPI power button, then stop after the VMM's
  // --shutdown-timeout; "SendCtrlAltDel"). Error: the VMM's fault_message or a transport error.
  Status Action(const std::string& type) const;

  // SIGKILL (through the pidfd: never another process that reused the pid).
  void Kill() const;

 private:
  VmmProcess(int pid, Fd pidfd, VmmPaths paths)
      : pid_(pid), pidfd_(std::move(pidfd)), paths_(std::move(paths)) {}

  int pid_;
  Fd pidfd_;
  VmmPaths paths_;
};

}  // namespace tern::cloud
