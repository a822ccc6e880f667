# System tests of Tern's test host (tools/testhost) and guest artifacts (tools/guest/build):
# command output/status/stdin round trip, KVM inside, file and shared-library payloads, the CLI,
# timeouts, freezes, and Session (port forwards and a shell into a running test host).
# QEMU booting the guest artifacts in the test host is checked in test_guest_plumbing.py.
# Run: /usr/bin/python3 -m pytest tests/system/test_testhost.py   (takes a few minutes)
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(REPO, "tools", "testhost", "testhost")
BUILD = os.path.join(REPO, "tools", "guest", "build")

def kernel_version(art):
    with open(art["TERN_GUEST_KERNEL_VERSION_FILE"]) as f:
        return f.read().strip()


# ---- guest artifacts ----------------------------------------------------------------------

def test_guest_artifacts(guest_artifacts):
    art = guest_artifacts
    kver = kernel_version(art)
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-cloud-amd64", kver), kver
    assert kver == art["TERN_GUEST_KERNEL_VERSION"]
    with open(art["TERN_GUEST_VMLINUX"], "rb") as f:
        assert f.read(4) == b"\x7fELF"
    with open(art["TERN_GUEST_VMLINUZ"], "rb") as f:
        assert f.read(0x210)[0x202:0x206] == b"HdrS"
    cpio = gzip.decompress(open(art["TERN_GUEST_INITRAMFS"], "rb").read())
    assert b"tern-guest: init" in cpio and b"usr/bin/busybox" in cpio
    assert os.path.exists(os.path.join(art["TERN_KERNEL_MODULES"], "kernel", "arch", "x86", "kvm", "kvm-amd.ko"))


def test_guest_build_is_fast_when_up_to_date(guest_artifacts):
    t = time.monotonic()
    r = subprocess.run([BUILD], capture_output=True, text=True)
    elapsed = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert f"TERN_GUEST_VMLINUX={guest_artifacts['TERN_GUEST_VMLINUX']}" in r.stdout
    assert elapsed < 1.0, f"up-to-date build took {elapsed:.2f} s"


# ---- test host basics ---------------------------------------------------------------------

def test_output_and_status(th):
    r = th.run("echo hello; echo to-stderr >&2; exit 3", timeout=300)
    assert r.status == 3
    # stdout+stderr only: no kernel console messages, no CR/LF translation
    assert r.output == "hello\nto-stderr\n"
    assert "testhost-init:" in r.console  # the test host's own log went to the console instead
    assert r.start_seconds is not None and 0 < r.start_seconds < r.seconds


def _compile(tmp_path, name, flags):
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    src = tmp_path / f"{name}.c"
    src.write_text('#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n'
                   'int main(int argc, char **argv) {\n'
                   '  char *p = malloc(16); strcpy(p, "dyn-ok");\n'
                   '  printf("%s argc=%d\\n", p, argc); free(p); return 42;\n}\n')
    exe = tmp_path / name
    r = subprocess.run([cc, "-O1", *flags, "-o", str(exe), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build with {flags}: {r.stderr.strip()[-200:]}")
    return exe


# One test-host boot checks several things (each boot costs ~15 s of CI); every check prints its
# section after a "== name" line, and each test below asserts on its own section.
@pytest.fixture(scope="module")
def sections(th, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("testhost")
    blob = tmp / "blob.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    blob.write_bytes(data)
    tree = tmp / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("alpha\n")
    exe = _compile(tmp, "dyn", [])
    asan = _compile(tmp, "dyn-asan", ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"])
    assert "libasan" in subprocess.run(["ldd", str(asan)], capture_output=True, text=True).stdout
    checks = {
        "kvm": "test -c /dev/kvm && echo kvm-ok; grep -c -w svm /proc/cpuinfo; "
               "cat /sys/module/kvm_amd/parameters/nested; cat /guest/kernel-version; uname -r",
        "stdin": "tr a-z A-Z",
        "files": f"sha256sum {blob} /data/blob.bin; cat /opt/tree/sub/a.txt",
        "dynamic": f"{exe} a b; echo status=$?; /bin/asan-test x; echo status=$?",
        # Last: nothing may be lost when the test host powers off right after the command.
        "large": "seq 1 20000; echo last-line",
    }
    command = "\n".join(f"echo '== {name}'\n{script}" for name, script in checks.items())
    r = th.run(command, stdin=b"some input\nline two\n", timeout=300,
               files=[str(blob), f"{blob}:/data/blob.bin", f"{tree}:/opt/tree", str(exe),
                      f"{asan}:/bin/asan-test"])
    assert r.status == 0, r.output
    parts = re.split(r"^== (\w+)\n", r.output, flags=re.M)
    assert parts[0] == "", r.output
    return {"digest": hashlib.sha256(data).hexdigest(), "blob": str(blob), "exe": str(exe),
            **dict(zip(parts[1::2], parts[2::2]))}


def test_kvm_and_svm_inside(sections):
    lines = sections["kvm"].split()
    assert lines[0] == "kvm-ok", sections["kvm"]
    assert int(lines[1]) > 0
    assert lines[2] in ("1", "Y")
    assert lines[3] == lines[4]  # the test host runs the same cloud kernel as the guest


def test_stdin(sections):
    assert sections["stdin"] == "SOME INPUT\nLINE TWO\n"


def test_large_output_is_complete(sections):
    expected = "".join(f"{i}\n" for i in range(1, 20001)) + "last-line\n"
    assert sections["large"] == expected


def test_added_files_identical(sections):
    digest = sections["digest"]
    assert sections["files"].splitlines() == [f"{digest}  {sections['blob']}",
                                              f"{digest}  /data/blob.bin", "alpha"]


def test_dynamic_binary_runs_inside(sections):
    assert sections["dynamic"].splitlines() == ["dyn-ok argc=3", "status=42", "dyn-ok argc=2",
                                                "status=42"]


def test_cli(th, tmp_path):
    f = tmp_path / "note.txt"
    f.write_text("from the dev machine\n")
    r = subprocess.run([CLI, "--add", f"{f}:/note.txt", "--memory", "1024", "--smp", "1", "--",
                        "cat /note.txt; nproc; echo oops >&2; exit 7"], capture_output=True, text=True, timeout=400)
    assert r.returncode == 7, r.stderr
    assert r.stdout == "from the dev machine\n1\noops\n"


def test_timeout(th):
    t = time.monotonic()
    with pytest.raises(th.TestHostTimeout) as e:
        th.run("echo started; sleep 600", timeout=20)
    assert time.monotonic() - t < 35
    assert e.value.result.output == "started\n"


def test_a_silent_test_host_counts_as_frozen(th, monkeypatch):
    # Stopping init's heartbeat looks, from outside, like a frozen machine.
    monkeypatch.setattr(th, "HEARTBEAT_LIMIT", 15.0)
    t = time.monotonic()
    with pytest.raises(th.TestHostFrozen) as e:
        th.run("kill -STOP $(cat /run/testhost-heartbeat.pid); echo stopped; sleep 600", timeout=300)
    assert time.monotonic() - t < 120
    assert e.value.result.output == "stopped\n"
    assert "no heartbeat for 15 s" in str(e.value)


def test_cli_failure_is_one_clear_line(th):
    r = subprocess.run([CLI, "--add", "/nonexistent/file", "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 125
    assert r.stderr.strip() == "testhost: error: cannot add /nonexistent/file: no such file or directory"


# ---- Session: a running test host, forwarded ports and a shell ---------------------------------

def test_session_forwards_ports_and_runs_commands(th):
    with th.Session(ports=[8080], memory_mib=1024) as s:
        status, out = s.sh("mkdir -p /tmp/www && echo hello-from-inside >/tmp/www/index.html && "
                           "busybox httpd -p 8080 -h /tmp/www </dev/null >/dev/null 2>&1; "
                           "echo started; ls /nope")
        assert status == 1 and out.startswith("started\n") and "/nope" in out
        url = f"http://127.0.0.1:{s.port(8080)}/index.html"
        assert urllib.request.urlopen(url, timeout=60).read() == b"hello-from-inside\n"
        assert s.sh("exit 5") == (5, "")
    assert s.close() is None  # already closed by the with block
