// tern_fake_vmm: a stand-in for tern-vmm in ternd's unit tests (instance_manager_test.cc,
// vmm_process_test.cc), so that they run without KVM. Test-only; never installed.
//
// Takes the flags VmmProcess::Launch gives tern-vmm (--id, --api-sock, --config-file,
// --exit-reason-file, --shutdown-timeout), serves the part of tern-vmm's API that VmmProcess
// uses on the Unix socket (GET / and PUT /actions) and, like tern-vmm, writes why it exited to
// the --exit-reason-file (temp file + rename) before exiting 0. It boots nothing: the "guest"
// powers off at once when the ACPI power button is pressed (SendCtrlAltDel, Shutdown).
//
// Steered per instance by a `tern_fake_vmm=MODE` word in the config file's boot_args (an image's
// kernel command line), else by the TERN_FAKE_VMM_MODE environment variable:
//   normal           the default, as above;
//   ignore-shutdown  the guest ignores the power button; Shutdown still stops the VM hard after
//                    --shutdown-timeout seconds (reason "stopped"), as tern-vmm does;
//   no-api           never opens its API socket (a VMM that hangs while starting);
//   fail             exits 1 at once with reason "error", message "no KVM here" (so does an
//                    unknown mode, naming it).
// Each action it is sent goes to stderr (the instance's vmm.log) as "tern_fake_vmm: action X".
// Guest events, from the test: SIGUSR1 = the guest reboots (reason "reset"), SIGUSR2 = the guest
// powers itself off ("power_off"). A crash is SIGKILL (no reason file). A fake that nobody stops
// exits by itself after kMaxLifetime, so that a crashed test leaves nothing behind for long.
#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

namespace {

constexpr auto kMaxLifetime = std::chrono::seconds(120);

struct Exit {
  std::string reason;
  std::string message;
};

// As tern-vmm's ExitReport::Write: a reader sees all of the file or nothing.
void WriteExitReason(const std::string& path, const Exit& exit) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << nlohmann::json{{"reason", exit.reason}, {"message", exit.message}}.dump() << "\n";
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) std::perror(path.c_str());
}

// "--flag value" pairs of the flags VmmProcess::Launch passes; nullopt on anything else or a
// missing flag.
std::optional<std::map<std::string, std::string>> ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> flags{{"--shutdown-timeout", "90"}};
  if (argc % 2 != 1) return std::nullopt;
  for (int i = 1; i + 1 < argc; i += 2) flags[argv[i]] = argv[i + 1];
  for (const char* name : {"--id", "--api-sock", "--config-file", "--exit-reason-file"}) {
    if (!flags.count(name)) return std::nullopt;
  }
  if (flags.size() != 5) return std::nullopt;  // an unknown flag
  return flags;
}

std::string ModeOf(const std::string& config_path) {
  std::ifstream in(config_path);
  nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_object()) {
    std::istringstream words(config.value("/boot-source/boot_args"_json_pointer, std::string()));
    const std::string prefix = "tern_fake_vmm=";
    for (std::string word; words >> word;) {
      if (word.starts_with(prefix)) return word.substr(prefix.size());
    }
  }
  const char* env = std::getenv("TERN_FAKE_VMM_MODE");
  return env ? env : "normal";
}

// How the VM ends: the first of an API action, a signal or the hard-stop deadline.
class Outcome {
 public:
  void Set(Exit exit) {
    std::lock_guard lock(mutex_);
    if (!exit_) exit_ = std::move(exit);
    changed_.notify_all();
  }
  void StopHardIn(std::chrono::seconds timeout) {
    std::lock_guard lock(mutex_);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    if (deadline < deadline_) deadline_ = deadline;
    hard_stop_message_ = "the guest did not power off within " + std::to_string(timeout.count()) +
                         " s of the power button; stopped it";
    changed_.notify_all();
  }
  Exit Wait() {
    std::unique_lock lock(mutex_);
    while (!exit_) {
      if (changed_.wait_until(lock, deadline_) == std::cv_status::timeout &&
          std::chrono::steady_clock::now() >= deadline_) {
        exit_ = Exit{"stopped", hard_stop_message_};
      }
    }
    return *exit_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Exit> exit_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::now() + kMaxLifetime;
  std::string hard_stop_message_ = "tern_fake_vmm: nobody stopped it";
};

// SIGUSR1 and SIGUSR2 (blocked in every thread) as guest events.
void WatchSignals(Outcome& outcome) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGUSR1);
  sigaddset(&signals, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([&outcome, signals] {
    int signal = 0;
    if (sigwait(&signals, &signal) != 0) return;
    outcome.Set(signal == SIGUSR1
                    ? Exit{"reset", "guest reset (tern_fake_vmm: SIGUSR1)"}
                    : Exit{"power_off", "guest powered off (tern_fake_vmm: SIGUSR2)"});
  }).detach();
}

void Serve(httplib::Server& server, const std::string& id, const std::string& mode,
           std::chrono::seconds shutdown_timeout, Outcome& outcome) {
  server.set_address_family(AF_UNIX);
  server.Get("/", [id](const httplib::Request&, httplib::Response& res) {
    res.set_content(
        nlohmann::json{{"id", id}, {"state", "Running"}, {"app_name", "tern_fake_vmm"}}.dump(),
        "application/json");
  });
  server.Put("/actions", [&outcome, mode, shutdown_timeout](const httplib::Request& req,
                                                            httplib::Response& res) {
    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    std::string action = body.is_object() ? body.value("action_type", "") : "";
    if (action != "SendCtrlAltDel" && action != "Shutdown") {
      res.status = 400;
      res.set_content(nlohmann::json{{"fault_message", "tern_fake_vmm: unsupported action"}}.dump(),
                      "application/json");
      return;
    }
    std::fprintf(stderr, "tern_fake_vmm: action %s\n", action.c_str());  // to vmm.log
    if (mode != "ignore-shutdown") {
      outcome.Set({"power_off", "guest powered off (ACPI S5)"});
    } else if (action == "Shutdown" && shutdown_timeout.count() > 0) {
      outcome.StopHardIn(shutdown_timeout);
    }
    res.status = 204;
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::optional<std::map<std::string, std::string>> flags = ParseFlags(argc, argv);
  if (!flags) {
    std::fprintf(stderr,
                 "usage: tern_fake_vmm --id ID --api-sock PATH --config-file PATH "
                 "--exit-reason-file PATH [--shutdown-timeout S]\n");
    return 2;
  }
  const std::string& reason_path = flags->at("--exit-reason-file");
  const std::string& socket_path = flags->at("--api-sock");
  std::string mode = ModeOf(flags->at("--config-file"));
  if (mode != "normal" && mode != "ignore-shutdown" && mode != "no-api") {
    WriteExitReason(reason_path,
                    {"error", mode == "fail" ? "no KVM here" : "unknown mode " + mode});
    return 1;
  }
  Outcome outcome;
  WatchSignals(outcome);
  httplib::Server server;
  std::thread listener;
  if (mode != "no-api") {
    Serve(server, flags->at("--id"), mode,
          std::chrono::seconds(std::atoi(flags->at("--shutdown-timeout").c_str())), outcome);
    if (!server.bind_to_port(socket_path, 80)) {
      WriteExitReason(reason_path, {"error", "tern_fake_vmm: cannot bind " + socket_path});
      return 1;
    }
    listener = std::thread([&server] { server.listen_after_bind(); });
  }
  Exit exit = outcome.Wait();
  if (listener.joinable()) {
    server.stop();  // answers the request in flight (the 204 of an action) first
    listener.join();
    ::unlink(socket_path.c_str());
  }
  WriteExitReason(reason_path, exit);
  return 0;
}
