# System test of virtio-balloon and virtio-vsock with the busybox guest in the test host:
# inflating the balloon by half of guest memory (PATCH /balloon) returns that memory to the host
# (the VMM's RSS drops) and the guest sees it gone; deflating gives it back (the guest fills it
# again and the RSS grows back); statistics arrive. (The guest's / is a tmpfs of half its RAM,
# hence 200 MiB fills.)
# Over vsock, a host program and a guest program exchange 4 MiB each way, once host-initiated
# (Firecracker's hybrid "CONNECT <port>" on the VMM's Unix socket) and once guest-initiated (the
# guest connects to CID 2, reaching the host's <uds_path>_<port> socket), checked by sha256.
import json
import os
import re

import pytest

import testhost
from vmm_session import QUIET_CMDLINE, VMM_INSIDE, run_retrying_triple_fault, script, vmm_path

GUEST = r"""
sum() { sha256sum <"$1" | cut -c1-64; }
head -c 4194304 /dev/urandom >/tmp/g1; head -c 4194304 /dev/urandom >/tmp/g2
echo "guest-sent-1 $(sum /tmp/g1)"; echo "guest-sent-2 $(sum /tmp/g2)"
vsock-io listen 5000 </tmp/g1 >/tmp/h1 2>/dev/null && echo "guest-got-1 $(sum /tmp/h1)"
i=0; until vsock-io connect 2 6000 </tmp/g2 >/tmp/h2 2>/dev/null || [ $i -ge 100 ]; do sleep 0.2; i=$((i+1)); done
echo "guest-got-2 $(sum /tmp/h2)"
rm -f /tmp/g1 /tmp/g2 /tmp/h1 /tmp/h2
total() { sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' /proc/meminfo; }
dd if=/dev/zero of=/tmp/fill bs=1M count=200 && rm /tmp/fill
t0=$(total); echo "GUEST-FILLED $t0"
i=0; until [ $(total) -le $((t0 - 240*1024)) ] || [ $i -ge 900 ]; do sleep 0.2; i=$((i+1)); done
echo "GUEST-SAW-INFLATE $(total)"
i=0; until [ $(total) -ge $((t0 - 1024)) ] || [ $i -ge 900 ]; do sleep 0.2; i=$((i+1)); done
echo "GUEST-SAW-DEFLATE $(total)"
dd if=/dev/zero of=/tmp/fill bs=1M count=200 && echo GUEST-REFILLED
sleep 5
"""

HOST = r"""
api() {
  code=$(curl -s --unix-socket /tmp/api.sock -X "$1" -o /tmp/body -w '%{http_code}' \
         -H 'Content-Type: application/json' ${3:+--data "$3"} "http://localhost$2")
  echo "API $1 $2 $code $(cat /tmp/body)"
}
wait_for() {  # console text $1, while the VMM runs, at most 5 minutes
  i=0; until grep -q "$1" /tmp/vmm.out || ! kill -0 $vmm 2>/dev/null || [ $i -ge 1500 ]; do
    sleep 0.2; i=$((i+1)); done; }
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' /proc/$vmm/status; }
sum() { sha256sum <"$1" | cut -c1-64; }
head -c 4194304 /dev/urandom >/tmp/h1; head -c 4194304 /dev/urandom >/tmp/h2
echo "host-sent-1 $(sum /tmp/h1)"; echo "host-sent-2 $(sum /tmp/h2)"
(vsock-io unix-listen /tmp/v.sock_6000 </tmp/h2 >/tmp/g2 2>/dev/null; echo "host-got-2 $(sum /tmp/g2)") &
@VMM@ --config-file /config.json --api-sock /tmp/api.sock </dev/null >/tmp/vmm.out 2>&1 &
vmm=$!
i=0; until vsock-io hybrid-connect /tmp/v.sock 5000 </tmp/h1 >/tmp/g1 2>/dev/null || [ $i -ge 600 ]; do sleep 0.2; i=$((i+1)); done
echo "host-got-1 $(sum /tmp/g1)"
wait_for GUEST-FILLED
rss0=$(rss)
api PATCH /balloon '{"amount_mib": 256}'
wait_for GUEST-SAW-INFLATE
sleep 2
rss1=$(rss)
api GET /balloon
api GET /balloon/statistics
api PATCH /balloon '{"amount_mib": 0}'
wait_for GUEST-REFILLED
rss2=$(rss)
echo "RSS-KIB $rss0 $rss1 $rss2"
wait $vmm
echo "VMM-EXIT $?"
cat /tmp/vmm.out
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("balloon")
    config = {
        "boot-source": {"kernel_image_path": "/guest/vmlinuz",
                        "initrd_path": "/guest/initramfs.cpio.gz",
                        "boot_args": f"{QUIET_CMDLINE} -- {script(GUEST)}"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 512},
        "balloon": {"amount_mib": 0, "deflate_on_oom": False, "stats_polling_interval_s": 1},
        "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
    }
    (work / "config.json").write_text(json.dumps(config))
    tool = os.path.join(os.path.dirname(testhost.guest_artifacts()["TERN_GUEST_INITRAMFS"]),
                        "vsock-io")
    result = run_retrying_triple_fault(HOST.replace("@VMM@", VMM_INSIDE),
                          files={vmm_path(): VMM_INSIDE, "/usr/bin/curl": "/bin/curl",
                                 tool: "/bin/vsock-io", str(work / "config.json"): "/config.json"},
                          timeout=900)
    assert result.status == 0, result.output + result.console
    return result.output.replace("\r", "")


def sums(output, prefix):
    return dict(re.findall(rf"^{prefix}-(\d) ([0-9a-f]{{64}})$", output, re.M))


def test_vsock_exchanges_data_both_ways_host_and_guest_initiated(run):
    guest_sent, host_sent = sums(run, "guest-sent"), sums(run, "host-sent")
    guest_got, host_got = sums(run, "guest-got"), sums(run, "host-got")
    assert len(guest_sent) == len(host_sent) == 2, run
    assert guest_got == host_sent, run   # host -> guest on both connections
    assert host_got == guest_sent, run   # guest -> host on both connections


def test_balloon_inflate_returns_memory_and_deflate_gives_it_back(run):
    rss0, rss1, rss2 = map(int, re.search(r"^RSS-KIB (\d+) (\d+) (\d+)$", run, re.M).groups())
    print(f"VMM RSS: {rss0 // 1024} MiB filled, {rss1 // 1024} MiB after inflating 256 MiB, "
          f"{rss2 // 1024} MiB after deflating and refilling")
    assert rss1 < rss0 - 128 * 1024, run
    assert rss2 > rss1 + 128 * 1024, run
    t0 = int(re.search(r"^GUEST-FILLED (\d+)$", run, re.M).group(1))
    inflated = int(re.search(r"^GUEST-SAW-INFLATE (\d+)$", run, re.M).group(1))
    deflated = int(re.search(r"^GUEST-SAW-DEFLATE (\d+)$", run, re.M).group(1))
    assert inflated <= t0 - 240 * 1024 and deflated >= t0 - 1024, run
    assert "GUEST-REFILLED" in run, run


def test_balloon_api_reports_target_and_statistics(run):
    code, body = re.search(r"^API GET /balloon (\d+) (.*)$", run, re.M).groups()
    assert code == "200" and json.loads(body)["amount_mib"] == 256, run
    code, body = re.search(r"^API GET /balloon/statistics (\d+) (.*)$", run, re.M).groups()
    stats = json.loads(body)
    assert code == "200" and stats["target_mib"] == 256 and stats["actual_mib"] >= 240, run
    assert "total_memory" in stats and "free_memory" in stats, run
    patches = re.findall(r"^API PATCH /balloon (\d+)", run, re.M)
    assert patches == ["204", "204"], run
    assert re.search(r"^VMM-EXIT 0$", run, re.M), run
