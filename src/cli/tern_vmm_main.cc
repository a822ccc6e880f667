// tern-vmm: boots a Linux kernel in a KVM virtual machine with its serial console on this
// terminal, configured by flags, a JSON config file (Firecracker's format) and/or the control
// API on a Unix socket. A thin layer over the VMM library: parse, configure, run, report.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/api_server.h"
#include "arch/x86_64/layout.h"
#include "cli/device_flags.h"
#include "snapshot/memory_file.h"
#include "vmm/controller.h"
#include "vmm/vm_resources.h"
#include "vmm/vmm.h"

namespace {

// Puts a terminal on `fd` into raw mode (no echo, no line editing, no signals: Ctrl-C goes to
// the guest) and restores it on destruction. Does nothing when `fd` is not a terminal.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (!::isatty(fd_) || ::tcgetattr(fd_, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~(ICANON | ECHO | ISIG | IEXTEN);
    raw.c_iflag &= ~(ICRNL | IXON);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(fd_, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

// Why tern-vmm exited, for a supervisor (ternd): written to --exit-reason-file, if given, as one
// JSON object {"reason": "power_off" | "reset" | "triple_fault" | "stopped" | "error",
// "message": "..."} (temp file + rename: a reader sees all of it or nothing).
struct ExitReport {
  std::string path;
  std::string reason = "error";
  std::string message = "tern-vmm exited before running the VM";

  int Fail(const std::string& text) {
    spdlog::error("{}", text);
    message = text;
    return 1;
  }

  void Write() const {
    if (path.empty()) return;
    std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << nlohmann::json{{"reason", reason}, {"message", message}}.dump() << "\n";
      if (!out.flush()) return (void)spdlog::error("--exit-reason-file {}: write failed", tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      spdlog::error("--exit-reason-file {}: {}", path, std::strerror(errno));
    }
  }
};

// SIGTERM (and SIGINT when not on a terminal in raw mode) press the guest's ACPI power button
// and stop it hard after the controller's timeout; a second one stops it at once. Handled by
// a thread in sigwait(); every other thread has the signals blocked (the mask is inherited).
void GracefulShutdownOnSigterm(tern::Controller& controller) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([&controller, signals] {
    pthread_setname_np(pthread_self(), "tern-signals");
    for (int count = 0;; ++count) {
      int signal = 0;
      if (sigwait(&signals, &signal) != 0) return;
      tern::Status status =
          count == 0 ? controller.GracefulShutdown(controller.shutdown_timeout()) : tern::Ok();
      if (count > 0 || !status.ok()) {
        controller.Shutdown();  // not started, paused, or asked twice: stop now
      } else {
        spdlog::info(
            "SIG{}: pressed the ACPI power button; stopping the VM hard in {} s unless it "
            "powers off",
            sigabbrev_np(signal), controller.shutdown_timeout().count() / 1000);
      }
    }
  }).detach();
}

// Reads a --config-file: the JSON of GET /vm/config.
tern::Result<nlohmann::json> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return tern::Error::FromErrno("--config-file " + path);
  nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded())
    return tern::Error("--config-file " + path + ": malformed JSON", EINVAL);
  return config;
}

int Run(int argc, char** argv, ExitReport& report) {
  // A console reader that goes away must not kill the VM with SIGPIPE; the write fails instead.
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_default_logger(spdlog::stderr_logger_st("tern-vmm"));
  spdlog::set_pattern("tern-vmm: %l: %v");

  tern::VmConfig config;
  CLI::App app{"tern-vmm: run a Linux kernel in a KVM virtual machine, console on stdio"};
  std::string api_sock, config_file, instance_id = "anonymous-instance";
  app.add_option("--kernel", config.kernel_path, "Kernel image: bzImage or ELF vmlinux");
  app.add_option("--initrd", config.initrd_path, "Initial ramdisk (initramfs) to load");
  app.add_option("--cmdline", config.cmdline, "Kernel command line")->capture_default_str();
  app.add_option("--vcpus", config.vcpus, "Number of vCPUs")
      ->capture_default_str()
      ->check(CLI::Range(1u, tern::x86_64::kMaxVcpus));
  app.add_option("--memory", config.memory_mib, "Guest RAM in MiB")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{64}, uint64_t{1} << 20));
  std::vector<std::string> disks, nets;
  app.add_option("--disk", disks,
                 "A virtio-blk disk (repeatable; /dev/vda, vdb, ... in order): "
                 "path=PATH[,readonly=on|off]");
  app.add_option("--net", nets,
                 "A virtio-net interface on a host TAP device (repeatable): "
                 "tap=NAME[,mac=52:54:00:12:34:56]");
  app.add_flag("--rng", config.rng, "Add a virtio-rng entropy device (/dev/hwrng)");
  app.add_option("--console", config.console,
                 "Device that gets stdin: serial (COM1, ttyS0) or virtio (virtio-console, hvc0; "
                 "use with --cmdline console=hvc0)")
      ->transform(CLI::CheckedTransformer(std::map<std::string, tern::ConsoleDevice>{
          {"serial", tern::ConsoleDevice::kSerial}, {"virtio", tern::ConsoleDevice::kVirtio}}))
      ->default_str("serial");
  app.add_option("--api-sock", api_sock,
                 "Serve the Firecracker-compatible control API on this Unix socket (must not "
                 "exist); without --kernel or a boot source, wait for InstanceStart");
  app.add_option("--config-file", config_file,
                 "JSON configuration in the shape of GET /vm/config (boot-source, "
                 "machine-config, drives, network-interfaces, metrics); boots at once");
  app.add_option("--id", instance_id, "Instance id reported by GET /")->capture_default_str();
  unsigned shutdown_timeout_s = 90;
  app.add_option("--shutdown-timeout", shutdown_timeout_s,
                 "Seconds a graceful shutdown (SIGTERM, or the API's Shutdown action) waits for "
                 "the guest to power off after the ACPI power button before stopping it")
      ->capture_default_str()
      ->check(CLI::Range(0u, 86400u));
  app.add_option("--exit-reason-file", report.path,
                 "On exit, write why as JSON to this file: {\"reason\": \"power_off\" | "
                 "\"reset\" | \"triple_fault\" | \"stopped\" | \"error\", \"message\": ...}");
  std::vector<std::string> rebase;
  app.add_option("--rebase-memory", rebase,
                 "BASE DIFF: write the pages of a Diff snapshot's memory file onto the memory "
                 "file of the snapshot it follows (in place), then exit")
      ->expected(2);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return report.Fail(e.what());
  }

  if (!rebase.empty()) {
    tern::Status rebased = tern::snapshot::RebaseMemoryFile(rebase[0], rebase[1]);
    if (!rebased.ok()) return report.Fail("--rebase-memory: " + rebased.error().ToString());
    return 0;
  }
  for (const std::string& text : disks) {
    auto disk = tern::cli::ParseDiskFlag(text);
    if (!disk.ok()) return report.Fail(disk.error().ToString());
    config.disks.push_back(*disk);
  }
  for (const std::string& text : nets) {
    auto net = tern::cli::ParseNetFlag(text);
    if (!net.ok()) return report.Fail(net.error().ToString());
    config.nets.push_back(*net);
  }

  if (config.kernel_path.empty() && config_file.empty() && api_sock.empty()) {
    return report.Fail("nothing to run: give --kernel, --config-file or --api-sock (see --help)");
  }
  tern::VmResources resources(config);
  if (!config.kernel_path.empty()) {
    nlohmann::json source = {{"kernel_image_path", config.kernel_path},
                             {"boot_args", config.cmdline}};
    if (!config.initrd_path.empty()) source["initrd_path"] = config.initrd_path;
    if (tern::Status set = resources.SetBootSource(source); !set.ok()) {
      return report.Fail(set.error().ToString());
    }
  }
  if (!config_file.empty()) {
    auto json = ReadConfigFile(config_file);
    if (!json.ok()) return report.Fail(json.error().ToString());
    if (tern::Status loaded = resources.Load(*json); !loaded.ok()) {
      return report.Fail("--config-file " + config_file + ": " + loaded.error().ToString());
    }
  }
  bool boot_now = resources.has_boot_source();
  tern::Controller controller(std::move(resources), instance_id,
                              std::chrono::seconds(shutdown_timeout_s));
  GracefulShutdownOnSigterm(controller);
  std::unique_ptr<tern::api::ApiServer> api;
  if (!api_sock.empty()) {
    auto server = tern::api::ApiServer::Start(api_sock, controller);
    if (!server.ok()) return report.Fail(server.error().ToString());
    api = std::move(server).value();
  }
  if (boot_now) {
    if (tern::Status started = controller.Start(); !started.ok()) {
      return report.Fail(started.error().ToString());
    }
  }
  tern::Result<tern::VmExit> exit = [&] {
    RawTerminal raw(config.console_in_fd);
    return controller.Run();
  }();
  if (!exit.ok()) return report.Fail(exit.error().ToString());
  nlohmann::json unknown = controller.Metrics()["unknown_accesses"];
  spdlog::info("{}; unclaimed accesses: {} port I/O, {} MMIO", tern::Describe(*exit),
               unknown["port_io"].get<uint64_t>(), unknown["mmio"].get<uint64_t>());
  report.reason = tern::ExitReasonName(*exit);
  report.message = tern::Describe(*exit);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ExitReport report;
  int status = Run(argc, argv, report);
  report.Write();
  return status;
}
