# pytest setup for Tern's system tests (tests/system/): makes tools/testhost importable and builds
# the cached guest artifacts and test-host initrd pieces once per session, failing early with the
# builder's one-line error if a package or download is missing.
import os
import subprocess
import sys

import pytest

sys.dont_write_bytecode = True  # keep tools/ free of __pycache__ directories
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools", "testhost"))

import testhost  # noqa: E402


@pytest.fixture(scope="session")
def guest_artifacts():
    """TERN_GUEST_* paths from tools/guest/build (built once per session, cached across sessions)."""
    r = subprocess.run([os.path.join(REPO, "tools", "guest", "build")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("tools/guest/build failed: " + (r.stderr.strip().splitlines() or ["?"])[-1], pytrace=False)
    art = testhost.guest_artifacts()
    testhost.host_initrd()
    testhost.guest_piece()
    return art


@pytest.fixture(scope="session")
def th(guest_artifacts):
    """The testhost module, with its artifacts built."""
    return testhost


# CI keeps only part of a failing run's output. A failure's report (the assertion message with
# console dumps, and captured output) is cut to its first and last lines, so that the failures of
# every test in the run fit and each still shows its cause.
REPORT_HEAD = 600  # characters
REPORT_TAIL = 2400  # characters


def _cut(text: str) -> str:
    if len(text) <= REPORT_HEAD + REPORT_TAIL:
        return text
    cut = len(text) - REPORT_HEAD - REPORT_TAIL
    return f"{text[:REPORT_HEAD]}\n[... {cut} characters cut ...]\n{text[-REPORT_TAIL:]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.longrepr = _cut(str(report.longrepr))
        report.sections = [(title, _cut(body)) for title, body in report.sections]
