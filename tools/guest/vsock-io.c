// vsock-io: an AF_VSOCK test tool for Tern's system tests, packed into the guest initramfs as
// /bin/vsock-io by tools/guest/build (gcc -O2 -static); its host-side modes play the host end
// of Firecracker's hybrid vsock (Unix sockets) in the test host.
//
//   vsock-io listen PORT                accept one connection on AF_VSOCK stream port PORT
//   vsock-io connect CID PORT           connect to CID:PORT (the host is CID 2)
//   vsock-io unix-listen PATH           accept one connection on the Unix socket PATH (what a
//                                       guest connection to host port P reaches: <uds>_<P>)
//   vsock-io hybrid-connect UDS PORT    connect to the VMM's Unix socket UDS, send
//                                       "CONNECT PORT\n", require an "OK <n>" line
//
// Then it copies stdin to the socket and the socket to stdout until both ends are closed: EOF on
// stdin becomes shutdown(SHUT_WR) on the socket, and the tool exits 0 once it has also read EOF
// from the socket. "vsock-io: listening on port PORT" and "vsock-io: connected" go to stderr
// (so a test knows when to connect); errors print one line to stderr and exit 1; bad usage
// exits 2.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { kBufferSize = 64 * 1024 };

static void die(const char* what) {
  fprintf(stderr, "vsock-io: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void usage(void) {
  fprintf(stderr,
          "usage: vsock-io listen PORT\n       vsock-io connect CID PORT\n"
          "       vsock-io unix-listen PATH\n       vsock-io hybrid-connect UDS PORT\n");
  exit(2);
}

// A decimal number in 0..UINT32_MAX, or usage().
static unsigned parse_u32(const char* s) {
  char* end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > UINT32_MAX) usage();
  return (unsigned)v;
}

static int vsock_socket(void) {
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket(AF_VSOCK)");
  return fd;
}

// Accepts one connection on `listener`, then closes it.
static int accept_one(int listener) {
  int fd;
  do {
    fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) die("accept");
  close(listener);
  return fd;
}

static int listen_one(unsigned port) {
  int listener = vsock_socket();
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(listener, (struct sockaddr*)&addr, sizeof(addr)) < 0) die("bind");
  if (listen(listener, 1) < 0) die("listen");
  fprintf(stderr, "vsock-io: listening on port %u\n", port);
  return accept_one(listener);
}

static int connect_to(unsigned cid, unsigned port) {
  int fd = vsock_socket();
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
  if (connect(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0) die("connect");
  return fd;
}

static struct sockaddr_un unix_address(const char* path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path)) usage();
  strcpy(addr.sun_path, path);
  return addr;
}

static int unix_listen_one(const char* path) {
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = unix_address(path);
  unlink(path);
  if (listener < 0 || bind(listener, (struct sockaddr*)&addr, sizeof(addr)) < 0) die("bind");
  if (listen(listener, 1) < 0) die("listen");
  fprintf(stderr, "vsock-io: listening on %s\n", path);
  return accept_one(listener);
}

// Firecracker's hybrid vsock, host-initiated: "CONNECT <port>\n", then "OK <host port>\n".
static int hybrid_connect(const char* uds, unsigned port) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = unix_address(uds);
  if (fd < 0 || connect(fd, (struct sockaddr*)&addr, sizeof(addr)) < 0) die("connect");
  char line[64];
  int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
  if (write(fd, line, (size_t)n) != n) die("write CONNECT");
  size_t len = 0;  // the reply, one byte at a time: data may follow it
  while (len + 1 < sizeof(line)) {
    ssize_t r = read(fd, line + len, 1);
    if (r <= 0) {
      fprintf(stderr, "vsock-io: connection closed before OK (nobody listening?)\n");
      exit(1);
    }
    if (line[len++] == '\n') break;
  }
  line[len] = '\0';
  if (strncmp(line, "OK ", 3) != 0) {
    fprintf(stderr, "vsock-io: unexpected reply: %s", line);
    exit(1);
  }
  return fd;
}

// Writes all of `data` to the blocking descriptor `fd`.
static void write_all(int fd, const char* data, size_t len, const char* what) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die(what);
    data += n;
    len -= (size_t)n;
  }
}

// The copy loop. The socket is non-blocking, so that a peer that sends without reading never
// blocks us from reading; stdout writes block (whoever reads stdout is not the peer).
static void relay(int sock) {
  static char in[kBufferSize];   // stdin -> socket
  static char out[kBufferSize];  // socket -> stdout
  size_t in_off = 0, in_len = 0;
  int stdin_eof = 0, shut_wr = 0, sock_eof = 0;
  if (fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
  while (!shut_wr || !sock_eof) {
    struct pollfd fds[2] = {
        {.fd = (!stdin_eof && in_len == 0) ? STDIN_FILENO : -1, .events = POLLIN},
        {.fd = sock, .events = (short)((sock_eof ? 0 : POLLIN) | (in_len > 0 ? POLLOUT : 0))},
    };
    if (fds[1].events == 0) fds[1].fd = -1;
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[0].revents != 0) {
      ssize_t n = read(STDIN_FILENO, in, sizeof(in));
      if (n > 0) {
        in_off = 0;
        in_len = (size_t)n;
      } else if (n == 0 || (fds[0].revents & POLLNVAL)) {
        stdin_eof = 1;
      } else if (errno != EINTR && errno != EAGAIN) {
        die("read stdin");
      }
    }
    if (in_len > 0) {
      ssize_t n = send(sock, in + in_off, in_len, MSG_NOSIGNAL);
      if (n > 0) {
        in_off += (size_t)n;
        in_len -= (size_t)n;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        die("write socket");
      }
    }
    if (stdin_eof && in_len == 0 && !shut_wr) {
      if (shutdown(sock, SHUT_WR) < 0) die("shutdown");
      shut_wr = 1;
    }
    if (!sock_eof && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = recv(sock, out, sizeof(out), 0);
      if (n > 0) {
        write_all(STDOUT_FILENO, out, (size_t)n, "write stdout");
      } else if (n == 0) {
        sock_eof = 1;
      } else if (errno != EAGAIN && errno != EINTR) {
        die("read socket");
      }
    }
  }
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  int sock;
  if (argc == 3 && strcmp(argv[1], "listen") == 0) {
    sock = listen_one(parse_u32(argv[2]));
  } else if (argc == 4 && strcmp(argv[1], "connect") == 0) {
    sock = connect_to(parse_u32(argv[2]), parse_u32(argv[3]));
  } else if (argc == 3 && strcmp(argv[1], "unix-listen") == 0) {
    sock = unix_listen_one(argv[2]);
  } else if (argc == 4 && strcmp(argv[1], "hybrid-connect") == 0) {
    sock = hybrid_connect(argv[2], parse_u32(argv[3]));
  } else {
    usage();
  }
  fprintf(stderr, "vsock-io: connected\n");
  relay(sock);
  close(sock);
  return 0;
}
