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

// Whether the process behind `pidfd` has exited, waiting up to `timeout_ms` for it.
bool PidfdExited(int pidfd, int timeout_ms = 0) {
  pollfd fd{pidfd, POLLIN, 0};
  return ::poll(&fd, 1, timeout_ms) > 0;
}

// A process started by SpawnDetached.
struct Spawned {
  int pid;
  Fd pidfd;
};

// Runs argv[0] in a grandchild in its own session (never ternd's child, so it outlives ternd
// and ternd never reaps it), with stdin /dev/null and stdout/stderr appended to the given files.
// The middle child reports the grandchild's pid through a pipe and waits until ternd holds a
// pidfd on it (until then the pid cannot be reused: the grandchild is its unreaped child).
// Only async-signal-safe calls between fork and exec.
Result<Spawned> SpawnDetached(const std::vector<std::string>& args, const std::string& out_path,
                              const std::string& err_path) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  int pid_pipe[2], ack_pipe[2];
  if (::pipe2(pid_pipe, O_CLOEXEC) != 0) return Error::FromErrno("pipe");
  Fd pid_in(pid_pipe[0]), pid_out(pid_pipe[1]);
  if (::pipe2(ack_pipe, O_CLOEXEC) != 0) return Error::FromErrno("pipe");
  Fd ack_in(ack_pipe[0]), ack_out(ack_pipe[1]);
  pid_t child = ::fork();
  if (child < 0) return Error::FromErrno("fork");
  if (child == 0) {
    ::setsid();
    if (pid_t grandchild = ::fork(); grandchild != 0) {
      (void)!::write(pid_out.get(), &grandchild, sizeof(grandchild));
      ::close(ack_out.get());
      char byte;
      (void)!::read(ack_in.get(), &byte, 1);  // end of file once ternd closes its end
      ::_exit(0);
    }
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
  pid_out.Reset();
  ack_in.Reset();
  pid_t pid = -1;
  ssize_t n;
  while ((n = ::read(pid_in.get(), &pid, sizeof(pid))) < 0 && errno == EINTR) {
  }
  Fd pidfd;
  std::optional<Error> error;
  if (n != sizeof(pid) || pid <= 0) {
    error = Error("fork: no process for " + args[0], ECHILD);
  } else if (pidfd.Reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))); !pidfd.valid()) {
    error = Error::FromErrno("pidfd_open");
  }
  ack_out.Reset();  // lets the middle child exit
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (error) return *error;
  return Spawned{pid, std::move(pidfd)};
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
  TERN_ASSIGN_OR_RETURN(
      Spawned spawned,
      SpawnDetached({vmm_path, "--id", instance_id, "--api-sock", paths.api_socket(),
                     "--config-file", paths.config(), "--exit-reason-file", paths.exit_reason(),
                     "--shutdown-timeout", std::to_string(shutdown_timeout.count())},
                    paths.console_log(), paths.vmm_log()));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::optional<VmmProcess> vmm = Adopt(instance_id, paths, /*remove_stale=*/false)) {
      return std::move(*vmm);
    }
    bool exited = PidfdExited(spawned.pidfd.get());  // before the look: it writes, then exits
    if (::access(paths.exit_reason().c_str(), F_OK) == 0) {
      return Error("tern-vmm failed to start: " + TakeExit(paths).message, EIO);
    }
    if (exited) {
      return Error("tern-vmm exited without serving its API (see " + paths.vmm_log() + ")", EIO);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Never leave behind a VMM nobody knows: a later launch would start a second one.
  ::syscall(SYS_pidfd_send_signal, spawned.pidfd.get(), SIGKILL, nullptr, 0);
  (void)PidfdExited(spawned.pidfd.get(), /*timeout_ms=*/1000);
  return Error("tern-vmm did not serve its API within " + std::to_string(timeout.count()) +
                   " ms (see " + paths.vmm_log() + "); killed it",
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

bool VmmProcess::Exited() const { return PidfdExited(pidfd_.get()); }

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
