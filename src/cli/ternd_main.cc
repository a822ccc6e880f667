// ternd: Tern's host control plane, an EC2-compatible API (Query protocol, 2016-11-15) over HTTP
// that runs each instance as a supervised tern-vmm process. Thin: parse flags, open the store,
// write the AWS CLI profile, start the instance supervisor, serve until SIGTERM/SIGINT (the
// instances keep running; a restarted ternd finds them again).
#include <malloc.h>
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "cloud/aws_profile.h"
#include "cloud/ec2_actions.h"

namespace {

int Fail(const std::string& message) {
  spdlog::error("{}", message);
  return 1;
}

// tern-vmm beside this executable, or the one on PATH.
std::string DefaultVmmPath() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec && std::filesystem::exists(self.parent_path() / "tern-vmm")) {
    return self.parent_path() / "tern-vmm";
  }
  return "/usr/bin/tern-vmm";
}

// SIGTERM and SIGINT, blocked in every thread (the mask is inherited: call before starting
// any), are taken by StopOnSignals' thread.
sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// Stops serving at the first of `signals`.
void StopOnSignals(tern::cloud::Ec2Server& server, sigset_t signals) {
  std::thread([&server, signals] {
    int signal = 0;
    sigwait(&signals, &signal);
    spdlog::info("SIG{}: stopping (instances keep running)", sigabbrev_np(signal));
    server.Stop();
  }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  // A DescribeInstances of 1000 instances builds ~1.3 MiB of XML on an API thread. glibc's
  // defaults hand such blocks back to the kernel when freed (mmap'd blocks, heap trimming), so
  // every listing faulted its memory in again: that was about half of its CPU time. Keep them.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  sigset_t stop_signals = BlockStopSignals();
  spdlog::set_default_logger(spdlog::stderr_logger_mt("ternd"));
  spdlog::set_pattern("ternd: %l: %v");

  CLI::App app{"ternd: Tern's EC2-compatible control plane"};
  std::string listen = "127.0.0.1:8787", data_dir = "/var/lib/ternd", vmm = DefaultVmmPath();
  std::string region = "us-east-1";
  unsigned shutdown_timeout = 90, reboot_timeout = 240;
  uint64_t reserve_mib = 512;
  app.add_option("--listen", listen, "HOST:PORT of the EC2 API (HTTP)")->capture_default_str();
  app.add_option("--data-dir", data_dir, "State, images and instances")->capture_default_str();
  app.add_option("--vmm", vmm, "The tern-vmm executable")->capture_default_str();
  app.add_option("--region", region, "Region written to the AWS CLI profile")
      ->capture_default_str();
  app.add_option("--shutdown-timeout", shutdown_timeout,
                 "Seconds a stop waits after the ACPI power button before stopping hard")
      ->capture_default_str()
      ->check(CLI::Range(1u, 86400u));
  app.add_option("--reboot-timeout", reboot_timeout,
                 "Seconds a reboot waits for the guest before rebooting it hard")
      ->capture_default_str()
      ->check(CLI::Range(1u, 86400u));
  app.add_option("--reserve-memory", reserve_mib, "MiB of host memory kept from instances")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  size_t colon = listen.rfind(':');
  int port = colon == std::string::npos ? -1 : std::atoi(listen.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return Fail("--listen " + listen + ": expected HOST:PORT");
  std::string host = listen.substr(0, colon);
  if (::access(vmm.c_str(), X_OK) != 0) return Fail("--vmm " + vmm + ": not an executable");
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Fail("--data-dir " + data_dir + ": " + ec.message());
  data_dir = std::filesystem::canonical(data_dir).string();

  try {
    tern::cloud::Store store(data_dir + "/ternd.db");
    const char* home = std::getenv("HOME");
    std::string endpoint =
        "http://" + (host == "0.0.0.0" ? "127.0.0.1" : host) + ":" + std::to_string(port);
    if (home) {
      auto added = tern::cloud::AddAwsProfile(
          std::string(home) + "/.aws", {"tern", store.account().access_key_id,
                                        store.account().secret_access_key, region, endpoint});
      if (!added.ok()) spdlog::warn("AWS CLI profile: {}", added.error().ToString());
      if (added.ok() && *added) spdlog::info("added the [tern] profile to {}/.aws", home);
    }
    tern::cloud::InstanceManager manager(store,
                                         {data_dir, vmm, std::chrono::seconds(shutdown_timeout),
                                          std::chrono::seconds(reboot_timeout)});
    tern::cloud::Ec2Backend backend{store, manager, tern::cloud::HostCapacity::Probe(reserve_mib),
                                    data_dir};
    tern::cloud::Ec2Server server([&store](const std::string& key) -> std::optional<std::string> {
      if (key == store.account().access_key_id) return store.account().secret_access_key;
      return std::nullopt;
    });
    tern::cloud::RegisterInstanceActions(server, backend);
    tern::cloud::RegisterImageActions(server, backend);
    tern::cloud::RegisterKeyPairAndTagActions(server, backend);
    if (tern::Status started = manager.Start(); !started.ok()) {
      return Fail(started.error().ToString());
    }
    auto bound = server.Bind(host, port);
    if (!bound.ok()) return Fail(bound.error().ToString());
    StopOnSignals(server, stop_signals);
    spdlog::info("serving the EC2 API on http://{}:{} (data in {})", host, port, data_dir);
    server.Run();
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
  return 0;
}
