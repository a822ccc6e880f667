// Launching, finding again, driving and watching an instance's tern-vmm (see vmm_process.h).
#include "cloud/vmm_process.h"

#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

namespace tern::cloud {
namespace {

// The pid of the process serving the Unix socket at `path` (SO_PEERCRED), or nullopt when no
// process accepts connections there.
std::optional<int> PeerPid(const std::string& path) {
  Fd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (!sock.valid() || path.size() >= sizeof(addr.sun_path)) return std::nullopt;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return std::nullopt;
  }
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(sock.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  return cred.pid;
}

httplib::Client ApiClient(const std::string& socket_path) {
  httplib::Client client(socket_path, 80);
  client.set_address_family(AF_UNIX);
  client.set_connection_timeout(std::chrono::seconds(2));
  client.set_read_timeout(std::chrono::seconds(30));
  return client;
}

// GET / of the VMM API: the instance id it serves, or nullopt.
std::optional<std::string> ServedInstanceId(const std::string& socket_path) {
  httplib::Client client = ApiClient(socket_path);
  httplib::Result res = client.Get("/");
  if (!res || res->status != 200) return std::nullopt;
  nlohmann::json body = nlohmann::json::parse(res->body, nullptr, false);
  if (!body.is_object() || !body.contains("id") || !body["id"].is_string()) return std::nullopt;
  return body["id"].get<std::string>();
}

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out.flush()) return Error::FromErrno("write " + path);
  return Ok();
}

// Runs argv[0] in a grandchild in its own session (never ternd's child, so it outlives ternd
// and ternd never reaps it), with stdin /dev/null and stdout/stderr appended to the given files.
// Only async-signal-safe calls between fork and exec.
Status SpawnDetached(const std::vector<std::string>& args, const std::string& out_path,
                     const std::string& err_path) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  pid_t child = ::fork();
  if (child < 0) return Error::FromErrno("fork");
  if (child == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in < 0 || out < 0 || err < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::close_range(3, ~0U, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return Ok();
}

}  // namespace

Result<VmmProcess> VmmProcess::Launch(const std::string& vmm_path, const std::string& instance_id,
                                      const VmmPaths& paths, const nlohmann::json& config,
                                      std::chrono::milliseconds timeout,
                                      std::chrono::seconds shutdown_timeout) {
  if (Adopt(instance_id, paths)) {
    return Error("a VMM for " + instance_id + " is already running", EEXIST);
  }
  ::unlink(paths.exit_reason().c_str());
  TERN_RETURN_IF_ERROR(WriteFile(paths.config(), config.dump(2) + "\n"));
  TERN_RETURN_IF_ERROR(
      SpawnDetached({vmm_path, "--id", instance_id, "--api-sock", paths.api_socket(),
                     "--config-file", paths.config(), "--exit-reason-file", paths.exit_reason(),
                     "--shutdown-timeout", std::to_string(shutdown_timeout.count())},
                    paths.console_log(), paths.vmm_log()));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::optional<VmmProcess> vmm = Adopt(instance_id, paths, /*remove_stale=*/false)) {
      return std::move(*vmm);
    }
    if (::access(paths.exit_reason().c_str(), F_OK) == 0) {
      return Error("tern-vmm failed to start: " + TakeExit(paths).message, EIO);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return Error("tern-vmm did not serve its API within " + std::to_string(timeout.count()) +
                   " ms (see " + paths.vmm_log() + ")",
               ETIMEDOUT);
}

std::optional<VmmProcess> VmmProcess::Adopt(const std::string& instance_id, const VmmPaths& paths,
                                            bool remove_stale) {
  std::optional<int> pid = PeerPid(paths.api_socket());
  if (!pid) {
    if (remove_stale && ::access(paths.api_socket().c_str(), F_OK) == 0) {
      ::unlink(paths.api_socket().c_str());
    }
    return std::nullopt;
  }
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, *pid, 0)));
  // Checked after pidfd_open: the socket still answers for this instance, so the pidfd is the
  // process behind it and not a later one that reused the pid.
  if (!pidfd.valid() || ServedInstanceId(paths.api_socket()) != instance_id) return std::nullopt;
  return VmmProcess(*pid, std::move(pidfd), paths);
}

VmmExit VmmProcess::TakeExit(const VmmPaths& paths) {
  std::ifstream in(paths.exit_reason());
  if (!in) return {"missing", "tern-vmm exited without saying why (killed or crashed)"};
  nlohmann::json body = nlohmann::json::parse(in, nullptr, false);
  ::unlink(paths.exit_reason().c_str());
  if (!body.is_object()) return {"missing", "tern-vmm's exit reason file is malformed"};
  return {body.value("reason", "missing"), body.value("message", "")};
}

bool VmmProcess::Exited() const {
  pollfd fd{pidfd_.get(), POLLIN, 0};
  return ::poll(&fd, 1, 0) > 0;
}

Status VmmProcess::Action(const std::string& type) const {
  httplib::Client client = ApiClient(paths_.api_socket());
  std::string body = nlohmann::json{{"action_type", type}}.dump();
  httplib::Result res = client.Put("/actions", body, "application/json");
  if (!res) return Error("VMM API " + paths_.api_socket() + ": " + httplib::to_string(res.error()));
  if (res->status / 100 != 2) {
    nlohmann::json fault = nlohmann::json::parse(res->body, nullptr, false);
    return Error(fault.is_object() ? fault.value("fault_message", res->body) : res->body);
  }
  return Ok();
}

void VmmProcess::Kill() const {
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

}  // namespace tern::cloud
