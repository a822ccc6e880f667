# System test on the development/CI machine itself, whose KVM is PVM: tern-vmm must refuse to
# run there within a second, with one line that says why and points to the test host.
import os
import subprocess
import time

import pytest

from vmm_session import vmm_path


@pytest.mark.skipif(not os.path.exists("/sys/module/kvm_pvm"), reason="host KVM is not PVM")
def test_pvm_host_is_refused_quickly():
    kernel = __file__  # any existing file: the host check comes first
    start = time.monotonic()
    result = subprocess.run([vmm_path(), "--kernel", kernel], capture_output=True, text=True,
                            timeout=10)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 1.0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PVM" in lines[0] and "test host" in lines[0]
    assert result.stdout == ""
