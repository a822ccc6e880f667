# System tests of Tern's virtio-pci devices with the busybox test guest inside the test host:
# virtio-blk durability, two disks at once, a read-only disk, virtio-rng, hvc0 through
# virtio-console, and virtio-net over a TAP on a bridge (ping and 100 MiB each way by TCP).
# Every assertion is on what the guest printed, or on the disk bytes the test host reads after
# the VMM has exited.
import re

import pytest

import network
from disk import make_ext4
from vmm_session import Case, boot_args, run_cases, script

MOUNT_DATA = "mkdir -p /a /b && mount /dev/vda /a && mount /dev/vdb /b"
DATA_DISKS = "--disk path=/dev/vda --disk path=/dev/vdb"

# First boot: a 64 MiB random file copied from one disk to the other, and a small marker file,
# synced; then power-off without unmounting. The test host reads both disks afterwards.
WRITE = f"""{MOUNT_DATA}
dd if=/dev/urandom of=/a/big bs=1M count=64 2>/dev/null
cp /a/big /b/big
dd if=/dev/urandom of=/a/marker bs=4k count=1 2>/dev/null
sync
sha256sum /a/big /b/big /a/marker
"""
READ_BACK = f"{MOUNT_DATA}\nsha256sum /a/big /b/big /a/marker\n"
HOST_READ_BACK = ("mkdir -p /ha /hb && mount -o ro /dev/vda /ha && mount -o ro /dev/vdb /hb && "
                  "(cd /ha && sha256sum big marker) && (cd /hb && sha256sum big) && "
                  "umount /ha /hb")

READ_ONLY = """cat /sys/block/vda/ro
dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync 2>&1 | head -1
mkdir -p /r && mount /dev/vda /r && cat /r/hello.txt
touch /r/new 2>&1 || true
"""

RNG = """cat /sys/class/misc/hw_random/rng_current
od -An -tx1 -N32 /dev/hwrng | tr -d ' \\n'; echo
"""

NET_PORT_TO_HOST = 5001
NET_PORT_TO_GUEST = 5002
# One ping at a time: busybox ping -c N waits only 2 RTTs (at least 1 s) for the last reply, and
# a nested guest under TCG sometimes takes longer; -c 1 waits -W seconds for its only reply.
NET_GUEST = f"""{network.guest_static_ip()}
replies=0; for i in 1 2 3; do ping -c 1 -W 10 {network.HOST_IP} >/dev/null && replies=$((replies+1)); done
echo "ping replies: $replies of 3"
{network.receive(NET_PORT_TO_GUEST, "/tmp/from_host.bin", seconds=300)}
dd if=/dev/urandom of=/tmp/to_host.bin bs=1M count=100 2>/dev/null
echo "guest sent $(sha256sum /tmp/to_host.bin | cut -d' ' -f1)"
{network.send(network.HOST_IP, NET_PORT_TO_HOST, "/tmp/to_host.bin", seconds=300)}
wait
echo "guest received $(sha256sum /tmp/from_host.bin | cut -d' ' -f1)"
"""
# In the test host: once, the bridge and TAP and 100 MiB to send; before each attempt (a retry
# after an unexpected triple fault starts over), a listener for the guest's 100 MiB and a sender
# that retries until the guest listens, both replacing those of an earlier attempt.
NET_SETUP = f"""{network.SETUP}
dd if=/dev/urandom of=/h.bin bs=1M count=100 2>/dev/null
"""
NET_BEFORE = f"""kill $net_jobs 2>/dev/null; killall nc 2>/dev/null; rm -f /from_guest.bin
{network.receive(NET_PORT_TO_HOST, "/from_guest.bin", seconds=600)}
net_jobs=$!
(i=0; until {network.send(network.GUEST_IP, NET_PORT_TO_GUEST, "/h.bin")} 2>/dev/null || \
[ $i -ge 300 ]; do sleep 1; i=$((i+1)); done) &
net_jobs="$net_jobs $!"
"""
NET_AFTER = ('echo "host sent $(sha256sum /h.bin | cut -d" " -f1)"; '
             'echo "host received $(sha256sum /from_guest.bin | cut -d" " -f1)"')

# The last console= is /dev/console once hvc0 exists (virtio_console is a module: until it loads,
# the kernel and init's first line use ttyS0).
HVC_CMDLINE = "console=ttyS0 console=hvc0 reboot=k panic=-1 quiet"

CASES = [
    Case("write", boot_args(script(WRITE), vcpus=2) + " " + DATA_DISKS, after=HOST_READ_BACK),
    Case("read_back", boot_args(script(READ_BACK), vcpus=2) + " " + DATA_DISKS),
    Case("read_only", boot_args(script(READ_ONLY)) + " --disk path=/dev/vdc,readonly=on"),
    Case("rng", boot_args(script(RNG)) + " --rng"),
    Case("hvc0", boot_args(None, cmdline=HVC_CMDLINE) + " --console virtio", ready="/ # ",
         dialogue=[("echo hvc-says-$((6*7)) $(tty)\n", "hvc-says-42"),
                   ("exit\n", "tern-guest: exit")]),
    Case("net", boot_args(script(NET_GUEST), vcpus=2, memory=512) +
         f" --net tap={network.TAP},mac=52:54:00:12:34:56", after=NET_AFTER, before=NET_BEFORE),
]


@pytest.fixture(scope="module")
def cases(th, tmp_path_factory):
    work = tmp_path_factory.mktemp("virtio")
    disks = [make_ext4(work / "data1.img", {}, size_mib=128),
             make_ext4(work / "data2.img", {}, size_mib=128),
             make_ext4(work / "ro.img", {"hello.txt": b"hello from a read-only disk\n"},
                       size_mib=16)]
    result = run_cases(CASES, disks=disks, setup=NET_SETUP)
    assert result.status == 0, result.output + result.console
    for case in CASES:
        assert case.status is not None, f"{case.name} did not finish:\n{result.output}"
    return {case.name: case for case in CASES}


def guest_ok(case):
    assert case.status == 0, case.output
    assert "tern-guest: exit 0" in case.output, case.output


def sha256_lines(text):
    """{path: digest} from sha256sum output lines."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}


def test_copy_between_two_disks_verifies_by_sha256(cases):
    guest_ok(cases["write"])
    sums = sha256_lines(cases["write"].output)
    assert sums["/a/big"] == sums["/b/big"], cases["write"].output


def test_synced_data_survives_power_off_and_next_boot(cases):
    guest_part, host_part = cases["write"].output.split("tern-vmm: info", 1)
    written = sha256_lines(guest_part)
    host = sha256_lines(host_part)
    assert host == {"big": written["/a/big"], "marker": written["/a/marker"]}, \
        cases["write"].output
    guest_ok(cases["read_back"])
    assert sha256_lines(cases["read_back"].output) == written, cases["read_back"].output


def test_read_only_disk_refuses_writes(cases):
    case = cases["read_only"]
    guest_ok(case)
    lines = case.output.split("tern-guest: init", 1)[-1]
    assert re.search(r"^1$", lines, re.M), case.output  # /sys/block/vda/ro
    assert "Operation not permitted" in lines, case.output
    assert "hello from a read-only disk" in lines, case.output
    assert "Read-only file system" in lines, case.output


def test_hwrng_delivers_entropy(cases):
    case = cases["rng"]
    guest_ok(case)
    assert "virtio_rng" in case.output, case.output
    data = re.search(r"^([0-9a-f]{64})$", case.output, re.M)
    assert data and len(set(data.group(1))) > 4, case.output


def test_hvc0_console_carries_an_interactive_shell(cases):
    case = cases["hvc0"]
    assert case.status == 0, case.output
    assert "hvc-says-42 /dev/hvc0" in case.output, case.output
    assert "tern-guest: exit 0" in case.output, case.output


def test_network_ping_and_100_mib_each_way(cases):
    case = cases["net"]
    guest_ok(case)
    assert "ping replies: 3 of 3" in case.output, case.output
    sums = dict(re.findall(r"^(guest sent|guest received|host sent|host received) ([0-9a-f]{64})$",
                           case.output, re.M))
    assert len(sums) == 4, case.output
    assert sums["guest sent"] == sums["host received"]
    assert sums["host sent"] == sums["guest received"]
