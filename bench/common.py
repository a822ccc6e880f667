# What bench/blk/run and bench/net/run share: the tools disk, a small raw ext4 image with
# Debian 12's fio and iperf3 and every shared library they load, attached to the test host (and
# from there handed read-only to the nested guest) so that the same binaries run in the test
# host and in the guest. Built from Debian packages (apt-get download + dpkg-deb -x) and cached
# in ${TERN_CACHE:-~/.cache/tern}/bench/. Also the test-host shell that runs a VMM and samples its
# memory, the guest script encoding, and the wait for a machine without another test host.
"""Shared pieces of the I/O benchmarks: the tools disk (fio + iperf3 with their shared
libraries), VMM_FUNCTIONS (test-host shell), guest_command(), wait_for_idle_machine().

    import common
    image = common.build()       # path of the cached raw ext4 image
    # inside (test host or guest): mount -o ro,noload /dev/vdX /t; /t/fio ...; /t/iperf3 ...

Why a disk and not an initramfs: Debian's fio links librbd, librados, libgfapi, libnbd and
friends directly (64 libraries, 84 MB with libicudata); on a disk only the pages the dynamic
loader touches are read, while an initramfs would copy all of it into RAM at every boot.
The image holds bin/{fio,iperf3}, lib/ (every library, flat, by soname, and the dynamic loader)
and two wrapper scripts /fio and /iperf3 that run the binaries through lib/ld-linux-x86-64.so.2
--library-path lib, so neither the guest (static busybox) nor the test host needs them installed.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

TOOLS = ["fio", "iperf3"]
LOADER = "ld-linux-x86-64.so.2"
WRAPPER = """#!/bin/sh
d=${0%/*}
exec "$d/lib/ld-linux-x86-64.so.2" --library-path "$d/lib" "$d/bin/NAME" "$@"
"""


def _cache() -> str:
    base = os.environ.get("TERN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tern")
    return os.path.join(base, "bench")


def _run(cmd: list[str], cwd: str | None = None, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench: `{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return r.stdout


def _installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                       text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def _packages() -> list[str]:
    """TOOLS plus the library packages they need that this machine does not have installed."""
    wanted, todo = [], list(TOOLS)
    while todo:
        package = todo.pop()
        if package in wanted:
            continue
        wanted.append(package)
        out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                    "--no-breaks", "--no-replaces", "--no-enhances", package])
        for m in re.finditer(r"^\s+\|?(?:Pre)?Depends: (lib[^\s<>]+)$", out, re.M):
            if not _installed(m.group(1)):
                todo.append(m.group(1))
    return wanted


def _key() -> str:
    h = hashlib.sha256()
    with open(os.path.realpath(__file__), "rb") as f:
        h.update(f.read())
    for tool in TOOLS:
        h.update(_run(["apt-cache", "policy", tool]).encode())
    return h.hexdigest()[:16]


def _libraries(binary: str, library_path: str) -> dict[str, str]:
    """soname -> path of every library `ldd` resolves for `binary` (the loader included)."""
    env = dict(os.environ, LD_LIBRARY_PATH=library_path)
    libs = {}
    for line in _run(["ldd", binary], env=env).splitlines():
        if "not found" in line:
            sys.exit(f"bench: ldd {binary}: {line.strip()}")
        m = re.match(r"^\s*(\S+) => (/\S+) \(0x", line) or re.match(r"^\s*(/\S+) \(0x", line)
        if m:
            libs[os.path.basename(m.group(1))] = m.group(m.lastindex)
    return libs


def build() -> str:
    """Returns the path of the tools image, building it first if it is missing or stale."""
    cache = _cache()
    image = os.path.join(cache, f"tools-{_key()}.img")
    if os.path.exists(image):
        return image
    os.makedirs(cache, exist_ok=True)
    print("bench: building the tools disk (fio, iperf3) from Debian packages", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tools-", dir=cache) as work:
        os.chmod(work, 0o777)  # apt-get download runs as the _apt user when it can
        _run(["apt-get", "download", "-q", *_packages()], cwd=work)
        unpacked = os.path.join(work, "x")
        for deb in glob.glob(os.path.join(work, "*.deb")):
            _run(["dpkg-deb", "-x", deb, unpacked])
        library_path = ":".join(
            os.path.join(unpacked, d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu",
                                                "usr/lib/x86_64-linux-gnu/ceph"))
        tree = os.path.join(work, "tree")
        os.makedirs(os.path.join(tree, "bin"))
        os.makedirs(os.path.join(tree, "lib"))
        for tool in TOOLS:
            binary = os.path.join(unpacked, "usr", "bin", tool)
            shutil.copy(binary, os.path.join(tree, "bin", tool))
            for soname, path in _libraries(binary, library_path).items():
                shutil.copy(path, os.path.join(tree, "lib", soname))
            with open(os.path.join(tree, tool), "w") as f:
                f.write(WRAPPER.replace("NAME", tool))
            os.chmod(os.path.join(tree, tool), 0o755)
        if not os.path.exists(os.path.join(tree, "lib", LOADER)):
            sys.exit(f"bench: ldd listed no {LOADER}")
        size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(tree, "*", "*")))
        tmp = image + ".tmp"
        _run(["mkfs.ext4", "-q", "-F", "-L", "terntools", "-d", tree, tmp,
              f"{size * 5 // 4 // 2**20 + 16}M"])
        for old in glob.glob(os.path.join(cache, "tools-*.img")):
            os.unlink(old)
        os.replace(tmp, image)
    return image


def guest_command(script: str) -> str:
    """The guest command (after ` -- `) running `script`, base64-encoded so that it stays one
    kernel command line word (Linux refuses more than 32 init arguments)."""
    return f'eval "$(echo {base64.b64encode(script.encode()).decode()}|base64 -d)"'


# Test-host shell (needs MEM=guest MiB): `vmm NAME COMMAND...` runs a VMM in the background with
# its console in /tmp/NAME.out, samples its memory when the guest prints "bench: ready" and
# "bench: done", then prints the guest's `result ...` lines as `result NAME ...` (or the console
# tail if there are none). Memory lines: `rss NAME before|after guest_kb=N vmm_kb=N`, from smaps:
# mappings at least as large as guest RAM count as guest RAM, the rest as the VMM's own. Then
# `cpu NAME TICKS THREAD` per thread (utime + stime in clock ticks, io_uring io-wq workers
# included: they are threads of the process), to see where the VMM spends its time.
VMM_FUNCTIONS = r"""
rss(){ awk -v g=$((MEM*1024)) -v who="$1 $2" '
  /^[0-9a-f]+-[0-9a-f]+ / { size = 0 }
  /^Size:/ { size = $2 }
  /^Rss:/ { if (size >= g) guest += $2; else other += $2 }
  END { printf "rss %s guest_kb=%d vmm_kb=%d\n", who, guest, other }' /proc/$3/smaps; }
cpu(){ for t in /proc/$2/task/*; do
  echo "cpu $1 $(sed 's/.*) //' $t/stat | awk '{print $12 + $13}') $(tr ' ' _ <$t/comm)"; done; }
waitfor(){ i=0; until grep -qs "$1" $2 || ! kill -0 $3 2>/dev/null || [ $i -ge 3000 ]; do
  sleep 0.2; i=$((i+1)); done; grep -q "$1" $2; }
vmm(){ name=$1; shift; "$@" </dev/null >/tmp/$name.out 2>&1 & pid=$!
  waitfor 'bench: ready' /tmp/$name.out $pid && rss $name before $pid &&
    echo "at $(cut -d' ' -f1 /proc/uptime) s: $name guest ready"
  waitfor 'bench: done' /tmp/$name.out $pid && rss $name after $pid && cpu $name $pid
  wait $pid; st=$?; tr -d '\r' </tmp/$name.out | sed -n "s/^result /result $name /p"
  tr -d '\r' </tmp/$name.out | grep -q '^result' ||
    { echo "$name failed ($st):"; tail -20 /tmp/$name.out; }; }
"""


def wait_for_idle_machine() -> None:
    """Waits (up to 15 min) while another QEMU (someone's test host) shares the 2 cores."""
    for _ in range(180):
        r = subprocess.run(["pgrep", "-c", "qemu-system"], capture_output=True, text=True)
        if r.stdout.strip() in ("", "0"):
            return
        time.sleep(5)
    print("bench: another qemu-system is running; numbers will be noisy", file=sys.stderr)


if __name__ == "__main__":
    print(build())
