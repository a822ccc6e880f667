# System tests: tern-vmm boots Debian's stock cloud kernel (bzImage and ELF vmlinux) with the
# busybox initramfs inside the test host; asserts on what the guest printed and how the VMM
# exited (vCPU counts, memory sizes, reboot/power-off/triple fault, an interactive shell).
import re

import pytest

from vmm_session import Case, boot_args, run_cases

GUEST_REPORT = "uname -r; nproc; grep MemTotal /proc/meminfo"

CASES = [
    Case("vcpus1_mem256", boot_args(GUEST_REPORT, vcpus=1, memory=256)),
    Case("vcpus2_mem1024", boot_args(GUEST_REPORT, vcpus=2, memory=1024)),
    Case("vcpus4_mem256", boot_args(GUEST_REPORT, vcpus=4, memory=256)),
    Case("elf_vmlinux", boot_args(GUEST_REPORT, vcpus=2, kernel="/guest/vmlinux")),
    Case("poweroff", boot_args("poweroff -f")),
    Case("reboot", boot_args("reboot -f")),
    Case("triple_fault", boot_args("reboot -f",
                                   cmdline="console=ttyS0 reboot=t panic=-1 quiet"),
         retry_triple_fault=False),
    Case("shell", boot_args(None), ready="/ # ",
         dialogue=[("echo shell-says-$((6*7))\n", "shell-says-42"),
                   ("exit\n", "tern-guest: exit")]),
    Case("verbose_console", boot_args("echo done", cmdline="console=ttyS0 reboot=k panic=-1")),
]


@pytest.fixture(scope="module")
def cases():
    result = run_cases(CASES)
    assert result.status == 0, result.output + result.console
    by_name = {case.name: case for case in CASES}
    for case in CASES:
        assert case.status is not None, f"{case.name} did not finish:\n{result.output}"
    return by_name


@pytest.fixture(scope="module")
def kernel_version():
    import testhost
    return testhost.guest_artifacts()["TERN_GUEST_KERNEL_VERSION"]


def guest_lines(case):
    """The guest command's output: the lines between init's banner and its exit line."""
    text = case.output
    assert "tern-guest: init" in text, text
    body = text.split("tern-guest: init", 1)[1].split("tern-guest: exit", 1)[0]
    return [line for line in body.splitlines() if line and not line.startswith("[")]


@pytest.mark.parametrize("name,vcpus,memory_mib", [
    ("vcpus1_mem256", 1, 256), ("vcpus2_mem1024", 2, 1024), ("vcpus4_mem256", 4, 256),
    ("elf_vmlinux", 2, 256)])
def test_guest_sees_configured_cpus_and_memory(cases, kernel_version, name, vcpus, memory_mib):
    case = cases[name]
    assert case.status == 0, case.output
    lines = guest_lines(case)
    assert lines[0] == kernel_version
    assert int(lines[1]) == vcpus
    mem_total_kib = int(re.search(r"MemTotal:\s+(\d+) kB", "\n".join(lines)).group(1))
    # The kernel keeps its own image, page structures and reserved areas out of MemTotal.
    assert memory_mib * 1024 * 0.80 <= mem_total_kib <= memory_mib * 1024
    assert "tern-guest: exit 0" in case.output
    assert "guest powered off (ACPI S5)" in case.output


def test_poweroff_ends_vmm_with_status_0(cases):
    case = cases["poweroff"]
    assert case.status == 0, case.output
    assert "guest powered off (ACPI S5)" in case.output


def test_reboot_ends_vmm_with_status_0(cases):
    case = cases["reboot"]
    assert case.status == 0, case.output
    assert "guest reset (reboot through the i8042 reset line)" in case.output


def test_triple_fault_ends_vmm_with_status_0(cases):
    case = cases["triple_fault"]
    assert case.status == 0, case.output
    assert "guest triple fault" in case.output


def test_interactive_shell_reads_console_input(cases):
    case = cases["shell"]
    assert case.status == 0, case.output
    # The shell's result, not the echoed input: the arithmetic happened in the guest.
    assert "shell-says-42" in case.output
    assert "guest powered off" in case.output


def test_verbose_console_output_arrives_whole_and_in_order(cases):
    case = cases["verbose_console"]
    assert case.status == 0, case.output
    timestamps = [float(m) for m in re.findall(r"^\[\s*(\d+\.\d+)\]", case.output, re.M)]
    assert len(timestamps) > 100
    assert timestamps == sorted(timestamps)
    assert "Run /init as init process" in case.output
    assert case.output.index("Run /init") < case.output.index("tern-guest: init")
    assert "\ndone\n" in case.output
