# System test of snapshots, in the test host, through the control API (curl on Unix sockets):
# a guest running a counter with a disk and a network interface is paused, snapshotted and its
# VMM killed; a new tern-vmm process restores it and the counter goes on from where it was,
# and the disk and the network still work. Then 4 clones of one snapshot run at once, each
# changes its own state, and their combined memory is measured; a Diff snapshot merged onto
# its Full base restores the guest's later state. Refusals: a snapshot of a running VM, a
# corrupt state file.
import json
import re
import sys

import pytest

import network
from vmm_session import VMM_INSIDE, run_retrying_triple_fault, script, vmm_path

# The guest: a counter on the console, and a shell reading commands from the console.
GUEST = script(f"""{network.guest_static_ip()} 2>/dev/null
(i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done) &
while read -r line; do eval "$line"; done""")
BOOT_SOURCE = json.dumps({"kernel_image_path": "/guest/vmlinuz",
                          "initrd_path": "/guest/initramfs.cpio.gz",
                          "boot_args": f"console=ttyS0 reboot=k panic=-1 quiet -- {GUEST}"})

SCRIPT = r"""
api() {  # api SOCKET METHOD PATH [BODY]
  code=$(curl -s --unix-socket "$1" -X "$2" -o /tmp/body -w '%{http_code}' \
         -H 'Content-Type: application/json' ${4:+--data "$4"} "http://localhost$3")
  echo "API $2 $3 $code $(cat /tmp/body)"
}
wait_for() {  # wait_for FILE TEXT: at most 60 s
  i=0; until grep -qF -- "$2" "$1" || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
}
start_vmm() {  # start_vmm NAME: tern-vmm with its API on /tmp/NAME.sock, console in /tmp/NAME.in
  rm -f /tmp/$1.sock /tmp/$1.in; mkfifo /tmp/$1.in
  @VMM@ --api-sock /tmp/$1.sock --id $1 </tmp/$1.in >/tmp/$1.out 2>&1 &
  eval "pid_$1=$!"
  eval "exec $2>/tmp/$1.in"
  i=0; until [ -S /tmp/$1.sock ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
}
# guest FD OUT COMMAND: types COMMAND on a VMM's console (fd FD, output file OUT) and waits
# for its end marker, which the console's echo of the typed line cannot match.
n=0
guest() {
  n=$((n + 1)); echo "$3; echo end-\$((1000 + $n))" >&$1; wait_for $2 "end-$((1000 + n))"
}
last_tick() { grep -o 'tick-[0-9]*' "$1" | tail -n 1 | cut -d- -f2; }
first_tick() { grep -o 'tick-[0-9]*' "$1" | head -n 1 | cut -d- -f2; }
pss_kib() { awk '/^Pss:/ {print $2}' /proc/$1/smaps_rollup; }
now_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }
rss_kib() { awk '/^VmRSS:/ {print $2}' /proc/$1/status; }
@SETUP@
printf 'BEFORE' > /tmp/disk.img; truncate -s 1M /tmp/disk.img

# --- 1: snapshot, kill, restore in a new process --------------------------------------------
start_vmm a 3
api /tmp/a.sock PUT /boot-source '@BOOT_SOURCE@'
api /tmp/a.sock PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 256, "track_dirty_pages": true}'
api /tmp/a.sock PUT /drives/data '{"drive_id": "data", "path_on_host": "/tmp/disk.img", "is_root_device": false}'
api /tmp/a.sock PUT /network-interfaces/eth0 '{"iface_id": "eth0", "host_dev_name": "tap0"}'
api /tmp/a.sock PUT /actions '{"action_type": "InstanceStart"}'
wait_for /tmp/a.out tick-10
api /tmp/a.sock PUT /snapshot/create '{"snapshot_path": "/tmp/running.state", "mem_file_path": "/tmp/running.mem"}'
guest 3 /tmp/a.out 'dd if=/dev/zero bs=1M count=16 2>/dev/null | tr "\0" "\1" > /fill'
api /tmp/a.sock PATCH /vm '{"state": "Paused"}'
t=$(now_ms)
api /tmp/a.sock PUT /snapshot/create '{"snapshot_type": "Full", "snapshot_path": "/tmp/snap.state", "mem_file_path": "/tmp/snap.mem"}'
echo "SNAPSHOT-MS $(( $(now_ms) - t ))"
echo "PAUSED-AT $(last_tick /tmp/a.out)"
echo "MEM-FILE $(stat -c '%s %b %B' /tmp/snap.mem)"
kill -9 $pid_a; wait $pid_a 2>/dev/null; exec 3>&-

start_vmm b 4
api /tmp/b.sock PUT /snapshot/load '{"snapshot_path": "/tmp/snap.state", "mem_backend": {"backend_type": "File", "backend_path": "/tmp/snap.mem"}, "resume_vm": true}'
api /tmp/b.sock GET /
sleep 3
echo "RESTORED-FROM $(first_tick /tmp/b.out) TO $(last_tick /tmp/b.out)"
guest 4 /tmp/b.out 'echo disk-$(head -c 6 /dev/vda)'
guest 4 /tmp/b.out 'printf AFTER | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null && echo wrote-ok'
guest 4 /tmp/b.out 'ping -c 1 -W 10 @HOST_IP@ >/dev/null && echo ping-ok || echo ping-failed'
guest 4 /tmp/b.out 'echo fill-$(head -c 4 /fill | od -An -tx1 | tr -d " ")'
api /tmp/b.sock PATCH /vm '{"state": "Paused"}'
kill -9 $pid_b; wait $pid_b 2>/dev/null; exec 4>&-
grep -o '^disk-[A-Z]*\|^wrote-ok\|^ping-[a-z]*\|^fill-[0-9a-f]*' /tmp/b.out | sed 's/^/GUEST /'
echo "DISK-SECTOR-1 $(dd if=/tmp/disk.img bs=512 skip=1 count=1 2>/dev/null | head -c 5)"

# --- 2: four clones of one snapshot (of a VM with neither disk nor network to share) ---------
start_vmm s 3
api /tmp/s.sock PUT /boot-source '@BOOT_SOURCE@'
api /tmp/s.sock PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 256}'
api /tmp/s.sock PUT /actions '{"action_type": "InstanceStart"}'
wait_for /tmp/s.out tick-1
guest 3 /tmp/s.out 'dd if=/dev/zero bs=1M count=64 2>/dev/null | tr "\0" "\2" > /fill'
api /tmp/s.sock PATCH /vm '{"state": "Paused"}'
echo "VMM-RSS-KIB $(rss_kib $pid_s)"
api /tmp/s.sock PUT /snapshot/create '{"snapshot_path": "/tmp/clone.state", "mem_file_path": "/tmp/clone.mem"}'
kill -9 $pid_s; wait $pid_s 2>/dev/null; exec 3>&-
for n in 1 2 3 4; do
  start_vmm c$n $((4 + n))
  api /tmp/c$n.sock PUT /snapshot/load '{"snapshot_path": "/tmp/clone.state", "mem_file_path": "/tmp/clone.mem", "resume_vm": true}'
done
for n in 1 2 3 4; do
  echo "echo clone-$n > /id; echo id-\$(cat /id)" >&$((4 + n))
done
for n in 1 2 3 4; do
  wait_for /tmp/c$n.out "id-clone-$n"  # whole: the console may hold half a line
  echo "CLONE $n $(grep -o '^id-clone-[0-9]' /tmp/c$n.out | tail -n 1) $(last_tick /tmp/c$n.out)"
done
sleep 3
for n in 1 2 3 4; do echo "CLONE-LATER $n $(last_tick /tmp/c$n.out)"; done
rss=0; pss=0
for n in 1 2 3 4; do
  eval "p=\$pid_c$n"; rss=$((rss + $(rss_kib $p))); pss=$((pss + $(pss_kib $p)))
done
echo "CLONES-RSS-KIB $rss PSS-KIB $pss"
for n in 1 2 3 4; do eval "kill -9 \$pid_c$n"; done
wait 2>/dev/null

# --- 3: a Diff snapshot over the Full one -----------------------------------------------------
start_vmm d 9
api /tmp/d.sock PUT /snapshot/load '{"snapshot_path": "/tmp/snap.state", "mem_file_path": "/tmp/snap.mem", "resume_vm": true, "track_dirty_pages": true}'
api /tmp/d.sock PATCH /vm '{"state": "Paused"}'
api /tmp/d.sock PUT /snapshot/create '{"snapshot_type": "Full", "snapshot_path": "/tmp/base.state", "mem_file_path": "/tmp/base.mem"}'
api /tmp/d.sock PATCH /vm '{"state": "Resumed"}'
guest 9 /tmp/d.out 'echo diff-marker > /marker'
api /tmp/d.sock PUT /snapshot/create '{"snapshot_type": "Diff", "snapshot_path": "/tmp/diff.state", "mem_file_path": "/tmp/diff.mem"}'
api /tmp/d.sock PATCH /vm '{"state": "Paused"}'
api /tmp/d.sock PUT /snapshot/create '{"snapshot_type": "Diff", "snapshot_path": "/tmp/diff.state", "mem_file_path": "/tmp/diff.mem"}'
echo "DIFF-FILE $(stat -c '%s %b %B' /tmp/diff.mem)"
kill -9 $pid_d; wait $pid_d 2>/dev/null; exec 9>&-
@VMM@ --rebase-memory /tmp/base.mem /tmp/diff.mem; echo "REBASE-EXIT $?"
start_vmm e 3
api /tmp/e.sock PUT /snapshot/load '{"snapshot_path": "/tmp/diff.state", "mem_file_path": "/tmp/base.mem", "resume_vm": true}'
guest 3 /tmp/e.out 'echo got-$(cat /marker)'
grep -o '^got-[a-z-]*' /tmp/e.out | sed 's/^/GUEST /'
kill -9 $pid_e; wait $pid_e 2>/dev/null; exec 3>&-

# --- 4: a corrupt state file is refused -------------------------------------------------------
cp /tmp/snap.state /tmp/bad.state; printf 'X' | dd of=/tmp/bad.state bs=1 seek=100 conv=notrunc 2>/dev/null
start_vmm f 3
api /tmp/f.sock PUT /snapshot/load '{"snapshot_path": "/tmp/bad.state", "mem_file_path": "/tmp/snap.mem"}'
api /tmp/f.sock GET /
kill $pid_f; wait $pid_f 2>/dev/null; exec 3>&-
for n in a b s c1 c2 c3 c4 d e; do sed "s/^/LOG-$n /" /tmp/$n.out | grep -v tick- | tail -n 5; done
for n in c1 c2 c3 c4; do tr -d '\r' < /tmp/$n.out | tr '\n' ' ' | sed "s/^/RAW-$n /"; echo; done
"""

@pytest.fixture(scope="module")
def run():
    command = (SCRIPT.replace("@SETUP@", network.SETUP)
               .replace("@VMM@", VMM_INSIDE).replace("@BOOT_SOURCE@", BOOT_SOURCE)
               .replace("@HOST_IP@", network.HOST_IP))
    result = run_retrying_triple_fault(
        command, files={vmm_path(): VMM_INSIDE, "/usr/bin/curl": "/bin/curl"}, timeout=900,
        on_output=lambda chunk: sys.stderr.buffer.write(chunk))  # shown if the host hangs
    assert result.status == 0, result.output + result.console
    print(result.output)
    return result.output


def api_lines(output, method, path):
    return [(int(m.group(1)), m.group(2)) for m in
            re.finditer(rf"^API {method} {re.escape(path)} (\d+) (.*)$", output, re.M)]


def value(output, name):
    match = re.search(rf"^{name} (.*)$", output, re.M)
    assert match, f"no {name} line in:\n{output}"
    return match.group(1)


def test_snapshot_of_a_running_vm_is_refused(run):
    code, body = api_lines(run, "PUT", "/snapshot/create")[0]
    assert code == 400 and "must be paused" in body, run


def test_restored_guest_continues_its_counter(run):
    creates = api_lines(run, "PUT", "/snapshot/create")
    assert creates[1][0] == 204, run
    paused_at = int(value(run, "PAUSED-AT"))
    first, last = map(int, re.match(r"(\d+) TO (\d+)", value(run, "RESTORED-FROM")).groups())
    assert paused_at - 1 <= first <= paused_at + 2, run  # not from 0: from where it was
    assert last > first + 3, run
    loads = api_lines(run, "PUT", "/snapshot/load")
    assert loads[0][0] == 204, run
    assert '"state":"Running"' in api_lines(run, "GET", "/")[0][1], run
    # Memory the guest filled before the snapshot is there after it.
    assert "GUEST fill-01010101" in run, run


def test_restored_guest_disk_and_network_work(run):
    assert "GUEST disk-BEFORE" in run, run
    assert "GUEST wrote-ok" in run and value(run, "DISK-SECTOR-1") == "AFTER", run
    assert "GUEST ping-ok" in run, run


def test_memory_file_is_sparse(run):
    size, blocks, block_size = map(int, value(run, "MEM-FILE").split())
    assert size == 256 << 20
    assert blocks * block_size < size, run  # untouched guest RAM is holes


def test_four_clones_run_independently_and_share_memory(run):
    for n in range(1, 5):
        assert re.search(rf"^CLONE {n} id-clone-{n} \d+$", run, re.M), run
    one_vm = int(value(run, "VMM-RSS-KIB"))
    rss, pss = map(int, re.match(r"(\d+) PSS-KIB (\d+)", value(run, "CLONES-RSS-KIB")).groups())
    print(f"one VM: RSS {one_vm} KiB; 4 clones: RSS {rss} KiB, PSS {pss} KiB "
          f"({pss / one_vm:.2f}x one VM)")
    assert one_vm > 64 * 1024, run  # the guest filled 64 MiB before the snapshot
    assert pss < 2 * one_vm, run  # far below 4x: unchanged pages are shared


def test_diff_snapshot_merged_onto_its_base_restores_the_later_state(run):
    creates = api_lines(run, "PUT", "/snapshot/create")
    # The first Diff (of a running VM) is refused; the second, paused, works.
    assert [code for code, _ in creates[-3:]] == [204, 400, 204], run
    size, blocks, block_size = map(int, value(run, "DIFF-FILE").split())
    assert blocks * block_size < 32 << 20, run  # only the dirtied pages
    assert value(run, "REBASE-EXIT") == "0", run
    assert "GUEST got-diff-marker" in run, run


def test_corrupt_state_file_is_refused_and_the_vmm_stays_up(run):
    code, body = api_lines(run, "PUT", "/snapshot/load")[-1]
    assert code == 400 and "corrupt" in body, run
    assert '"state":"Not started"' in api_lines(run, "GET", "/")[-1][1], run
