# System test: tern-vmm boots the Debian 12 image of tools/image/build from a virtio-blk disk
# (root=/dev/vda) to systemd's multi-user target with virtio-net and virtio-rng, inside the test
# host, and runs a command there; then a graceful shutdown (SIGTERM to tern-vmm: the ACPI power
# button) makes systemd power the guest off in order. Asserts on what the guest printed. Takes
# minutes under TCG (and ~3 minutes more the first time the image is built).
import shlex

import pytest

import network
from disk import check_debian_lines, debian_checks, debian_image, image_cmdline
from vmm_session import Case, run_cases


@pytest.fixture(scope="module")
def boot(th, tmp_path_factory):
    image = debian_image(tmp_path_factory.mktemp("debian"))
    # tern.off=none: the system stays up after the command, until the power button.
    # systemd.show_status: systemd reports its shutdown steps on the console despite quiet.
    cmdline = image_cmdline(debian_checks(ping_host=network.HOST_IP, hwrng=True),
                            ip=network.kernel_ip_arg(),
                            extra="tern.off=none systemd.show_status=1")
    case = Case("debian", f"--kernel /img/vmlinuz --initrd /img/initrd.img --vcpus 2 "
                          f"--memory 1024 --disk path=/dev/vda --net tap={network.TAP} --rng "
                          f"--shutdown-timeout 400 --cmdline {shlex.quote(cmdline)}",
                sigterm_when="tern-command: exit")
    result = run_cases([case], timeout=900, setup=network.SETUP, disks=[image.rootfs],
                       extra_files={image.kernel: "/img/vmlinuz", image.initrd: "/img/initrd.img"})
    assert result.status == 0, result.output + result.console
    return image, case


def test_debian_image_reaches_multi_user_and_runs_a_command(boot):
    image, case = boot
    out = case.output.replace("\r", "")
    assert case.status == 0, out[-3000:]
    assert "tern-command: start" in out and "tern-command: exit 0" in out, out[-3000:]
    lines = check_debian_lines(out, image.kernel_version)
    assert "ping-ok" in lines and "16" in lines, f"guest printed {lines}"


def test_graceful_shutdown_powers_debian_off_through_systemd(boot):
    _, case = boot
    out = case.output.replace("\r", "")
    assert case.status == 0, out[-3000:]
    assert "SIGTERM: pressed the ACPI power button" in out, out[-3000:]
    after = out.split("pressed the ACPI power button", 1)[1]
    assert "Reached target System Shutdown" in after or "System Power Off" in after, out[-3000:]
    assert "did not power off" not in out, out[-3000:]
    assert "guest powered off (ACPI S5)" in out, out[-3000:]
