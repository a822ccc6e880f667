// tern-ready-timer: runs a VMM command and reports how long it takes until its control socket
// answers (wall milliseconds from the start) and how much CPU time the VMM used until then
// (user + system, from the kernel's accounting of the child). Used inside the test host by
// bench/lifecycle/run to compare tern-vmm's API (HTTP: GET / answered 200) with QEMU's QMP
// (the greeting line).
//
//   tern-ready-timer [--timeout SECONDS] http|qmp SOCKET -- COMMAND [ARGS...]
//   prints: ready_ms=<float> cpu_ms=<float>, or exits 1 with a message
//
// The VMM is killed (SIGKILL) as soon as it answered, so its CPU time is the time to ready.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

using Clock = std::chrono::steady_clock;

// Connects to the Unix socket `path`; -1 while nobody listens yet.
int Connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
  if (fd >= 0) close(fd);
  return -1;
}

// Whether the server on `fd` answered as a ready VMM does: for http, GET / answered 200; for
// qmp, the {"QMP": ...} greeting.
bool Answers(int fd, const std::string& protocol) {
  const std::string expected = protocol == "http" ? "HTTP/1.1 200" : "{\"QMP\"";
  if (protocol == "http") {
    const char request[] = "GET / HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
    if (write(fd, request, sizeof(request) - 1) != static_cast<ssize_t>(sizeof(request) - 1)) {
      return false;
    }
  }
  std::string received;
  char buffer[512];
  while (received.size() < expected.size()) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) return false;
    received.append(buffer, n);
  }
  return received.compare(0, expected.size(), expected) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  double timeout_s = 60;
  int arg = 1;
  if (arg + 1 < argc && std::strcmp(argv[arg], "--timeout") == 0) {
    timeout_s = std::atof(argv[arg + 1]);
    arg += 2;
  }
  if (argc - arg < 4 || std::strcmp(argv[arg + 2], "--") != 0) {
    std::fprintf(stderr, "usage: tern-ready-timer [--timeout S] http|qmp SOCKET -- COMMAND...\n");
    return 2;
  }
  const std::string protocol = argv[arg];
  const std::string socket_path = argv[arg + 1];
  unlink(socket_path.c_str());
  const Clock::time_point start = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    execvp(argv[arg + 3], argv + arg + 3);
    std::fprintf(stderr, "tern-ready-timer: cannot run %s: %s\n", argv[arg + 3],
                 std::strerror(errno));
    _exit(127);
  }
  double ready_ms = -1;
  while (std::chrono::duration<double>(Clock::now() - start).count() < timeout_s) {
    int fd = Connect(socket_path);
    if (fd >= 0) {
      bool ready = Answers(fd, protocol);
      close(fd);
      if (ready) {
        ready_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        break;
      }
    }
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      std::fprintf(stderr, "tern-ready-timer: the VMM exited before it was ready\n");
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  kill(pid, SIGKILL);
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  if (ready_ms < 0) {
    std::fprintf(stderr, "tern-ready-timer: no answer on %s within %.0f s\n", socket_path.c_str(),
                 timeout_s);
    return 1;
  }
  double cpu_ms = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
                  (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
  std::printf("ready_ms=%.2f cpu_ms=%.2f\n", ready_ms, cpu_ms);
  return 0;
}
