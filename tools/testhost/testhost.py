# Tern's test host: runs a shell command inside a QEMU-TCG machine that emulates AMD-V
# (-cpu max,+svm) and boots Debian's cloud kernel with kvm-amd loaded, so /dev/kvm inside is real
# hardware-assisted KVM (the development machines' own /dev/kvm is PVM; see
# /work/shared/notes/kvm-on-these-machines.md). Python module (run()) and CLI (./testhost).
# Standard library only; see README.md next to this file.
"""Run commands inside Tern's TCG test host (a machine with nested, hardware-assisted KVM).

    from testhost import run, Files
    r = run("echo hello; exit 3")          # -> Result(status=3, output='hello\\n', ...)
    r = run("/x/tern-vmm --help", files=["/x/tern-vmm"])   # ELF: its shared libraries come along
    r = run("qemu-system-x86_64 ...", qemu=True)          # QEMU + ROMs inside, for comparisons
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterable

HERE = os.path.dirname(os.path.realpath(__file__))
REPO_TOOLS = os.path.dirname(HERE)
GUEST_BUILD = os.path.join(REPO_TOOLS, "guest", "build")
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(REPO_TOOLS, "guest"))
import initramfs  # noqa: E402  (tools/guest/initramfs.py)

QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
HOST_MODULES = ["kvm_amd"]  # + dependencies (kvm, irqbypass), resolved from the .ko files
# Packed too, but loaded only on demand (`modprobe NAME`, through a generated modules.dep), so they
# cost no boot time: TAP devices and bridges for guest networking (network.py in tests/system),
# and the virtio disk drivers, loaded by init when run() was given disks.
HOST_ON_DEMAND_MODULES = ["tun", "bridge", "veth", "virtio_pci", "virtio_blk", "virtio_net"]
DEFAULT_MEMORY_MIB = 3072   # a 1024 MiB nested guest + QEMU/VMM + the initrd's files
DEFAULT_SMP = 2
DEFAULT_TIMEOUT = 600.0
# cryptomgr.notests: skip the crypto self-tests (~0.3 s under TCG).
HOST_APPEND = "console=ttyS0 quiet panic=-1 reboot=t cryptomgr.notests"
# TERN_TESTHOST_CPU=max,+svm,-erms,-fsrm boots ~0.4 s faster (the kernel then copies memory with
# rep movsq instead of byte-wise rep movsb, which TCG runs faster), but the only 5 freezes of
# the whole test host seen (nested -smp 2 guests) all happened with it, so it is not the default.
HOST_CPU = os.environ.get("TERN_TESTHOST_CPU", "max,+svm")
HOST_ACCEL = os.environ.get("TERN_TESTHOST_ACCEL", "tcg,thread=multi")
# qboot instead of SeaBIOS: boots the -kernel directly, measurably faster under TCG.
HOST_BIOS = "/usr/share/qemu/qboot.rom"
# Where the guest artifacts (tools/guest/build) appear inside the test host.
GUEST_PATHS = {
    "TERN_GUEST_VMLINUZ": "/guest/vmlinuz",
    "TERN_GUEST_VMLINUX": "/guest/vmlinux",
    "TERN_GUEST_INITRAMFS": "/guest/initramfs.cpio.gz",
    "TERN_GUEST_KERNEL_VERSION_FILE": "/guest/kernel-version",
}
# QEMU data files that `-M microvm -enable-kvm -kernel ... -initrd ...` opens (seen with strace:
# bios-microvm.bin, a link to qboot.rom, and linuxboot_dma.bin), plus the small x86 ones other
# machine types (-M pc/q35, PVH or multiboot kernels) need. Missing ones are skipped.
QEMU_DATA_FILES = [
    "/usr/share/qemu/bios-microvm.bin", "/usr/share/qemu/qboot.rom", "/usr/share/qemu/linuxboot.bin",
    "/usr/share/qemu/linuxboot_dma.bin", "/usr/share/qemu/kvmvapic.bin", "/usr/share/qemu/pvh.bin",
    "/usr/share/qemu/multiboot.bin", "/usr/share/qemu/multiboot_dma.bin",
    "/usr/share/seabios/bios-256k.bin", "/usr/share/seabios/bios.bin", "/usr/share/seabios/vgabios-stdvga.bin",
]

EXIT_TIMEOUT = 124   # CLI exit status when the test host timed out
EXIT_FAILURE = 125   # CLI exit status when the test host itself failed
# The test host's init reports "alive" every 10 s while the command runs; this long without one
# (after the command started) means the emulated machine froze: QEMU is killed, TestHostFrozen.
HEARTBEAT_LIMIT = 90.0
TAIL_LINES = 15      # lines of output and console a TestHostError message ends with


class TestHostError(Exception):
    """The test host could not run the command (QEMU failed, no status came back, no /dev/kvm...).

    .result holds what was collected so far (output, console log, seconds)."""

    __test__ = False  # not a pytest test class

    def __init__(self, message: str, result: "Result | None" = None):
        super().__init__(message)
        self.result = result

    def __str__(self) -> str:
        """The message, then the last lines of the command's output and of the test host's
        console, so that a failure report (CI keeps only part of it) says what happened."""
        text = super().__str__()
        if self.result is None:
            return text
        for name, body in (("output", self.result.output), ("console", self.result.console)):
            lines = [l for l in body.splitlines() if l.strip()][-TAIL_LINES:]
            text += f"\n--- last {len(lines)} lines of the {name} ---\n" + "\n".join(lines)
        return text


class TestHostTimeout(TestHostError):
    """The command did not finish within the timeout; QEMU was killed."""


class TestHostFrozen(TestHostError):
    """The test host stopped sending its heartbeat for HEARTBEAT_LIMIT seconds; QEMU was killed."""


@dataclasses.dataclass
class Result:
    status: int              # the command's exit status
    output: str              # its stdout+stderr (from ttyS1)
    console: str             # the test host kernel's console log (ttyS0), for diagnostics
    seconds: float           # wall time of the whole run, from run() to QEMU's exit
    start_seconds: float | None = None   # wall time from run() until the command started inside
    command_seconds: float | None = None  # the command's own run time, measured inside (uptime)
    host_uptime_at_start: float | None = None  # the test host's /proc/uptime when the command started
    output_bytes: bytes = b""

    __test__ = False

    @property
    def ok(self) -> bool:
        return self.status == 0


def cache_dir() -> str:
    return os.environ.get("TERN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tern")


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _file_sig(paths: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


_artifacts: dict[str, str] | None = None


def guest_artifacts() -> dict[str, str]:
    """Run tools/guest/build (a no-op when up to date) and return its TERN_*=path values."""
    global _artifacts
    if _artifacts is None:
        r = subprocess.run([GUEST_BUILD, "--quiet"], capture_output=True, text=True)
        if r.returncode != 0:
            raise TestHostError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "tools/guest/build failed")
        import shlex
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            if k:
                out[k] = shlex.split(v)[0] if v else ""
        _artifacts = out
    return _artifacts


# ---- initrd pieces ------------------------------------------------------------------------

class Files:
    """Files to put into the test host, at absolute destination paths; ELF files bring the shared
    libraries (and dynamic loader) that `ldd` lists, at the same absolute paths."""

    def __init__(self):
        self.entries: dict[str, tuple[str, object]] = {}  # dest -> ("file", src) | ("data", bytes, mode) | ("link", target)

    def add(self, src: str, dest: str | None = None) -> "Files":
        """Add a file or (recursively) a directory; dest defaults to src's absolute path."""
        src_abs = os.path.abspath(src)
        if not os.path.exists(src_abs):
            raise TestHostError(f"cannot add {src}: no such file or directory")
        dest = dest or src_abs
        if not dest.startswith("/"):
            raise TestHostError(f"destination {dest!r} must be an absolute path")
        if os.path.isdir(src_abs):
            for root, dirs, files in os.walk(src_abs):
                rel = os.path.relpath(root, src_abs)
                droot = dest if rel == "." else os.path.join(dest, rel)
                for d in list(dirs):
                    p = os.path.join(root, d)
                    if os.path.islink(p):
                        self.entries.setdefault(os.path.join(droot, d), ("link", os.readlink(p)))
                        dirs.remove(d)
                self.entries.setdefault(droot, ("dir", None))
                for fn in files:
                    self._add_file(os.path.join(root, fn), os.path.join(droot, fn))
        else:
            self._add_file(src_abs, dest)
        return self

    def _add_file(self, src: str, dest: str) -> None:
        if not os.path.isfile(src):
            return  # sockets, fifos, dangling links
        self.entries[dest] = ("file", src)
        if initramfs.elf_interp(src):  # dynamically linked ELF (or a shared library with PT_INTERP)
            self._add_libs(src)
        elif initramfs.is_elf(src) and ".so" in os.path.basename(src):
            self._add_libs(src)

    def _add_libs(self, elf: str) -> None:
        try:
            libs = initramfs.shared_libraries(elf)
        except RuntimeError as e:
            raise TestHostError(str(e))
        for lib in libs:
            self.entries.setdefault(lib, ("file", lib))

    def add_data(self, dest: str, data: bytes | str, mode: int = 0o644) -> "Files":
        self.entries[dest] = ("data", data.encode() if isinstance(data, str) else data, mode)
        return self

    def add_qemu(self) -> "Files":
        """qemu-system-x86_64, its libraries and the ROMs -M microvm (and -M pc/q35) need."""
        qemu = shutil.which(QEMU)
        if not qemu:
            raise TestHostError(f"{QEMU} not found (apt-get install qemu-system-x86)")
        self._add_file(os.path.realpath(qemu), "/usr/bin/" + QEMU)
        for f in QEMU_DATA_FILES:
            if os.path.exists(f):
                self.entries.setdefault(f, ("file", f))
        return self

    def write(self, w: initramfs.CpioWriter) -> None:
        for dest in sorted(self.entries):
            e = self.entries[dest]
            if e[0] == "file":
                w.file(dest, e[1])
            elif e[0] == "data":
                w.data(dest, e[1], e[2])
            elif e[0] == "link":
                w.symlink(dest, e[1])
            elif e[0] == "dir":
                w.directory(dest)


def _cached_piece(name: str, key: str, build: Callable[[initramfs.CpioWriter], None]) -> str:
    """An uncompressed cpio archive in $CACHE/testhost/, rebuilt when `key` changes."""
    d = os.path.join(cache_dir(), "testhost")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{name}-{key}.cpio")
    if os.path.exists(path):
        return path
    with open(os.path.join(d, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path
        for old in os.listdir(d):
            if old.startswith(name + "-") and old.endswith(".cpio"):
                os.unlink(os.path.join(d, old))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            w = initramfs.CpioWriter(f)
            build(w)
            w.trailer()
        os.replace(tmp, path)
    return path


def host_initrd() -> str:
    """Base host initrd: busybox, the kvm modules (and the on-demand ones), /init (tools/testhost/init)."""
    art = guest_artifacts()
    modules_dir, kver = art["TERN_KERNEL_MODULES"], art["TERN_GUEST_KERNEL_VERSION"]
    if not os.path.exists(BUSYBOX) or initramfs.elf_interp(BUSYBOX) != "":
        raise TestHostError(f"{BUSYBOX} missing or not static (apt-get install busybox-static)")
    init = os.path.join(HERE, "init")
    with open(init, "rb") as f, open(initramfs.__file__, "rb") as g:
        key = _sha(f.read(), g.read(), kver, modules_dir, repr(HOST_MODULES), repr(HOST_ON_DEMAND_MODULES),
                   _file_sig([BUSYBOX]))

    def build(w: initramfs.CpioWriter) -> None:
        w.root_layout()
        w.chardev("/dev/console", 5, 1)
        w.chardev("/dev/null", 1, 3, 0o666)
        initramfs.add_busybox(w, BUSYBOX)
        w.file("/init", init, 0o755)
        w.data("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        w.data("/etc/group", b"root:x:0:\nkvm:x:36:\n")
        mods = initramfs.add_modules(w, modules_dir, kver, HOST_MODULES, HOST_ON_DEMAND_MODULES)
        w.data("/etc/testhost-modules", "".join(m + "\n" for m in mods).encode())

    return _cached_piece("host", key, build)


def guest_piece() -> str:
    """The guest artifacts at /guest/... (cached: they are large and the same every run)."""
    art = guest_artifacts()
    srcs = [art[k] for k in GUEST_PATHS]
    files = Files()
    for k, dest in GUEST_PATHS.items():
        files.entries[dest] = ("file", art[k])
    return _cached_piece("guest", _file_sig(srcs), files.write)


def qemu_piece() -> str:
    files = Files().add_qemu()
    srcs = [e[1] for e in files.entries.values() if e[0] == "file"]
    return _cached_piece("qemu", _file_sig(sorted(srcs)), files.write)


# ---- running ------------------------------------------------------------------------------

def _files_from(files) -> Files:
    if files is None:
        return Files()
    out = Files()
    if isinstance(files, Files):
        out.entries = dict(files.entries)  # run() adds /tern/command; keep the caller's object as is
        return out
    if isinstance(files, str):
        files = [files]
    if isinstance(files, dict):
        for src, dest in files.items():
            out.add(src, dest)
        return out
    for item in files:
        if isinstance(item, (tuple, list)):
            out.add(item[0], item[1])
        else:
            src, sep, dest = str(item).partition(":")
            out.add(src, dest if sep else None)
    return out


def run(command: str, files=None, *, qemu: bool = False, stdin: bytes | str | None = None,
        memory_mib: int = DEFAULT_MEMORY_MIB, smp: int = DEFAULT_SMP, timeout: float = DEFAULT_TIMEOUT,
        on_output: Callable[[bytes], None] | None = None, append: str = "",
        disks: Iterable[str] = (), forward: Iterable[tuple[int, int]] = ()) -> Result:
    """Run `command` (busybox sh) in a fresh test host and return its Result.

    files: Files, a list of "SRC[:DEST]" strings / (src, dest) pairs / paths, or a dict {src: dest};
           DEST defaults to SRC's absolute path. ELF files bring their shared libraries. Files
           travel in the initrd (RAM, unpacked at every boot): keep them small, use disks for images.
    disks: paths of raw disk images on this machine, attached to the test host as virtio disks
           /dev/vda, /dev/vdb, ... in order (init loads virtio_blk and waits for them before the
           command starts). Read-write: what the command writes lands in the file.
    forward: (host_port, test_host_port) TCP forwards from 127.0.0.1 on this machine into the test
        host (QEMU user networking, restricted: the test host reaches nothing outside). Inside,
        eth0 is 10.0.2.15/24 before the command starts.
    qemu: also put qemu-system-x86_64 and its ROMs inside (Files.add_qemu()).
    stdin: bytes/str fed to the command's stdin (default: /dev/null).
    on_output: called with each chunk of the command's output as it arrives (streaming).
    Raises TestHostTimeout after `timeout` seconds, TestHostError if the test host itself failed.
    """
    t0 = time.monotonic()
    if shutil.which(QEMU) is None:
        raise TestHostError(f"{QEMU} not found (apt-get install qemu-system-x86)")
    art = guest_artifacts()
    pieces = [host_initrd(), guest_piece()]
    if qemu:
        pieces.append(qemu_piece())
    payload = _files_from(files)
    disks = [os.path.abspath(d) for d in disks]
    for d in disks:
        if not os.path.isfile(d):
            raise TestHostError(f"disk image {d}: no such file")
    if disks:
        payload.add_data("/tern/disks", f"{len(disks)}\n")
    forward = list(forward)
    if forward:
        payload.add_data("/tern/net", "10.0.2.15/24\n")
    nic = ["-nic", "none"]
    if forward:
        fwds = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in forward)
        nic = ["-nic", f"user,model=virtio-net-pci,restrict=on,{fwds}"]
    payload.add_data("/tern/command", command + "\n", 0o755)
    if stdin is not None:
        payload.add_data("/tern/stdin", stdin)

    rundir = tempfile.mkdtemp(prefix="testhost-", dir=os.environ.get("TMPDIR") or "/tmp")
    proc = None
    try:
        initrd = os.path.join(rundir, "initrd")
        with open(initrd, "wb") as f:
            for p in pieces:
                with open(p, "rb") as s:
                    size = os.fstat(s.fileno()).st_size
                    done = 0
                    while done < size:
                        n = os.copy_file_range(s.fileno(), f.fileno(), size - done)
                        if n <= 0:
                            raise TestHostError(f"short copy of {p}")
                        done += n
            f.seek(0, os.SEEK_END)
            w = initramfs.CpioWriter(f)
            try:
                payload.write(w)
            except (OSError, ValueError) as e:
                raise TestHostError(f"cannot pack the files to add: {e}")
            w.trailer()
        console_log = os.path.join(rundir, "console.log")
        out_r, out_w = os.pipe()
        st_r, st_w = os.pipe()
        cmd = [
            QEMU, "-M", "pc", "-accel", HOST_ACCEL, "-cpu", HOST_CPU,
            "-m", str(memory_mib), "-smp", str(smp),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-no-reboot", *nic, *(["-bios", HOST_BIOS] if os.path.exists(HOST_BIOS) else []),
            "-kernel", art["TERN_GUEST_VMLINUZ"], "-initrd", initrd,
            *[a for d in disks for a in ("-drive", f"file={d.replace(',', ',,')},if=virtio,format=raw")],
            "-append", (HOST_APPEND + " " + append).strip(),
            "-serial", f"file:{console_log}",
            "-chardev", f"file,id=out,path=/proc/self/fd/{out_w}", "-serial", "chardev:out",
            "-chardev", f"file,id=st,path=/proc/self/fd/{st_w}", "-serial", "chardev:st",
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                pass_fds=(out_w, st_w), start_new_session=True)
        os.close(out_w)
        os.close(st_w)
        sel = selectors.DefaultSelector()
        sel.register(out_r, selectors.EVENT_READ, "out")
        sel.register(st_r, selectors.EVENT_READ, "st")
        sel.register(proc.stdout, selectors.EVENT_READ, "qemu")
        bufs = {"out": bytearray(), "st": bytearray(), "qemu": bytearray()}
        start_seconds = None
        deadline = t0 + timeout
        timed_out = frozen = False
        last_status = None  # when the last ttyS2 line arrived, once the command started
        open_fds = 3
        while open_fds:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                timed_out = True
                break
            if last_status is not None and now - last_status > HEARTBEAT_LIMIT:
                frozen = True
                break
            for key, _ in sel.select(min(left, 1.0)):
                fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    open_fds -= 1
                    continue
                bufs[key.data] += data
                if key.data == "out" and on_output:
                    on_output(data)
                if key.data == "st" and start_seconds is None and b"tern-testhost: start" in bufs["st"]:
                    start_seconds = time.monotonic() - t0
                if key.data == "st" and start_seconds is not None:
                    last_status = time.monotonic()
        if timed_out or frozen:
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        sel.close()
        os.close(out_r)
        os.close(st_r)
        proc.stdout.close()
        seconds = time.monotonic() - t0
        try:
            with open(console_log, "rb") as f:
                console = f.read().decode(errors="replace")
        except OSError:
            console = ""
        output = bytes(bufs["out"])
        result = Result(status=-1, output=output.decode(errors="replace"), console=console, seconds=seconds,
                        start_seconds=start_seconds, output_bytes=output)
        status_lines = bufs["st"].decode(errors="replace").splitlines()
        qemu_msg = bufs["qemu"].decode(errors="replace").strip()
        if timed_out:
            raise TestHostTimeout(f"test host timed out after {timeout:g} s (QEMU killed)", result)
        if frozen:
            raise TestHostFrozen(f"test host froze: no heartbeat for {HEARTBEAT_LIMIT:g} s after "
                                 f"{seconds:.0f} s (QEMU killed)", result)
        start_up = None
        for line in status_lines:
            words = line.split()
            if words[:2] == ["tern-testhost:", "error"]:
                raise TestHostError("test host: " + " ".join(words[2:]), result)
            if words[:2] == ["tern-testhost:", "start"] and len(words) > 2:
                start_up = float(words[2])
            if words[:2] == ["tern-testhost:", "status"] and len(words) > 2:
                result.status = int(words[2])
                result.host_uptime_at_start = start_up
                if len(words) > 3 and start_up is not None:
                    result.command_seconds = float(words[3]) - start_up
                return result
        if proc.returncode != 0:
            raise TestHostError(f"{QEMU} failed (exit {proc.returncode}): "
                                f"{qemu_msg.splitlines()[-1] if qemu_msg else 'no message'}", result)
        tail = [l for l in console.splitlines() if l.strip()][-3:]
        raise TestHostError("test host exited without reporting the command's status; console ends: "
                            + " | ".join(tail), result)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if os.environ.get("TERN_TESTHOST_KEEP"):
            print(f"testhost: kept {rundir}", file=sys.stderr)
        else:
            shutil.rmtree(rundir, ignore_errors=True)


# ---- Session: a test host kept running -----------------------------------------------------

SHELL_PORT = 2222  # the shell server inside a Session's test host


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Session:
    """A test host that runs for the length of a `with` block, for tests of services inside it
    (e.g. ternd behind the aws CLI): `setup` (shell) runs first, then a shell server waits for
    sh() calls; `ports` inside are forwarded to free ports on 127.0.0.1 here (port()).

        with Session(files={"build/ternd": "/bin/ternd"}, ports=[8787]) as s:
            s.sh("ternd --listen 0.0.0.0:8787 </dev/null >/tmp/ternd.log 2>&1 &")
            url = f"http://127.0.0.1:{s.port(8787)}"

    Processes that sh() leaves in the background must redirect stdin, stdout and stderr (the
    connection stays open while any of them holds it). Not thread-safe; one sh() at a time.
    close() (end of the with block) stops the test host and raises what run() raised, if anything.
    """

    def __init__(self, files=None, *, ports: Iterable[int] = (), setup: str = "",
                 memory_mib: int = DEFAULT_MEMORY_MIB, smp: int = DEFAULT_SMP,
                 disks: Iterable[str] = (), timeout: float = 1800.0, ready_timeout: float = 300.0):
        self._forward = {p: _free_port() for p in (*ports, SHELL_PORT)}
        command = "\n".join([setup, f"nc -ll -p {SHELL_PORT} -e sh </dev/null >/dev/null 2>&1 &",
                             "until [ -e /tmp/session-end ]; do sleep 0.2; done"])
        self._kwargs = dict(files=files, memory_mib=memory_mib, smp=smp, disks=disks, timeout=timeout,
                            forward=[(host, inside) for inside, host in self._forward.items()])
        self._command = command
        self._ready_timeout = ready_timeout
        self._thread: threading.Thread | None = None
        self._outcome: list = []

    def __enter__(self) -> "Session":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            if self._outcome:
                self._raise_outcome("the test host ended before its shell server answered")
            try:
                if self.sh("echo ready", timeout=10) == (0, "ready\n"):
                    return self
            except (OSError, TestHostError):
                pass
            time.sleep(0.5)
        self.close()
        raise TestHostError(f"the test host's shell server did not answer within {self._ready_timeout:g} s")

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        try:
            self._outcome.append(run(self._command, **self._kwargs))
        except BaseException as e:  # handed to the test's thread by close()
            self._outcome.append(e)

    def _raise_outcome(self, why: str) -> Result:
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome.status != 0:
            raise TestHostError(f"{why}: the session's command exited with {outcome.status}", outcome)
        return outcome

    def port(self, inside: int) -> int:
        """The port on 127.0.0.1 here that reaches `inside` in the test host."""
        return self._forward[inside]

    def sh(self, script: str, timeout: float = 120.0) -> tuple[int, str]:
        """Runs `script` (busybox sh, stderr joined to stdout) in the test host; returns its exit
        status and output. Raises TestHostError when no status came back within `timeout` s."""
        data = bytearray()
        with socket.create_connection(("127.0.0.1", self._forward[SHELL_PORT]), timeout=timeout) as sock:
            sock.sendall(f"exec 2>&1\n(\n{script}\n)\necho \"@@@ status $?\"\n".encode())
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                data += chunk
        text = data.decode(errors="replace")
        head, sep, tail = text.rpartition("@@@ status ")
        if not sep:
            raise TestHostError(f"no status from the test host's shell for {script.splitlines()[0]!r}")
        return int(tail.split()[0]), head

    def close(self) -> Result | None:
        """Stops the test host (if running) and returns run()'s Result; raises what run() raised."""
        if self._thread is None:
            return None
        if not self._outcome:
            try:
                self.sh("touch /tmp/session-end", timeout=30)
            except (OSError, TestHostError):
                pass
        self._thread.join()
        self._thread = None
        return self._raise_outcome("the test host failed")


# ---- CLI ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(
        prog="testhost",
        description="Run COMMAND (busybox sh) inside Tern's TCG test host, where /dev/kvm is nested, "
                    "hardware-assisted KVM. Streams the command's output; exits with its status "
                    f"({EXIT_TIMEOUT} on timeout, {EXIT_FAILURE} if the test host failed).",
        usage="testhost [--add SRC[:DEST]]... [--disk IMAGE]... [--qemu] [--memory MiB] [--smp N] [--timeout S] "
              "-- COMMAND...")
    ap.add_argument("--add", action="append", default=[], metavar="SRC[:DEST]",
                    help="put a file or directory inside (DEST defaults to SRC's absolute path); "
                         "ELF files bring their shared libraries")
    ap.add_argument("--disk", action="append", default=[], metavar="IMAGE",
                    help="attach a raw disk image (read-write) as /dev/vda, /dev/vdb, ... in order")
    ap.add_argument("--qemu", action="store_true", help="put qemu-system-x86_64 and its ROMs inside")
    ap.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MIB, metavar="MiB")
    ap.add_argument("--smp", type=int, default=DEFAULT_SMP, metavar="N")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S")
    ap.add_argument("--stdin", metavar="FILE", help="feed FILE ('-': this stdin) to the command's stdin")
    ap.add_argument("--append", default="", metavar="ARGS", help="extra test host kernel arguments")
    ap.add_argument("--console", action="store_true", help="print the test host's console log to stderr at the end")
    ap.add_argument("--times", action="store_true", help="print timings to stderr at the end")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no COMMAND given")
    stdin = None
    if args.stdin:
        stdin = sys.stdin.buffer.read() if args.stdin == "-" else open(args.stdin, "rb").read()

    def stream(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    result = None
    try:
        result = run(" ".join(command), args.add, qemu=args.qemu, stdin=stdin, memory_mib=args.memory,
                     smp=args.smp, timeout=args.timeout, on_output=stream, append=args.append,
                     disks=args.disk)
        code = result.status
    except TestHostError as e:
        result = e.result
        print(f"testhost: error: {e.args[0]}", file=sys.stderr)  # one line; output was streamed
        code = EXIT_TIMEOUT if isinstance(e, TestHostTimeout) else EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    if result is not None and args.console:
        sys.stderr.write(result.console)
    if result is not None and args.times:
        fmt = lambda v: "-" if v is None else f"{v:.2f} s"
        print(f"testhost: command started after {fmt(result.start_seconds)}, ran {fmt(result.command_seconds)}, "
              f"total {fmt(result.seconds)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
