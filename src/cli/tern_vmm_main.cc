// tern-vmm: boots a Linux kernel in a KVM virtual machine with its serial console on this
// terminal. A thin layer over the VMM library: parse flags, build the Vmm, run it, report.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "arch/x86_64/layout.h"
#include "cli/device_flags.h"
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

int Fail(const std::string& message) {
  spdlog::error("{}", message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // A console reader that goes away must not kill the VM with SIGPIPE; the write fails instead.
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_default_logger(spdlog::stderr_logger_st("tern-vmm"));
  spdlog::set_pattern("tern-vmm: %l: %v");

  tern::VmConfig config;
  CLI::App app{"tern-vmm: run a Linux kernel in a KVM virtual machine, console on stdio"};
  app.add_option("--kernel", config.kernel_path, "Kernel image: bzImage or ELF vmlinux")
      ->required();
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return Fail(e.what());
  }

  for (const std::string& text : disks) {
    auto disk = tern::cli::ParseDiskFlag(text);
    if (!disk.ok()) return Fail(disk.error().ToString());
    config.disks.push_back(*disk);
  }
  for (const std::string& text : nets) {
    auto net = tern::cli::ParseNetFlag(text);
    if (!net.ok()) return Fail(net.error().ToString());
    config.nets.push_back(*net);
  }

  auto vmm = tern::Vmm::Create(config);
  if (!vmm.ok()) return Fail(vmm.error().ToString());
  tern::Result<tern::VmExit> exit = [&] {
    RawTerminal raw(config.console_in_fd);
    return (*vmm)->Run();
  }();
  tern::UnknownAccessCounts unknown = (*vmm)->unknown_accesses();
  if (!exit.ok()) return Fail(exit.error().ToString());
  spdlog::info("{}; unclaimed accesses: {} port I/O, {} MMIO", tern::Describe(*exit),
               unknown.port_io, unknown.mmio);
  return 0;
}
