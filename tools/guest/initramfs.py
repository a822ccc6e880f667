# Shared helpers for Tern's guest and test-host initramfs builders (tools/guest/build,
# tools/testhost/testhost.py): a newc cpio writer, kernel-module dependency resolution,
# ELF checks and the busybox applet layout. Standard library only.
"""Helpers to write Linux initramfs (newc cpio) archives without root or external tools."""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import subprocess

# Debian 12 is merged-/usr: /bin, /sbin, /lib, /lib64 are symlinks into /usr. Archives mirror
# that layout, and every path written is canonicalised so nothing is ever written "through" a
# symlinked directory.
MERGED_USR_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def canonical(path: str) -> str:
    """Archive name (no leading '/') for an absolute path, with /bin,/sbin,/lib,/lib64 mapped into /usr."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"'..' not allowed in archive path {path!r}")
    if parts and parts[0] in MERGED_USR_LINKS and len(parts) > 1:
        parts = MERGED_USR_LINKS[parts[0]].split("/") + parts[1:]
    return "/".join(parts)


class CpioWriter:
    """Streams a newc ("070701") cpio archive to a binary file object: a plain file opened
    "wb" or an io.BytesIO (not a gzip.GzipFile: file() copies straight to fileno()).

    Parent directories are created automatically. Every entry gets its own inode number and
    nlink 1, so the kernel's unpacker never mistakes two files for hard links.
    """

    def __init__(self, fileobj, merged_usr: bool = True):
        self.f = fileobj
        self.ino = 0x1000
        self.pos = 0
        self.dirs: set[str] = set()
        self.merged_usr = merged_usr

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.pos += len(data)

    def _pad(self) -> None:
        if self.pos % 4:
            self._write(b"\0" * (4 - self.pos % 4))

    def _header(self, name: str, mode: int, size: int, mtime: int = 0, rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        nameb = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, mtime, size, 0, 0, rdev[0], rdev[1], len(nameb), 0)
        self._write(b"070701" + b"".join(b"%08X" % v for v in fields) + nameb)
        self._pad()

    def _name(self, path: str) -> str:
        name = canonical(path) if self.merged_usr else path.strip("/")
        if not name:
            raise ValueError(f"empty archive path {path!r}")
        self._parents(name)
        return name

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self._header(d, stat.S_IFDIR | 0o755, 0)

    def root_layout(self) -> None:
        """The merged-/usr top-level symlinks (/bin -> usr/bin, ...) plus the usual empty dirs."""
        for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "dev", "proc", "sys", "tmp", "root", "etc", "run", "mnt"):
            self.directory("/" + d, 0o1777 if d == "tmp" else 0o755)
        for link, target in MERGED_USR_LINKS.items():
            self._header(link, stat.S_IFLNK | 0o777, len(target))
            self._write(target.encode())
            self._pad()

    def directory(self, path: str, mode: int = 0o755) -> None:
        name = self._name(path)
        if name in self.dirs:
            return
        self.dirs.add(name)
        self._header(name, stat.S_IFDIR | mode, 0)

    def data(self, path: str, content: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        name = self._name(path)
        self._header(name, stat.S_IFREG | mode, len(content), mtime)
        self._write(content)
        self._pad()

    def file(self, path: str, src: str, mode: int | None = None) -> None:
        """Copy the host file src (symlinks followed) to path in the archive."""
        name = self._name(path)
        with open(src, "rb") as s:
            st = os.fstat(s.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{src}: not a regular file")
            self._header(name, stat.S_IFREG | (stat.S_IMODE(st.st_mode) if mode is None else mode), st.st_size, int(st.st_mtime))
            copied = 0
            try:
                out_fd = self.f.fileno()
            except (AttributeError, OSError):
                out_fd = None
            if out_fd is not None:
                self.f.flush()
                try:  # in-kernel copy where possible
                    while copied < st.st_size:
                        n = os.copy_file_range(s.fileno(), out_fd, st.st_size - copied)
                        if n == 0:
                            break
                        copied += n
                except OSError:
                    pass
                self.f.seek(0, os.SEEK_END)
            if copied < st.st_size:
                s.seek(copied)
                shutil.copyfileobj(s, self.f, 1 << 20)
            self.pos += st.st_size
        self._pad()

    def symlink(self, path: str, target: str) -> None:
        name = self._name(path)
        self._header(name, stat.S_IFLNK | 0o777, len(target.encode()))
        self._write(target.encode())
        self._pad()

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = self._name(path)
        self._header(name, stat.S_IFCHR | mode, 0, rdev=(major, minor))

    def trailer(self, align: int = 512) -> None:
        """End of archive, zero-padded to `align` so another archive can be concatenated after it."""
        self._header("TRAILER!!!", 0, 0)
        if self.pos % align:
            self._write(b"\0" * (align - self.pos % align))


def busybox_applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    return [a for a in out.split() if a and "/" not in a and a != "busybox"]


def add_busybox(w: CpioWriter, busybox: str) -> None:
    """busybox at /usr/bin/busybox plus a symlink per applet in /usr/bin."""
    w.file("/usr/bin/busybox", busybox, 0o755)
    for a in busybox_applets(busybox):
        w.symlink("/usr/bin/" + a, "busybox")


def elf_interp(path: str) -> str | None:
    """PT_INTERP of a 64-bit ELF file, '' for a static ELF, None if not ELF."""
    try:
        with open(path, "rb") as f:
            h = f.read(64)
            if h[:4] != b"\x7fELF" or len(h) < 64 or h[4] != 2:
                return None
            phoff, = struct.unpack_from("<Q", h, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", h, 0x36)
            f.seek(phoff)
            ph = f.read(phentsize * phnum)
            for i in range(phnum):
                p_type, = struct.unpack_from("<I", ph, i * phentsize)
                if p_type == 3:  # PT_INTERP
                    off, = struct.unpack_from("<Q", ph, i * phentsize + 8)
                    sz, = struct.unpack_from("<Q", ph, i * phentsize + 32)
                    f.seek(off)
                    return f.read(sz).rstrip(b"\0").decode()
            return ""
    except OSError:
        return None


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


_LDD_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)")
_LDD_PLAIN = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)")


def shared_libraries(path: str) -> list[str]:
    """Absolute paths of the shared libraries (and dynamic loader) `ldd` lists for an ELF file."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    libs = []
    for line in r.stdout.splitlines():
        if "not found" in line:
            raise RuntimeError(f"ldd {path}: {line.strip()}")
        m = _LDD_ARROW.match(line) or _LDD_PLAIN.match(line)
        if m:
            lib = m.group(m.lastindex)
            if lib.startswith("/"):
                libs.append(lib)
    return libs


# ---- kernel modules ----------------------------------------------------------------------

def module_index(modules_dir: str) -> dict[str, str]:
    """Module name (with '-' normalised to '_') -> path of its .ko under lib/modules/<kver>."""
    idx = {}
    for root, _dirs, files in os.walk(modules_dir):
        for fn in files:
            if fn.endswith(".ko"):
                idx[fn[:-3].replace("-", "_")] = os.path.join(root, fn)
    return idx


def module_depends(ko: str) -> list[str]:
    """The `depends=` field of a module's .modinfo (what `strings X.ko | grep ^depends=` prints)."""
    with open(ko, "rb") as f:
        data = f.read()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if not m:
        return []
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d]


def resolve_modules(modules_dir: str, names: list[str], idx: dict[str, str] | None = None) -> list[str]:
    """Paths of the named modules and all their dependencies, in load order (dependencies first).
    idx: module_index(modules_dir), when the caller already has it."""
    if idx is None:
        idx = module_index(modules_dir) if names else {}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name not in idx:
            raise RuntimeError(f"kernel module {name!r} not found under {modules_dir}")
        path = idx[name]
        if path in order or name in visiting:
            return
        visiting.add(name)
        for dep in module_depends(path):
            visit(dep)
        order.append(path)

    for n in names:
        visit(n)
    return order


def add_modules(w: CpioWriter, modules_dir: str, kver: str, load: list[str], extra: list[str] = ()) -> list[str]:
    """Pack the modules `load` and `extra` (with their dependencies) under /lib/modules/<kver>/,
    plus a modules.dep so busybox `modprobe NAME` can load any of them later. Returns the archive
    paths of `load` and its dependencies in load order (for an init script's insmod loop)."""
    idx = module_index(modules_dir)
    name_of = lambda ko: os.path.basename(ko)[:-3]
    packed = sorted(set(resolve_modules(modules_dir, list(load) + list(extra), idx)))
    rel = lambda ko: os.path.relpath(ko, modules_dir)
    dep = []
    for ko in packed:
        w.file(f"/lib/modules/{kver}/{rel(ko)}", ko, 0o644)
        # depmod's format: every dependency, transitively, the one to load last first.
        deps = resolve_modules(modules_dir, [name_of(ko)], idx)[:-1]
        dep.append((f"{rel(ko)}: " + " ".join(rel(d) for d in reversed(deps))).rstrip() + "\n")
    w.data(f"/lib/modules/{kver}/modules.dep", "".join(dep).encode())
    return [f"/lib/modules/{kver}/{rel(ko)}" for ko in resolve_modules(modules_dir, list(load), idx)]
