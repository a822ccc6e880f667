# System test of the busybox AMI (tools/image/busybox-ami): tern-vmm boots it from a virtio-blk
# root disk (root=/dev/vda) inside the test host, twice from the same disk in one test-host boot.
# Asserts from the console that it reaches "tern-busybox: up" with its boot record, that a
# graceful shutdown (SIGTERM to tern-vmm: the ACPI power button) powers it off through ACPI S5
# with the root file system left clean, and that the second boot shows both boot records.
import re
import shlex
import subprocess

import pytest

from disk import busybox_ami
from vmm_session import Case, run_cases

UP = "tern-busybox: up"
BOOT_RECORD = re.compile(r"tern-boots: (boot [0-9a-f-]{36})")
# Test-host shell run after each boot: the ext4 superblock's incompatible features (le32 at byte
# 0x60 of the superblock, which starts at byte 1024). Bit 0x4, needs_recovery, stays set while
# the file system is mounted read-write; unmounting or remounting read-only clears it.
SUPERBLOCK = ("echo \"incompat: $(dd if=/dev/vda bs=4 skip=280 count=1 2>/dev/null | "
              "od -An -tx1 | tr -d ' \\n')\"")
NEEDS_RECOVERY = 0x4


@pytest.fixture(scope="module")
def boots(th, tmp_path_factory):
    """Boots a private copy of the AMI's root disk twice, each time until "up" and then SIGTERM;
    returns (first case, second case, path of the disk copy)."""
    ami = busybox_ami()
    rootfs = str(tmp_path_factory.mktemp("busybox") / "rootfs.raw")
    subprocess.run(["cp", "--sparse=always", ami["TERN_BUSYBOX_AMI_ROOTFS"], rootfs], check=True)
    with open(ami["TERN_BUSYBOX_AMI_CMDLINE"]) as f:
        cmdline = f.read().strip()
    args = (f"--kernel /ami/vmlinuz --initrd /ami/initrd.img --rng --disk path=/dev/vda "
            f"--shutdown-timeout 60 --cmdline {shlex.quote(cmdline)}")
    cases = [Case(name, args, sigterm_when=UP, after=SUPERBLOCK) for name in ("first", "second")]
    result = run_cases(cases, timeout=900, disks=[rootfs],
                       extra_files={ami["TERN_BUSYBOX_AMI_KERNEL"]: "/ami/vmlinuz",
                                    ami["TERN_BUSYBOX_AMI_INITRD"]: "/ami/initrd.img"})
    assert result.status == 0, result.output + result.console
    return cases[0], cases[1], rootfs


def console(case: Case) -> str:
    return case.output.replace("\r", "")


def final_records(case: Case) -> list[str]:
    """The boot records the case's last tern-vmm run printed. Retries add boots of the disk:
    after an unexpected triple fault (a known rare failure of nested guests) run_cases boots
    again and prints the first attempt's lines prefixed with "@@@"; after a test-host failure it
    runs every case again on the same disk."""
    return BOOT_RECORD.findall("\n".join(line for line in console(case).splitlines()
                                          if not line.startswith("@@@")))


def test_boots_to_up_with_a_boot_record(boots):
    first, _, _ = boots
    out = console(first)
    assert first.status == 0, out[-3000:]
    assert UP in out, out[-3000:]
    records = final_records(first)
    assert records and len(set(records)) == len(records), out[-3000:]
    errors = [line for line in out.splitlines()
              if re.search(r"tern-initrd:|tern-busybox: .*(failed|did not)", line)]
    assert not errors, out[-3000:]
    # tern-vmm's default SMBIOS System Information, as the guest's /sys/class/dmi/id shows it.
    assert "tern-busybox: dmi: Tern / tern-vmm / " in out, out[-3000:]


@pytest.mark.parametrize("which", [0, 1], ids=["first", "second"])
def test_power_button_powers_off_cleanly(boots, which):
    case = boots[which]
    out = console(case)
    assert case.status == 0, out[-3000:]
    assert "SIGTERM: pressed the ACPI power button" in out, out[-3000:]
    after = out.split("pressed the ACPI power button", 1)[1]
    for step in ("acpid: PWRF/00000080", "tern-busybox: going down, / is read-only",
                 "guest powered off (ACPI S5)"):
        assert step in after, f"{step!r} missing after the power button:\n{out[-3000:]}"
    assert "did not power off" not in out, out[-3000:]
    incompat = re.search(r"^incompat: ([0-9a-f]{8})$", out, re.M)
    assert incompat, out[-3000:]
    assert not int.from_bytes(bytes.fromhex(incompat.group(1)), "little") & NEEDS_RECOVERY, \
        f"the root file system still needs journal recovery: {incompat.group(0)}"


def test_second_boot_shows_both_boot_records(boots):
    first, second, rootfs = boots
    before, records = final_records(first), final_records(second)
    assert records[:-1] == before, f"first boot: {before}\nsecond boot:\n{console(second)[-3000:]}"
    assert records[-1] not in before, records
    fsck = subprocess.run(["e2fsck", "-fn", rootfs], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
