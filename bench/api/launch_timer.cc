// tern-ec2-launch-timer: RunInstances-to-running latency of ternd against the VM's own boot
// (bench/api/launch, inside the test host next to ternd). For each iteration it
//   - ternd: sends RunInstances for one instance and times, from just before the request, the
//     instance's console log appearing (ternd opens it for tern-vmm just before the exec: what
//     ternd adds ends there), DescribeInstances first answering `running`, and the marker line
//     first appearing in the console log (each polled every --poll-ms); then terminates it and
//     waits for `terminated`;
//   - alone: runs tern-vmm itself with the very configuration ternd gave that instance (its
//     kernel, initrd, command line, vCPUs and memory; a fresh copy of the AMI's root disk made
//     before the clock starts) and times the same marker in its console, polled the same way.
// With --ternd-only (bench/api/run: ternd on this machine with tern_fake_vmm) only the first
// two. Prints one JSON object per line: {"ternd_exec_ms", "ternd_running_ms", "ternd_marker_ms",
// "alone_marker_ms"}.
//
//   tern-ec2-launch-timer --key K --secret S --image-id AMI --instances-dir DIR
//                         (--ami-root FILE --vmm PATH [--marker TEXT] | --ternd-only)
//                         [--iterations N] [--instance-type T] [--poll-ms N]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <pugixml.hpp>
#include <string>
#include <thread>

#include "cloud/disk_copy.h"
#include "cloud/ec2_client.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  tern::cloud::Ec2Endpoint endpoint;
  std::string image_id, instance_type = "t3.micro";
  std::string instances_dir;  // ternd's <data-dir>/instances
  std::string ami_root;       // the AMI's root disk, for the tern-vmm-alone runs
  std::string vmm = "/bin/tern-vmm";
  std::string marker = "tern-busybox: up";
  std::string work = "/tmp/tern-launch-timer";
  int iterations = 5;
  int poll_ms = 2;
  double timeout_s = 300;
  bool ternd_only = false;  // no marker, no tern-vmm alone (with ternd's --vmm tern_fake_vmm)
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "tern-ec2-launch-timer: %s\n", message.c_str());
  std::exit(1);
}

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void Sleep(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

using Doc = std::unique_ptr<pugi::xml_document>;

// Ec2Client::Call, dying on a failed connection or an EC2 error.
Doc Call(tern::cloud::Ec2Client& client, const std::string& action,
         const std::map<std::string, std::string>& params) {
  try {
    return client.Call(action, params);
  } catch (const tern::cloud::Ec2Error& e) {
    Die(action + ": " + e.code() + ": " + e.what());
  }
}

std::string StateOf(tern::cloud::Ec2Client& client, const std::string& id) {
  Doc doc = Call(client, "DescribeInstances", {{"InstanceId.1", id}});
  return doc->select_node("//instancesSet/item/instanceState/name").node().text().get();
}

// Polls `path` every poll_ms until it holds `marker`; false on timeout.
bool WaitForMarker(const Options& o, const std::string& path, Clock::time_point start) {
  std::string seen;
  while (MillisecondsSince(start) < o.timeout_s * 1000) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      in.seekg(static_cast<std::streamoff>(seen.size()));
      seen.append(std::istreambuf_iterator<char>(in), {});
      if (seen.find(o.marker) != std::string::npos) return true;
    }
    Sleep(o.poll_ms);
  }
  return false;
}

void WaitForState(tern::cloud::Ec2Client& client, const Options& o, const std::string& id,
                  const std::string& state, Clock::time_point start) {
  while (StateOf(client, id) != state) {
    if (MillisecondsSince(start) > o.timeout_s * 1000) Die(id + " never became " + state);
    Sleep(o.poll_ms);
  }
}

struct TerndRun {
  double exec_ms, running_ms, marker_ms;
  nlohmann::json config;  // what ternd gave tern-vmm (vmm-config.json)
};

TerndRun TimeTernd(tern::cloud::Ec2Client& client, const Options& o) {
  Clock::time_point start = Clock::now();
  Doc run = Call(client, "RunInstances",
                 {{"MinCount", "1"},
                  {"MaxCount", "1"},
                  {"ImageId", o.image_id},
                  {"InstanceType", o.instance_type}});
  std::string id = run->select_node("//instancesSet/item/instanceId").node().text().get();
  if (id.empty()) Die("RunInstances answered no instance id");
  std::string dir = o.instances_dir + "/" + id;
  TerndRun result{};
  while (!fs::exists(dir + "/console.log")) {
    if (MillisecondsSince(start) > o.timeout_s * 1000) Die(id + ": ternd never launched tern-vmm");
    Sleep(o.poll_ms);
  }
  result.exec_ms = MillisecondsSince(start);
  WaitForState(client, o, id, "running", start);
  result.running_ms = MillisecondsSince(start);
  if (o.ternd_only) {
    Call(client, "TerminateInstances", {{"InstanceId.1", id}});
    WaitForState(client, o, id, "terminated", Clock::now());
    return result;
  }
  if (!WaitForMarker(o, dir + "/console.log", start)) Die(id + ": no marker on the console");
  result.marker_ms = MillisecondsSince(start);
  result.config = nlohmann::json::parse(std::ifstream(dir + "/vmm-config.json"));
  // The alone run boots the instance's own boot files: keep copies past its termination.
  fs::copy_file(dir + "/vmlinuz", o.work + "/vmlinuz", fs::copy_options::overwrite_existing);
  if (result.config["boot-source"].contains("initrd_path")) {
    fs::copy_file(dir + "/initrd.img", o.work + "/initrd.img",
                  fs::copy_options::overwrite_existing);
  }
  Call(client, "TerminateInstances", {{"InstanceId.1", id}});
  WaitForState(client, o, id, "terminated", Clock::now());
  return result;
}

// tern-vmm with ternd's configuration of an instance, its paths moved to the work directory.
double TimeAlone(const Options& o, nlohmann::json config) {
  std::string root = o.work + "/root.raw", console = o.work + "/console.log";
  fs::remove(root);
  fs::remove(console);
  fs::remove(o.work + "/api.sock");
  if (!tern::cloud::CopyDisk(o.ami_root, root).ok()) Die("cannot copy " + o.ami_root);
  config["boot-source"]["kernel_image_path"] = o.work + "/vmlinuz";
  if (config["boot-source"].contains("initrd_path")) {
    config["boot-source"]["initrd_path"] = o.work + "/initrd.img";
  }
  config["drives"][0]["path_on_host"] = root;
  std::ofstream(o.work + "/vmm-config.json") << config.dump(2) << "\n";
  Clock::time_point start = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    std::FILE* out = std::fopen(console.c_str(), "w");
    if (!out) _exit(127);
    dup2(fileno(out), STDOUT_FILENO);
    dup2(fileno(out), STDERR_FILENO);
    std::string api = o.work + "/api.sock", cfg = o.work + "/vmm-config.json";
    execl(o.vmm.c_str(), o.vmm.c_str(), "--id", "alone", "--api-sock", api.c_str(), "--config-file",
          cfg.c_str(), nullptr);
    _exit(127);
  }
  if (pid < 0) Die("fork failed");
  bool seen = WaitForMarker(o, console, start);
  double ms = MillisecondsSince(start);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  if (!seen) Die("tern-vmm alone: no marker on the console (see " + console + ")");
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"tern-ec2-launch-timer: RunInstances to running, against tern-vmm alone"};
  tern::cloud::Ec2Endpoint& e = o.endpoint;
  app.add_option("--port", e.port)->capture_default_str()->check(CLI::Range(1, 65535));
  app.add_option("--key", e.access_key_id, "Access key id")->required();
  app.add_option("--secret", e.secret_access_key, "Secret access key")->required();
  app.add_option("--image-id", o.image_id)->required();
  app.add_option("--instance-type", o.instance_type)->capture_default_str();
  app.add_option("--instances-dir", o.instances_dir, "ternd's <data-dir>/instances")->required();
  app.add_option("--ami-root", o.ami_root, "The AMI's root disk (for tern-vmm alone)");
  app.add_flag("--ternd-only", o.ternd_only,
               "Time only RunInstances to exec and to running (no guest, no tern-vmm alone)");
  app.add_option("--vmm", o.vmm)->capture_default_str();
  app.add_option("--marker", o.marker, "Console text that says the guest is up")
      ->capture_default_str();
  app.add_option("--work", o.work)->capture_default_str();
  app.add_option("--iterations", o.iterations)->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--poll-ms", o.poll_ms)->capture_default_str()->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);
  fs::create_directories(o.work);
  tern::cloud::Ec2Client client(e);
  if (!o.ternd_only && o.ami_root.empty()) Die("--ami-root is required without --ternd-only");
  for (int i = 0; i < o.iterations; ++i) {
    TerndRun ternd = TimeTernd(client, o);
    nlohmann::json row = {{"ternd_exec_ms", ternd.exec_ms}, {"ternd_running_ms", ternd.running_ms}};
    if (!o.ternd_only) {
      row["ternd_marker_ms"] = ternd.marker_ms;
      row["alone_marker_ms"] = TimeAlone(o, ternd.config);
    }
    std::printf("%s\n", row.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}
