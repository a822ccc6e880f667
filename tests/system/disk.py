# Disk images for Tern's system tests: small raw ext4 images made on the development machine
# (mkfs.ext4 -d, no root or mounts needed) and the Debian 12 image of tools/image/build, to attach
# to the test host with testhost.run(..., disks=[...]) (there /dev/vda, /dev/vdb, ... in order).
"""Disk image helpers for the system tests.

    from disk import make_ext4, debian_image, image_cmdline
    img = make_ext4(tmp_path / "data.img", {"hello.txt": b"hi\\n"}, size_mib=64)
    testhost.run("mount /dev/vda /mnt && cat /mnt/hello.txt", disks=[img])

    image = debian_image(tmp_path)     # kernel, initrd, a private copy of the root image
    # inside the test host the root image is the block device /dev/vda: give that to the VMM
    testhost.run(f"tern-vmm --kernel /img/vmlinuz --initrd /img/initrd.img <disk option> /dev/vda "
                 f"--cmdline {shlex.quote(image_cmdline('uname -r'))}",
                 files={image.kernel: "/img/vmlinuz", image.initrd: "/img/initrd.img"},
                 disks=[image.rootfs])
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
IMAGE_BUILD = os.path.join(REPO, "tools", "image", "build")
BUSYBOX_AMI_BUILD = os.path.join(REPO, "tools", "image", "busybox-ami")


def make_ext4(path, files: dict[str, bytes | str], size_mib: int = 64) -> str:
    """Write a raw ext4 image of `size_mib` MiB (sparse) at `path` holding `files`
    ({relative path: content bytes, or str naming a file on this machine to copy}). Returns the
    path as a str. Raises subprocess.CalledProcessError if mkfs.ext4 fails (e.g. too small)."""
    path = os.fspath(path)
    with tempfile.TemporaryDirectory(prefix="tern-ext4-") as root:
        for rel, content in files.items():
            dest = os.path.join(root, rel.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if isinstance(content, bytes):
                with open(dest, "wb") as f:
                    f.write(content)
            else:
                shutil.copyfile(content, dest)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, path, f"{size_mib}M"], check=True,
                       capture_output=True)
    return path


@dataclasses.dataclass
class Image:
    kernel: str          # bzImage (the same cloud kernel as the busybox test guest)
    initrd: str          # initramfs-tools initrd with the virtio drivers
    rootfs: str          # raw ext4 root file system (root=/dev/vda)
    kernel_version: str


def debian_image(workdir=None) -> Image:
    """Build (cached; minutes the first time, needs root) the Debian 12 image and return its
    paths. With `workdir`, rootfs is a private sparse copy there (a boot writes to its root file
    system: keep the cached one pristine); without, the cached image itself."""
    r = subprocess.run([IMAGE_BUILD, "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("tools/image/build failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    out = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition("=")
        out[key] = shlex.split(value)[0] if value else ""
    rootfs = out["TERN_IMAGE_ROOTFS"]
    if workdir is not None:
        copy = os.path.join(os.fspath(workdir), "rootfs.raw")
        subprocess.run(["cp", "--sparse=always", rootfs, copy], check=True)
        rootfs = copy
    return Image(out["TERN_IMAGE_KERNEL"], out["TERN_IMAGE_INITRD"], rootfs, out["TERN_IMAGE_KERNEL_VERSION"])


def busybox_ami() -> dict[str, str]:
    """The TERN_BUSYBOX_AMI_* paths of tools/image/busybox-ami (built if out of date: ~0.5 s):
    KERNEL, INITRD, ROOTFS (the cached image: copy it before booting it), CMDLINE."""
    r = subprocess.run([BUSYBOX_AMI_BUILD, "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("tools/image/busybox-ami failed: " +
                           (r.stderr.strip().splitlines() or ["?"])[-1])
    return {key: shlex.split(value)[0] for key, _, value in
            (line.partition("=") for line in r.stdout.splitlines()) if value}


# The Debian image's checks (test_debian_image, test_ternd): each output line carries DEBIAN_OUT,
# since systemd's status messages share the console and may land on the same line (its
# ephemeral "A start job is running" lines end without a newline).
DEBIAN_OUT = "debian-out: "


def debian_checks(ping_host: str | None = None, hwrng: bool = False) -> str:
    """Shell for tern.cmd printing, prefixed: multi-user.target's state, the kernel version, the
    root file system's source and type, "ping-ok" (with `ping_host`), the bytes read from
    /dev/hwrng (with `hwrng`) and a "failed: UNIT" line per failed unit."""
    checks = ["systemctl is-active multi-user.target", "uname -r", "findmnt -n -o SOURCE,FSTYPE /"]
    if ping_host:
        checks.append(f"ping -c 1 -W 10 {ping_host} >/dev/null && echo ping-ok")
    if hwrng:
        checks.append("head -c 16 /dev/hwrng | wc -c")
    checks.append("systemctl --failed --no-legend --plain | sed 's/^/failed: /'")
    return "{\n" + "\n".join(checks) + f"\n}} 2>&1 | sed 's/^/{DEBIAN_OUT}/'"


def debian_lines(out: str) -> list[str]:
    """The lines debian_checks printed, wherever they sit on the console's lines."""
    return [line.strip() for line in re.findall(re.escape(DEBIAN_OUT) + r"([^\r\n\x1b]*)", out)]


def check_debian_lines(out: str, kernel_version: str) -> list[str]:
    """Asserts what every debian_checks run must print (multi-user active, the image's kernel,
    root on /dev/vda as ext4, no failed unit); returns the lines."""
    lines = debian_lines(out)
    seen = f"guest printed {lines}; console tail:\n{out[-3000:]}"
    assert "active" in lines, seen
    assert kernel_version in lines, seen
    assert ["/dev/vda", "ext4"] in [line.split() for line in lines], seen
    assert not [line for line in lines if line.startswith("failed: ")], seen
    return lines


def image_cmdline(command: str | None = None, ip: str | None = None, extra: str = "") -> str:
    """Kernel command line for the Debian image: root on /dev/vda, console on ttyS0; `command`
    (shell) runs once the system is up (tern-command.service prints "tern-command: start", its
    output, "tern-command: exit N", then powers off); `ip` e.g. network.kernel_ip_arg()."""
    parts = ["root=/dev/vda", "console=ttyS0", "quiet", "panic=-1"]
    if ip:
        parts.append(ip)
    if command is not None:
        parts.append("tern.cmd=" + base64.b64encode(command.encode()).decode())
    if extra:
        parts.append(extra)
    return " ".join(parts)
