# System tests of the plumbing Tern's virtio device tests stand on, checked with QEMU itself so a
# failure points at the plumbing, not at Tern: test-host disks (testhost.run(disks=...)), the
# br0/tap0 network snippet (network.py), QEMU microvm booting the guest artifacts under the
# nested KVM, the virtio modules in the busybox test guest, and the
# Debian 12 image (tools/image/build; slow, only with TERN_TEST_IMAGE=1).
# Run: /usr/bin/python3 -m pytest tests/system/test_guest_plumbing.py   (~100 s; the image test
# +1-4 min, plus ~3 min the first time tools/image/build runs)
import hashlib
import os

import pytest

import network
from disk import debian_image, image_cmdline, make_ext4

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()

# The nested QEMU's virtio devices on PCI (q35), the network on the test host's tap0.
QEMU_Q35 = ("timeout 400 qemu-system-x86_64 -M q35 -enable-kvm -cpu host -m {mem} -nographic -no-reboot "
            "-nodefaults -serial stdio -kernel {kernel} -initrd {initrd} "
            "-drive file=/dev/vda,if=virtio,format=raw "
            f"-netdev tap,id=n0,ifname={network.TAP},script=no,downscript=no "
            "-device virtio-net-pci,netdev=n0,romfile= -device virtio-rng-pci "
            "-device virtio-serial-pci -chardev file,id=hvc,path=/tmp/hvc.out "
            "-device virtconsole,chardev=hvc -append {append}")


def test_disk_and_network_setup_in_test_host(th, tmp_path):
    img = make_ext4(tmp_path / "d.img", {"dir/payload": PAYLOAD}, size_mib=16)
    script = "\n".join([
        "mount -t ext4 /dev/vda /mnt && " + network.sha256_of("/mnt/dir/payload"),
        "echo written-by-test-host >/mnt/new && umount /mnt",
        network.SETUP,
        "ip -o addr show dev br0; ls /sys/class/net/br0/brif; test -c /dev/net/tun && echo tun-ok",
        network.receive(5000, "/tmp/got", 60),
        "sleep 0.5; " + network.send(network.HOST_IP, 5000, "/dev/vda") + "; wait",
        "cmp /tmp/got /dev/vda && echo transfer-ok",
    ])
    r = th.run(script, disks=[img], timeout=300)
    assert r.status == 0, r.output + r.console
    lines = r.output.splitlines()
    assert lines[0] == PAYLOAD_SHA
    assert f"inet {network.HOST_IP}/{network.PREFIX_LEN}" in r.output
    assert network.TAP in lines and "tun-ok" in lines and "transfer-ok" in lines
    with open(img, "rb") as f:  # the test host wrote into the image file
        assert b"written-by-test-host" in f.read()


def test_busybox_guest_sees_virtio_devices(th, tmp_path):
    # A script on the disk: more than 32 words after " -- " would panic the guest kernel.
    guest = "\n".join([
        "ls /dev/vda /dev/hwrng /dev/hvc0",
        network.sha256_of("/mnt/payload"),
        "head -c 64 /dev/hwrng | wc -c",
        "echo hvc-hello >/dev/hvc0",
        network.guest_static_ip("eth0") + f" && ping -c 1 -W 5 {network.HOST_IP} >/dev/null && echo ping-ok",
        network.send(network.HOST_IP, 5000, "/mnt/payload", 60) + " && echo sent",
    ])
    img = make_ext4(tmp_path / "g.img", {"payload": PAYLOAD, "test.sh": guest.encode()}, size_mib=16)
    qemu = QEMU_Q35.format(mem=256, kernel="/guest/vmlinuz", initrd="/guest/initramfs.cpio.gz",
                           append="'console=ttyS0 quiet panic=-1 -- mount -t ext4 /dev/vda /mnt && sh /mnt/test.sh'")
    script = "\n".join([network.SETUP, network.receive(5000, "/tmp/got", 300), qemu, "wait",
                        "echo host-got $(" + network.sha256_of("/tmp/got") + ")", "echo hvc: $(cat /tmp/hvc.out)"])
    r = th.run(script, qemu=True, disks=[img], timeout=600)
    assert r.status == 0, r.output + r.console
    out = r.output.replace("\r", "")
    for expected in ("/dev/vda", "/dev/hwrng", "/dev/hvc0", PAYLOAD_SHA, "\n64\n", "ping-ok", "sent",
                     f"host-got {PAYLOAD_SHA}", "hvc: hvc-hello", "tern-guest: exit 0"):
        assert expected in out, out


@pytest.mark.skipif(not os.environ.get("TERN_TEST_IMAGE"),
                    reason="boots the Debian image (minutes); set TERN_TEST_IMAGE=1")
def test_debian_image_boots_with_qemu(th, tmp_path):
    image = debian_image(tmp_path)
    guest = (f"until ip -4 addr | grep -q {network.GUEST_IP}; do sleep 0.2; done; uname -r; "
             f"ping -c 1 -W 5 {network.HOST_IP} >/dev/null && echo ping-ok; head -c 16 /dev/hwrng | wc -c; "
             f"timeout 60 nc -N {network.HOST_IP} 5000 </etc/os-release && echo sent")
    qemu = QEMU_Q35.format(mem=1024, kernel="/img/vmlinuz", initrd="/img/initrd.img",
                           append=f"'{image_cmdline(guest, ip=network.kernel_ip_arg())}'")
    script = "\n".join([network.SETUP, network.receive(5000, "/tmp/got", 500), qemu, "wait",
                        "grep -q bookworm /tmp/got && echo host-got-os-release"])
    r = th.run(script, files={image.kernel: "/img/vmlinuz", image.initrd: "/img/initrd.img"}, qemu=True,
               disks=[image.rootfs], timeout=700)
    assert r.status == 0, r.output + r.console
    out = r.output.replace("\r", "")
    assert "tern-command: start" in out and "tern-command: exit 0" in out, out
    for expected in (image.kernel_version, "ping-ok", "\n16\n", "sent", "host-got-os-release"):
        assert expected in out, out


MICROVM = ("qemu-system-x86_64 -M microvm -enable-kvm -cpu host -m 256 -smp 1 -nographic -no-reboot "
           "-kernel /guest/vmlinuz -initrd /guest/initramfs.cpio.gz")


# ---- QEMU microvm under the nested KVM ------------------------------------------------------

def test_qemu_microvm_boots_guest(th, guest_artifacts):
    kver = guest_artifacts["TERN_GUEST_KERNEL_VERSION"]
    cmd = (f'{MICROVM} -append "console=ttyS0 reboot=t panic=-1 -- uname -r"; echo "qemu-exit=$?"; '
           f'{MICROVM} -append "console=ttyS0 quiet reboot=t panic=-1 -- echo \\"a  b\\"; exit 7"; echo "qemu-exit=$?"')
    r = th.run(cmd, qemu=True, timeout=500)
    assert r.status == 0, r.output
    out = r.output.replace("\r", "")
    assert out.count("qemu-exit=0\n") == 2, out
    first, second = out.split("qemu-exit=0\n")[:2]
    # Kernel messages may interleave; check the guest's lines and their order.
    lines = first.splitlines()
    assert "tern-guest: init" in lines and kver in lines and "tern-guest: exit 0" in lines, first
    assert lines.index("tern-guest: init") < lines.index(kver) < lines.index("tern-guest: exit 0")
    lines = second.splitlines()
    assert "tern-guest: init" in lines and "a  b" in lines and "tern-guest: exit 7" in lines, second
    assert lines.index("tern-guest: init") < lines.index("a  b") < lines.index("tern-guest: exit 7")


def test_qemu_microvm_interactive_guest_shell(th, tmp_path):
    script = tmp_path / "interactive.sh"
    script.write_text(f"""
mkfifo /tmp/in
: >/tmp/out  # exists before the loop below reads it (the job opens it only once the FIFO opens)
{MICROVM} -append "console=ttyS0 quiet reboot=t panic=-1" </tmp/in >/tmp/out 2>&1 &
pid=$!
exec 3>/tmp/in
# wait for the guest shell's prompt before typing (input sent earlier may be flushed)
i=0
until grep -q '# ' /tmp/out; do
    i=$((i + 1)); [ $i -gt 600 ] && {{ echo no-prompt; cat /tmp/out; exit 1; }}
    sleep 0.5
done
printf 'echo hi-$((6 * 7))\\nexit 5\\n' >&3
wait $pid
echo "qemu-exit=$?"
exec 3>&-
cat /tmp/out
""")
    r = th.run(f"sh {script}", files=[str(script)], qemu=True, timeout=500)
    assert r.status == 0, r.output
    lines = r.output.replace("\r", "").splitlines()
    assert lines[0] == "qemu-exit=0"
    assert "tern-guest: init" in lines
    assert "hi-42" in lines
    assert "tern-guest: exit 5" in lines
