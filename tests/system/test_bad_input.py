# System tests: tern-vmm refuses bad input (missing or non-kernel files, an initrd larger than
# guest memory, out-of-range --vcpus/--memory, an over-long command line) with a non-zero exit
# and one clear line naming the problem, inside the test host where KVM itself works.
import pytest

from vmm_session import Case, run_cases

GUEST = "--initrd /guest/initramfs.cpio.gz"
CASES = [
    Case("missing_kernel", "--kernel /no/such/vmlinuz"),
    Case("text_as_kernel", "--kernel /guest/kernel-version"),
    Case("program_as_kernel", "--kernel /bin/busybox"),
    Case("directory_as_kernel", "--kernel /guest"),
    Case("truncated_kernel", "--kernel /tmp/truncated-vmlinuz"),
    Case("initrd_too_big", "--kernel /guest/vmlinuz --initrd /tmp/big-initrd --memory 256"),
    Case("missing_initrd", "--kernel /guest/vmlinuz --initrd /no/such/initrd"),
    Case("vcpus_zero", f"--kernel /guest/vmlinuz {GUEST} --vcpus 0"),
    Case("vcpus_above_limit", f"--kernel /guest/vmlinuz {GUEST} --vcpus 100000"),
    Case("vcpus_not_a_number", f"--kernel /guest/vmlinuz {GUEST} --vcpus two"),
    Case("memory_one", f"--kernel /guest/vmlinuz {GUEST} --memory 1"),
    Case("cmdline_too_long", f"--kernel /guest/vmlinuz {GUEST} --cmdline $(printf 'a%.0s' $(seq 3000))"),
    Case("unknown_flag", "--kernel /guest/vmlinuz --frobnicate"),
]

# Inputs made inside the test host before the cases run.
SETUP = ("dd if=/guest/vmlinuz of=/tmp/truncated-vmlinuz bs=600 count=1 2>/dev/null; "
         "dd if=/dev/zero of=/tmp/big-initrd bs=1M seek=299 count=1 2>/dev/null")

EXPECTED = {
    "missing_kernel": "/no/such/vmlinuz",
    "text_as_kernel": "bzImage",
    "program_as_kernel": "not a Linux kernel",
    "directory_as_kernel": "not a regular",
    "truncated_kernel": "truncated",
    "initrd_too_big": "initrd",
    "missing_initrd": "/no/such/initrd",
    "vcpus_zero": "--vcpus",
    "vcpus_above_limit": "--vcpus",
    "vcpus_not_a_number": "--vcpus",
    "memory_one": "--memory",
    "cmdline_too_long": "command line",
    "unknown_flag": "frobnicate",
}


@pytest.fixture(scope="module")
def cases():
    result = run_cases(CASES, timeout=600, setup=SETUP)
    assert result.status == 0, result.output + result.console
    return {case.name: case for case in CASES}


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_refused_with_one_clear_line(cases, name):
    case = cases[name]
    assert case.status not in (None, 0), case.output
    lines = case.output.strip().splitlines()
    assert len(lines) == 1, case.output
    assert lines[0].startswith("tern-vmm: error: "), case.output
    assert EXPECTED[name] in lines[0], case.output


def test_initrd_error_names_the_sizes(cases):
    line = cases["initrd_too_big"].output
    assert "300 MiB" in line and "does not fit" in line, line
