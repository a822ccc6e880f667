// tern-boot-timer: runs a VMM command and reports, in milliseconds from its start, when a marker
// line first appears on its console (stdout and stderr) and when it exits. Used inside the test
// host by bench/boot/run to time tern-vmm and QEMU on the same kernel and initramfs.
//
//   tern-boot-timer [--timeout SECONDS] MARKER -- COMMAND [ARGS...]
//   prints: marker_ms=<float|-1> exit_ms=<float> status=<exit status or 128+signal>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

int Usage() {
  std::fprintf(stderr, "usage: tern-boot-timer [--timeout SECONDS] MARKER -- COMMAND [ARGS...]\n");
  return 2;
}

pid_t Spawn(char** argv, int output_fd) {
  pid_t pid = fork();
  if (pid == 0) {
    dup2(output_fd, STDOUT_FILENO);
    dup2(output_fd, STDERR_FILENO);
    execvp(argv[0], argv);
    std::fprintf(stderr, "tern-boot-timer: cannot run %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  double timeout_s = 300;
  int arg = 1;
  if (arg + 1 < argc && std::strcmp(argv[arg], "--timeout") == 0) {
    timeout_s = std::atof(argv[arg + 1]);
    arg += 2;
  }
  if (arg + 2 >= argc || std::strcmp(argv[arg + 1], "--") != 0) return Usage();
  std::string marker = argv[arg];
  char** command = argv + arg + 2;

  int fds[2];
  if (pipe(fds) != 0) return 1;
  Clock::time_point start = Clock::now();
  pid_t pid = Spawn(command, fds[1]);
  close(fds[1]);

  // Keep only enough of the stream to find a marker split across reads.
  std::string window;
  double marker_ms = -1;
  char buffer[4096];
  while (true) {
    double left_ms = timeout_s * 1000 - MillisecondsSince(start);
    if (left_ms <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left_ms)) <= 0) continue;
    ssize_t n = read(fds[0], buffer, sizeof(buffer));
    if (n <= 0) break;
    if (marker_ms >= 0) continue;
    window.append(buffer, n);
    if (window.find(marker) != std::string::npos) {
      marker_ms = MillisecondsSince(start);
    } else if (window.size() > marker.size()) {
      window.erase(0, window.size() - marker.size());
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  double exit_ms = MillisecondsSince(start);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::printf("marker_ms=%.1f exit_ms=%.1f status=%d\n", marker_ms, exit_ms, code);
  return 0;
}
