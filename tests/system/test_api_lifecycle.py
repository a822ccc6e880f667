# System test of the control API with a real guest, in the test host: configure and start a VM
# through the API (curl on the Unix socket), refuse requests the running state does not allow,
# pause and resume it (the guest's clock-driven counter stops and goes on), read metrics, and
# stop it with the graceful-shutdown action, whose timeout stops a guest that ignores the power
# button (the busybox guest has no ACPI button driver; the Debian guest's clean power-off is
# tested in test_debian_image.py).
import re

import pytest

from vmm_session import VMM_INSIDE, run_retrying_triple_fault, vmm_path

COUNTER = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"

SCRIPT = r"""
api() {
  code=$(curl -s --unix-socket /tmp/api.sock -X "$1" -o /tmp/body -w '%{http_code}' \
         -H 'Content-Type: application/json' ${3:+--data "$3"} "http://localhost$2")
  echo "API $1 $2 $code $(cat /tmp/body)"
}
ticks() { grep -c '^tick-' /tmp/vmm.out; }
@VMM@ --api-sock /tmp/api.sock --id life --shutdown-timeout 3 </dev/null >/tmp/vmm.out 2>&1 &
vmm=$!
i=0; until [ -S /tmp/api.sock ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
api GET /
api PUT /boot-source '{"kernel_image_path": "/guest/vmlinuz", "initrd_path": "/guest/initramfs.cpio.gz", "boot_args": "console=ttyS0 reboot=k panic=-1 quiet -- @CMD@"}'
api PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 256}'
api PUT /metrics '{"metrics_path": "/tmp/metrics.json"}'
api PUT /actions '{"action_type": "InstanceStart"}'
api PUT /actions '{"action_type": "InstanceStart"}'
api PUT /boot-source '{"kernel_image_path": "/guest/vmlinuz"}'
api PATCH /vm '{"state": "Resumed"}'
i=0; until grep -q '^tick-5' /tmp/vmm.out || ! kill -0 $vmm || [ $i -ge 600 ]; do sleep 0.2; i=$((i+1)); done
echo "STARTED $(grep -m1 "^tick-5" /tmp/vmm.out | tr -d "\\r")"
api PATCH /vm '{"state": "Paused"}'
api GET /
a=$(ticks); sleep 3; b=$(ticks)
echo "PAUSED-TICKS $a $b"
api PATCH /vm '{"state": "Paused"}'
api PATCH /vm '{"state": "Resumed"}'
sleep 3; c=$(ticks)
echo "RESUMED-TICKS $b $c"
api GET /metrics
api PUT /actions '{"action_type": "FlushMetrics"}'
echo "METRICS-FILE $(cat /tmp/metrics.json)"
api PUT /actions '{"action_type": "Shutdown"}'
wait $vmm
echo "VMM-EXIT $?"
grep '^tern-vmm' /tmp/vmm.out
"""


@pytest.fixture(scope="module")
def run():
    command = SCRIPT.replace("@VMM@", VMM_INSIDE).replace("@CMD@", COUNTER)
    result = run_retrying_triple_fault(
        command, files={vmm_path(): VMM_INSIDE, "/usr/bin/curl": "/bin/curl"}, timeout=600)
    assert result.status == 0, result.output + result.console
    return result.output


def api_lines(output, method, path):
    return [(int(m.group(1)), m.group(2)) for m in
            re.finditer(rf"^API {method} {re.escape(path)} (\d+) (.*)$", output, re.M)]


def test_configure_and_start_through_the_api(run):
    assert api_lines(run, "GET", "/")[0][0] == 200
    assert '"state":"Not started"' in api_lines(run, "GET", "/")[0][1]
    for path in ("/machine-config", "/metrics"):
        assert api_lines(run, "PUT", path)[0][0] == 204, run
    starts = api_lines(run, "PUT", "/actions")
    assert starts[0][0] == 204, run
    assert starts[1][0] == 400 and "already running" in starts[1][1], run
    assert re.search(r"^STARTED tick-5$", run, re.M), run


def test_requests_the_running_state_does_not_allow_are_refused(run):
    boot = api_lines(run, "PUT", "/boot-source")
    assert boot[0][0] == 204 and boot[1][0] == 400, run
    assert "not supported after starting the microVM" in boot[1][1], run
    resumes = api_lines(run, "PATCH", "/vm")
    assert resumes[0][0] == 400 and "not paused" in resumes[0][1], run


def test_pause_stops_the_guest_and_resume_continues_it(run):
    vm = api_lines(run, "PATCH", "/vm")
    assert [code for code, _ in vm] == [400, 204, 400, 204], run  # Paused twice: refused
    assert '"state":"Paused"' in api_lines(run, "GET", "/")[1][1], run
    a, b = map(int, re.search(r"^PAUSED-TICKS (\d+) (\d+)$", run, re.M).groups())
    assert a == b and a >= 6, run
    b2, c = map(int, re.search(r"^RESUMED-TICKS (\d+) (\d+)$", run, re.M).groups())
    assert c > b2, run


def test_metrics_count_exits(run):
    code, body = api_lines(run, "GET", "/metrics")[0]
    assert code == 200 and re.search(r'"io":[1-9]', body), run
    assert re.search(r'^METRICS-FILE \{.*"exits":\{.*"io":[1-9]', run, re.M), run


def test_shutdown_action_stops_a_guest_that_ignores_the_power_button(run):
    actions = api_lines(run, "PUT", "/actions")
    assert actions[-1][0] == 204, run
    assert "did not power off within 3000 ms" in run, run
    assert "VM stopped by the host" in run, run
    assert re.search(r"^VMM-EXIT 0$", run, re.M), run
