# Fast system test of ternd's EC2 API and its durability: runs the real ternd binary on this
# machine (no test host, no QEMU, no KVM) with tern_fake_vmm in place of tern-vmm (it boots
# nothing, serves the VMM control API, powers off at the ACPI power button; SIGUSR1 = the guest
# reboots, SIGUSR2 = the guest powers off, SIGKILL = the VMM crashes), and drives it with the real
# aws CLI (Debian's /usr/bin/aws, v2) and boto3. Asserts on what the clients received: states,
# state reasons, error codes and HTTP statuses, and on the fake VMM processes (found in /proc by
# the data directory) for reboots, adoption after a ternd crash and duplicate launches. The last
# tests drive the same ternd with the `tern` command line (run, ls, stop, start, reboot, console,
# rm, image register/ls) and check its one-line errors.
#
# Run (about a minute; needs build/ternd, build/tern and build/tern_fake_vmm beside $TERN_VMM):
#   cd tests/system && TERN_VMM=$PWD/../../build/tern-vmm \
#       /usr/bin/python3 -m pytest -q -p no:cacheprovider --tb=short test_ternd_api.py
import base64
import configparser
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import boto3
import botocore
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import pytest
from cryptography.hazmat.primitives import serialization

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
AWS = "/usr/bin/aws"  # Debian's aws CLI (v2), not one a Python environment may put first on PATH
LOG_LINES = 25  # lines of ternd's log shown with a failure
FAKE_NAME = "tern_fake_vmm"


def binary(name: str) -> str:
    """`name` beside the tern-vmm under test: $TERN_VMM (set by CTest) or build/tern-vmm."""
    vmm = os.environ.get("TERN_VMM", os.path.join(REPO, "build", "tern-vmm"))
    return os.path.join(os.path.dirname(os.path.abspath(vmm)), name)


TERND = binary("ternd")
FAKE_VMM = binary(FAKE_NAME)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_vmms(state_dir: str) -> dict[int, str]:
    """The live tern_fake_vmm processes of the instances under `state_dir`: pid -> instance id."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            with open(f"/proc/{entry}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if zombie or not argv or os.path.basename(argv[0]) != FAKE_NAME or "--api-sock" not in argv:
            continue
        flags = dict(zip(argv[1::2], argv[2::2]))
        if flags.get("--api-sock", "").startswith(state_dir + "/"):
            found[int(entry)] = flags.get("--id", "?")
    return found


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def wait_for(what: str, check, timeout: float = 15, interval: float = 0.05):
    """Polls `check()` until it returns something truthy (returned); fails after `timeout` s
    naming `what` and check's last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


class Ternd:
    """One ternd process on a data directory (restartable), with its log."""

    def __init__(self, work: str, name: str, home: str, extra=()):
        self.state = os.path.join(work, name)
        self.log_path = os.path.join(work, name + ".log")
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.proc = None

    def start(self):
        args = [TERND, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.state,
                "--vmm", FAKE_VMM, "--shutdown-timeout", "2", "--reboot-timeout", "5", *self.extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["HOME"] = self.home
        with open(self.log_path, "a") as log:
            log.write(f"@@@ starting ternd on port {self.port}\n")
            log.flush()
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, \
                f"ternd exited ({self.proc.returncode}):\n{self.tail()}"
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:  # an answer (an unsigned request: AuthFailure)
                return
            except OSError:
                pass
            assert time.monotonic() < deadline, \
                f"ternd does not answer on {self.url}:\n{self.tail()}"
            time.sleep(0.05)

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fakes(self) -> dict[int, str]:
        return fake_vmms(self.state)

    def kill_fakes(self):
        for pid in self.fakes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for("the fake VMMs to exit", lambda: not self.fakes(), timeout=10)

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def tail(self, lines: int = LOG_LINES) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"


class Cloud:
    """The module's ternd and its clients: .aws(...) (the aws CLI with the [tern] profile ternd
    wrote, JSON out), .ec2 (boto3), .ami (a registered image)."""

    def __init__(self, work: str):
        self.work = work
        self.home = os.path.join(work, "home")
        os.mkdir(self.home)
        self.aws_dir = os.path.join(self.home, ".aws")
        self.ternd = Ternd(work, "state", self.home)
        self.daemons = [self.ternd]
        self.ami = None

    def load_profile(self):
        creds = configparser.ConfigParser()
        creds.read(os.path.join(self.aws_dir, "credentials"))
        config = configparser.ConfigParser()
        config.read(os.path.join(self.aws_dir, "config"))
        self.key = creds["tern"]["aws_access_key_id"]
        self.secret = creds["tern"]["aws_secret_access_key"]
        self.region = config["profile tern"]["region"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(AWS_SHARED_CREDENTIALS_FILE=os.path.join(self.aws_dir, "credentials"),
                        AWS_CONFIG_FILE=os.path.join(self.aws_dir, "config"), AWS_PAGER="",
                        AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard",
                        AWS_EC2_METADATA_DISABLED="true")
        self.ec2 = self.client()

    @property
    def url(self) -> str:
        return self.ternd.url

    def restart(self):
        """Starts the module's ternd again (after a kill); fresh boto3 connections."""
        self.ternd.start()
        self.ec2 = self.client()

    def client(self, secret=None, key=None, url=None, **config):
        return boto3.client("ec2", endpoint_url=url or self.url, region_name=self.region,
                            aws_access_key_id=key or self.key,
                            aws_secret_access_key=secret or self.secret,
                            config=botocore.config.Config(retries={"max_attempts": 1}, **config))

    def aws_run(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([AWS, "--profile", "tern", "--endpoint-url", self.url, "--output",
                               "json", "ec2", *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def aws(self, *args):
        r = self.aws_run(*args)
        assert r.returncode == 0, f"aws ec2 {' '.join(args)}: {r.stderr.strip()[-600:]}"
        return json.loads(r.stdout) if r.stdout.strip() else None

    def aws_error(self, *args) -> str:
        """The EC2 error code the aws CLI reports for a command that must fail."""
        r = self.aws_run(*args)
        assert r.returncode != 0, f"aws ec2 {' '.join(args)} succeeded: {r.stdout[-300:]}"
        m = re.search(r"An error occurred \(([^)]+)\)", r.stderr)
        assert m, f"aws ec2 {' '.join(args)}: {r.stderr.strip()[-600:]}"
        return m.group(1)

    # --- boto3 helpers
    def describe(self, ids) -> dict[str, dict]:
        out = self.ec2.describe_instances(InstanceIds=list(ids))
        return {i["InstanceId"]: i for r in out["Reservations"] for i in r["Instances"]}

    def state(self, iid) -> str:
        return self.describe([iid])[iid]["State"]["Name"]

    def wait_states(self, ids, state: str, timeout: float = 15) -> dict[str, dict]:
        ids = list(ids)
        last = {}

        def check():
            nonlocal last
            last = self.describe(ids)
            return last if all(i["State"]["Name"] == state for i in last.values()) else None

        try:
            return wait_for(f"{ids} to be {state}", check, timeout)
        except AssertionError:
            raise AssertionError(f"not {state} within {timeout} s: " + ", ".join(
                f"{k}={v['State']['Name']}" for k, v in last.items())) from None

    def run(self, count=1, type_="t3.nano", **kwargs) -> list[str]:
        out = self.ec2.run_instances(ImageId=kwargs.pop("ImageId", self.ami), MinCount=count,
                                     MaxCount=count, InstanceType=type_, **kwargs)
        return [i["InstanceId"] for i in out["Instances"]]

    def run_running(self, count=1, type_="t3.nano", **kwargs) -> list[str]:
        ids = self.run(count, type_, **kwargs)
        self.wait_states(ids, "running")
        return ids

    def pids(self, iid) -> list[int]:
        return sorted(pid for pid, i in self.ternd.fakes().items() if i == iid)

    def one_pid(self, iid) -> int:
        """The pid of `iid`'s only fake VMM (waits for it: a launch may be in progress)."""
        pids = wait_for(f"a fake VMM for {iid}", lambda: self.pids(iid), timeout=10)
        assert len(pids) == 1, f"{iid} has {len(pids)} VMM processes: {pids}"
        return pids[0]

    def terminate(self, ids):
        self.ec2.terminate_instances(InstanceIds=list(ids))
        self.wait_states(ids, "terminated")

    def instance_dir(self, iid) -> str:
        return os.path.join(self.ternd.state, "instances", iid)


def ec2_error(call, **kwargs) -> tuple[str, int]:
    """(error code, HTTP status) of a boto3 call that must fail."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(**kwargs)
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def signed_request(cloud, params: dict) -> tuple[int, str]:
    """POSTs a SigV4-signed EC2 Query request with exactly `params` (no client-side validation);
    returns (HTTP status, error code or "")."""
    body = urllib.parse.urlencode({"Version": "2016-11-15", **params})
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=cloud.url + "/", data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(cloud.key, cloud.secret), "ec2",
                            cloud.region).add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=body.encode(), method="POST",
                                 headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    m = re.search(r"<Code>([^<]*)</Code>", text)
    return status, m.group(1) if m else ""


@pytest.fixture(scope="module")
def cloud():
    work = tempfile.mkdtemp(prefix="ternd-api-")  # short: instance API socket paths < 108 bytes
    c = Cloud(work)
    try:
        c.ternd.start()
        c.load_profile()
        ami_dir = os.path.join(work, "ami")
        os.mkdir(ami_dir)
        with open(os.path.join(ami_dir, "vmlinuz"), "wb") as f:
            f.write(b"not a kernel: tern_fake_vmm boots nothing\n")
        with open(os.path.join(ami_dir, "rootfs.raw"), "wb") as f:
            f.truncate(64 << 20)  # sparse
        with open(os.path.join(ami_dir, "cmdline"), "w") as f:
            f.write("console=ttyS0 reboot=k panic=-1 tern_fake_vmm=normal\n")
        c.ami_dir = ami_dir
        c.ami = c.aws("register-image", "--name", "fake-ami",
                      "--image-location", ami_dir)["ImageId"]
        yield c
    finally:
        for d in c.daemons:
            d.kill(signal.SIGKILL)
        for d in c.daemons:
            d.kill_fakes()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def ternd_log_on_failure(request, cloud):
    """On a failure, prints the tail of the log of each ternd that logged during the test."""
    failed = request.session.testsfailed
    sizes = {d.log_path: d.log_size() for d in cloud.daemons}
    yield
    if request.session.testsfailed > failed:
        for d in cloud.daemons:
            if d.log_size() != sizes.get(d.log_path, 0):
                print(f"--- last lines of {os.path.basename(d.log_path)}:\n{d.tail()}")


# --- 1. the [tern] profile ----------------------------------------------------------------------

def test_profile_written_at_first_start_and_kept(cloud):
    creds_path = os.path.join(cloud.aws_dir, "credentials")
    config_path = os.path.join(cloud.aws_dir, "config")
    creds = configparser.ConfigParser()
    creds.read(creds_path)
    config = configparser.ConfigParser()
    config.read(config_path)
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", creds["tern"]["aws_access_key_id"])
    assert len(creds["tern"]["aws_secret_access_key"]) == 40
    assert config["profile tern"]["region"] == "us-east-1"
    assert stat.S_IMODE(os.stat(creds_path).st_mode) == 0o600  # a secret: the owner's only

    # The profile alone (HOME's ~/.aws, no AWS_* variables) is enough for the aws CLI.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = cloud.home
    r = subprocess.run([AWS, "--profile", "tern", "--endpoint-url", cloud.url, "--no-cli-pager",
                        "--output", "json", "ec2", "describe-instances"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-600:]
    assert "Reservations" in json.loads(r.stdout)

    # A second ternd (another data directory: other keys) with the same HOME leaves it alone.
    before = {p: read_bytes(p) for p in (creds_path, config_path)}
    other = Ternd(cloud.work, "second-state", cloud.home)
    cloud.daemons.append(other)
    other.start()
    other.kill(signal.SIGTERM)
    assert {p: read_bytes(p) for p in before} == before
    assert cloud.aws("describe-instances")["Reservations"] is not None


# --- 2. the lifecycle, with the aws CLI -----------------------------------------------------------

def test_instance_lifecycle(cloud):
    run = cloud.aws("run-instances", "--image-id", cloud.ami, "--count", "2", "--instance-type",
                    "t3.micro", "--tag-specifications",
                    "ResourceType=instance,Tags=[{Key=Name,Value=web},{Key=suite,Value=lifecycle}]")
    assert [i["State"]["Name"] for i in run["Instances"]] == ["pending", "pending"]
    assert [i["AmiLaunchIndex"] for i in run["Instances"]] == [0, 1]
    a, b = ids = [i["InstanceId"] for i in run["Instances"]]
    assert all(re.fullmatch(r"i-[0-9a-f]{17}", i) for i in ids)
    cloud.aws("wait", "instance-running", "--instance-ids", *ids)

    described = cloud.aws("describe-instances", "--instance-ids", a, b)
    [reservation] = described["Reservations"]
    assert reservation["ReservationId"] == run["ReservationId"]
    for i in reservation["Instances"]:
        assert (i["State"], i["InstanceType"], i["ImageId"]) == (
            {"Code": 16, "Name": "running"}, "t3.micro", cloud.ami)
        assert {t["Key"]: t["Value"] for t in i["Tags"]} == {"Name": "web", "suite": "lifecycle"}

    # Filters (boto3: one process for many calls), each also against a value that matches none.
    def matching(*filters) -> set[str]:
        out = cloud.ec2.describe_instances(
            Filters=[{"Name": n, "Values": v} for n, v in filters])
        return {i["InstanceId"] for r in out["Reservations"] for i in r["Instances"]}

    both = set(ids)
    suite = ("tag:suite", ["lifecycle"])
    assert matching(suite) == both
    assert matching(suite, ("instance-state-name", ["running"])) == both
    assert matching(suite, ("instance-state-name", ["stopped", "pending"])) == set()
    assert matching(("instance-id", [a])) == {a}
    assert matching(suite, ("instance-type", ["t3.micro"])) == both
    assert matching(suite, ("instance-type", ["t3.nano"])) == set()
    assert matching(suite, ("image-id", [cloud.ami])) == both
    assert matching(suite, ("image-id", ["ami-0123456789abcdef0"])) == set()
    assert matching(("tag:Name", ["w?b"]), suite) == both
    assert matching(("tag:Name", ["db"]), suite) == set()
    assert both <= matching(("tag-key", ["suite"]))
    assert matching(("tag-key", ["no-such-key"])) == set()
    cli = cloud.aws("describe-instances", "--filters", "Name=tag:suite,Values=lifecycle",
                    "Name=instance-id,Values=" + b)
    assert [i["InstanceId"] for r in cli["Reservations"] for i in r["Instances"]] == [b]

    status = cloud.aws("describe-instance-status", "--instance-ids", a, b)["InstanceStatuses"]
    assert sorted((s["InstanceId"], s["InstanceState"]["Name"], s["InstanceStatus"]["Status"],
                   s["SystemStatus"]["Status"]) for s in status) == sorted(
        (i, "running", "ok", "ok") for i in ids)

    # Stop: stopping, then stopped with the user's reason; its VMM is gone.
    pid_a = cloud.one_pid(a)
    stop = cloud.aws("stop-instances", "--instance-ids", a)["StoppingInstances"]
    assert [(s["InstanceId"], s["PreviousState"]["Name"], s["CurrentState"]["Name"])
            for s in stop] == [(a, "running", "stopping")]
    cloud.aws("wait", "instance-stopped", "--instance-ids", a)
    stopped = cloud.describe([a])[a]
    assert stopped["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    wait_for(f"{a}'s VMM to exit", lambda: not cloud.pids(a), timeout=5)
    status = cloud.ec2.describe_instance_status(InstanceIds=[a, b])["InstanceStatuses"]
    assert [s["InstanceId"] for s in status] == [b]  # running instances only, by default
    status = cloud.ec2.describe_instance_status(InstanceIds=[a], IncludeAllInstances=True)
    assert [s["InstanceState"]["Name"] for s in status["InstanceStatuses"]] == ["stopped"]

    # Start: pending, then running on a new VMM.
    start = cloud.aws("start-instances", "--instance-ids", a)["StartingInstances"]
    assert [(s["PreviousState"]["Name"], s["CurrentState"]["Name"]) for s in start] == [
        ("stopped", "pending")]
    restarted = cloud.wait_states([a], "running")[a]
    assert "StateReason" not in restarted or not restarted["StateReason"].get("Code")
    assert cloud.one_pid(a) != pid_a

    # Reboot: stays running; a new VMM process replaces the old one.
    pid_b = cloud.one_pid(b)
    cloud.aws("reboot-instances", "--instance-ids", b)
    wait_for(f"{b}'s VMM to be replaced", lambda: cloud.pids(b) not in ([], [pid_b]), timeout=10)
    assert len(cloud.pids(b)) == 1, cloud.pids(b)
    assert cloud.state(b) == "running"

    # Console output: the fake VMM writes nothing to its stdout (the console log), so the test
    # writes "serial output" there itself: GetConsoleOutput answers its base64, the last 64 KiB.
    console = os.path.join(cloud.instance_dir(a), "console.log")
    text = "Linux version 6.1 (fake)\nlogin: \u2713\n"
    with open(console, "a", encoding="utf-8") as f:
        f.write(text)
    out = cloud.aws("get-console-output", "--instance-id", a)
    assert (out["InstanceId"], out["Output"]) == (a, text)
    raw = {}  # the response body as sent, before botocore decodes the base64
    ec2 = cloud.client()
    ec2.meta.events.register(
        "after-call.ec2.GetConsoleOutput",
        lambda http_response, **_: raw.setdefault("body", http_response.content.decode()))
    with open(console, "a") as f:
        f.writelines(f"line {n:05d} {'x' * 60}\n" for n in range(1200))  # ~82 KiB in all
    with open(console, "rb") as f:
        log = f.read()
    out = ec2.get_console_output(InstanceId=a)
    assert out["Output"] == log[-65536:].decode()
    assert re.search(r"<output>([^<]*)</output>", raw["body"]).group(1) == \
        base64.b64encode(log[-65536:]).decode()

    # Terminate: shutting-down, then terminated and still listed; no VMM left.
    term = cloud.aws("terminate-instances", "--instance-ids", a, b)["TerminatingInstances"]
    assert sorted((t["InstanceId"], t["PreviousState"]["Name"], t["CurrentState"]["Name"])
                  for t in term) == sorted((i, "running", "shutting-down") for i in ids)
    cloud.aws("wait", "instance-terminated", "--instance-ids", a, b)
    listed = cloud.aws("describe-instances", "--filters", "Name=tag:suite,Values=lifecycle")
    assert sorted((i["InstanceId"], i["State"]["Name"]) for r in listed["Reservations"]
                  for i in r["Instances"]) == sorted((i, "terminated") for i in ids)
    wait_for("the VMMs to exit", lambda: not cloud.pids(a) and not cloud.pids(b), timeout=5)


def test_describe_instances_pagination(cloud):
    ids = cloud.run(6, TagSpecifications=[{"ResourceType": "instance",
                                          "Tags": [{"Key": "suite", "Value": "pages"}]}])
    try:
        pages = list(cloud.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:suite", "Values": ["pages"]}],
            PaginationConfig={"PageSize": 5}))
        sizes = [sum(len(r["Instances"]) for r in p["Reservations"]) for p in pages]
        assert sizes == [5, 1]
        assert "NextToken" in pages[0] and "NextToken" not in pages[-1]
        seen = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
        assert sorted(seen) == sorted(ids)
        assert ec2_error(cloud.ec2.describe_instances, MaxResults=5, InstanceIds=ids[:1]) == \
            ("InvalidParameterCombination", 400)
        assert ec2_error(cloud.ec2.describe_instances, MaxResults=4) == \
            ("InvalidParameterValue", 400)
    finally:
        cloud.terminate(ids)


# --- 3. guest-initiated events --------------------------------------------------------------------

def test_guest_power_off_crash_and_reboot(cloud):
    off, crash, reboot = ids = cloud.run_running(3)
    pids = {i: cloud.one_pid(i) for i in ids}
    os.kill(pids[off], signal.SIGUSR2)  # the guest powers itself off
    os.kill(pids[crash], signal.SIGKILL)  # the VMM crashes
    os.kill(pids[reboot], signal.SIGUSR1)  # the guest reboots
    stopped = cloud.wait_states([off, crash], "stopped")
    assert stopped[off]["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"
    assert stopped[crash]["StateReason"]["Code"] == "Server.InternalError"
    wait_for(f"{reboot}'s VMM to be replaced",
             lambda: cloud.pids(reboot) not in ([], [pids[reboot]]), timeout=10)
    assert len(cloud.pids(reboot)) == 1, cloud.pids(reboot)
    assert cloud.state(reboot) == "running"
    assert not cloud.pids(off) and not cloud.pids(crash)
    cloud.terminate(ids)


# --- 4. errors ----------------------------------------------------------------------------------

def test_errors_codes_and_statuses(cloud):
    ec2 = cloud.ec2
    missing = "i-0123456789abcdef0"
    assert ec2_error(ec2.describe_instances, InstanceIds=[missing]) == \
        ("InvalidInstanceID.NotFound", 400)
    assert cloud.aws_error("describe-instances", "--instance-ids", missing) == \
        "InvalidInstanceID.NotFound"
    assert ec2_error(ec2.stop_instances, InstanceIds=["instance-1"]) == \
        ("InvalidInstanceID.Malformed", 400)
    assert ec2_error(ec2.run_instances, ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1,
                     InstanceType="t3.nano") == ("InvalidAMIID.NotFound", 400)
    assert ec2_error(ec2.run_instances, ImageId="ami-nope", MinCount=1, MaxCount=1) == \
        ("InvalidAMIID.Malformed", 400)
    assert ec2_error(ec2.run_instances, ImageId=cloud.ami, MinCount=1, MaxCount=1,
                     InstanceType="t9.huge") == ("InvalidParameterValue", 400)
    assert ec2_error(ec2.run_instances, ImageId=cloud.ami, MinCount=1, MaxCount=1,
                     KeyName="no-such-key") == ("InvalidKeyPair.NotFound", 400)
    assert ec2_error(ec2.describe_instances,
                     Filters=[{"Name": "no-such-filter", "Values": ["x"]}]) == \
        ("InvalidParameterValue", 400)
    assert ec2_error(ec2.run_instances, MinCount=1, MaxCount=1) == ("MissingParameter", 400)
    assert ec2_error(ec2.stop_instances, InstanceIds=[]) == ("MissingParameter", 400)
    assert signed_request(cloud, {"Action": "NoSuchAction"}) == (400, "InvalidAction")
    assert signed_request(cloud, {"Action": "DescribeInstances", "Bogus": "1"}) == \
        (400, "UnknownParameter")

    # State errors, with EC2's idempotent cases: starting a running instance is no error.
    [iid] = cloud.run_running(1)
    again = ec2.start_instances(InstanceIds=[iid])["StartingInstances"]
    assert [(s["PreviousState"]["Name"], s["CurrentState"]["Name"]) for s in again] == [
        ("running", "running")]
    # Dry runs: 412, and nothing happens.
    assert ec2_error(ec2.describe_instances, DryRun=True) == ("DryRunOperation", 412)
    assert ec2_error(ec2.stop_instances, InstanceIds=[iid], DryRun=True) == ("DryRunOperation", 412)
    count = len(cloud.describe([]))
    assert ec2_error(ec2.run_instances, ImageId=cloud.ami, MinCount=1, MaxCount=1,
                     InstanceType="t3.nano", DryRun=True) == ("DryRunOperation", 412)
    assert ec2_error(ec2.run_instances, ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1,
                     DryRun=True) == ("InvalidAMIID.NotFound", 400)  # validated before the dry run
    assert cloud.aws_error("describe-instances", "--dry-run") == "DryRunOperation"
    assert len(cloud.describe([])) == count and cloud.state(iid) == "running"
    cloud.terminate([iid])
    assert cloud.aws_error("start-instances", "--instance-ids", iid) == "IncorrectInstanceState"
    assert ec2_error(ec2.start_instances, InstanceIds=[iid]) == ("IncorrectInstanceState", 400)
    assert ec2_error(ec2.stop_instances, InstanceIds=[iid]) == ("IncorrectInstanceState", 400)
    assert ec2_error(ec2.reboot_instances, InstanceIds=[iid]) == ("IncorrectInstanceState", 400)

    # Authentication.
    unsigned = cloud.client(signature_version=botocore.UNSIGNED)
    assert ec2_error(unsigned.describe_instances) == ("AuthFailure", 401)
    wrong = cloud.client(secret=("y" if cloud.secret[0] == "x" else "x") + cloud.secret[1:])
    assert ec2_error(wrong.describe_instances) == ("SignatureDoesNotMatch", 403)
    stranger = cloud.client(key="AKIAAAAAAAAAAAAAAAAA")
    assert ec2_error(stranger.describe_instances) == ("AuthFailure", 401)

    # Capacity: a ternd that keeps (nearly) all memory for the host has none for instances.
    home = os.path.join(cloud.work, "full-home")
    os.mkdir(home)
    full = Ternd(cloud.work, "full-state", home, extra=["--reserve-memory", str(1 << 40)])
    cloud.daemons.append(full)
    full.start()
    creds = configparser.ConfigParser()
    creds.read(os.path.join(home, ".aws", "credentials"))
    full_ec2 = cloud.client(key=creds["tern"]["aws_access_key_id"],
                            secret=creds["tern"]["aws_secret_access_key"], url=full.url)
    full_ami = full_ec2.register_image(Name="fake-ami", ImageLocation=cloud.ami_dir)["ImageId"]
    assert ec2_error(full_ec2.run_instances, ImageId=full_ami, MinCount=1, MaxCount=1,
                     InstanceType="t3.nano") == ("InsufficientInstanceCapacity", 500)
    assert full_ec2.describe_instances()["Reservations"] == []
    full.kill(signal.SIGTERM)
    if (os.cpu_count() or 1) < 4:  # m5.xlarge has 4 vCPUs: more than this host's CPUs
        assert ec2_error(ec2.run_instances, ImageId=cloud.ami, MinCount=1, MaxCount=1,
                         InstanceType="m5.xlarge") == ("InsufficientInstanceCapacity", 500)

    # Still serving.
    assert cloud.ternd.alive()
    assert ec2.describe_instances()["ResponseMetadata"]["HTTPStatusCode"] == 200


# --- 5. ClientToken, user data ------------------------------------------------------------------

def test_client_token_idempotency(cloud):
    token = f"token-{uuid.uuid4()}"
    before = len(cloud.describe([]))
    first = cloud.ec2.run_instances(ImageId=cloud.ami, MinCount=1, MaxCount=1,
                                    InstanceType="t3.nano", ClientToken=token)
    [iid] = [i["InstanceId"] for i in first["Instances"]]
    second = cloud.ec2.run_instances(ImageId=cloud.ami, MinCount=1, MaxCount=1,
                                     InstanceType="t3.nano", ClientToken=token)
    assert [i["InstanceId"] for i in second["Instances"]] == [iid]
    assert second["ReservationId"] == first["ReservationId"]
    third = cloud.aws("run-instances", "--image-id", cloud.ami, "--count", "1", "--instance-type",
                      "t3.nano", "--client-token", token)
    assert [i["InstanceId"] for i in third["Instances"]] == [iid]
    cloud.wait_states([iid], "running")
    assert len(cloud.describe([])) == before + 1
    assert cloud.describe([iid])[iid]["ClientToken"] == token
    assert len(cloud.pids(iid)) == 1, cloud.pids(iid)
    cloud.terminate([iid])


def test_client_token_reused_with_other_parameters_is_refused(cloud):
    # EC2 API reference, "Ensuring idempotency": the same client token with different request
    # parameters is refused with IdempotentParameterMismatch.
    token = f"token-{uuid.uuid4()}"
    [iid] = cloud.run(1, "t3.nano", ClientToken=token)
    try:
        assert ec2_error(cloud.ec2.run_instances, ImageId=cloud.ami, MinCount=1, MaxCount=1,
                         InstanceType="t3.micro", ClientToken=token) == \
            ("IdempotentParameterMismatch", 400)
    finally:
        cloud.terminate([iid])


def test_user_data_round_trip(cloud):
    script = "#!/bin/sh\necho hello from user data\n"
    # The aws CLI and boto3 base64-encode RunInstances' UserData themselves.
    run = cloud.aws("run-instances", "--image-id", cloud.ami, "--count", "1", "--instance-type",
                    "t3.nano", "--user-data", script)
    iid = run["Instances"][0]["InstanceId"]
    try:
        out = cloud.aws("describe-instance-attribute", "--instance-id", iid,
                        "--attribute", "userData")
        assert out["InstanceId"] == iid
        assert out["UserData"]["Value"] == base64.b64encode(script.encode()).decode()
        out = cloud.ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceType")
        assert out["InstanceType"]["Value"] == "t3.nano"
    finally:
        cloud.terminate([iid])


# --- 6. ModifyInstanceAttribute ----------------------------------------------------------------

def test_modify_instance_attribute(cloud):
    [iid] = cloud.run_running(1, "t3.nano", UserData="first")
    try:
        assert cloud.aws_error("modify-instance-attribute", "--instance-id", iid,
                               "--instance-type", "Value=t3.small") == "IncorrectInstanceState"
        cloud.ec2.stop_instances(InstanceIds=[iid])
        cloud.wait_states([iid], "stopped")

        cloud.aws("modify-instance-attribute", "--instance-id", iid,
                  "--instance-type", "Value=t3.small")
        assert cloud.describe([iid])[iid]["InstanceType"] == "t3.small"
        out = cloud.aws("describe-instance-attribute", "--instance-id", iid,
                        "--attribute", "instanceType")
        assert out["InstanceType"]["Value"] == "t3.small"

        second = base64.b64encode(b"#!/bin/sh\necho second\n").decode()
        # A blob: the aws CLI v2 takes it base64-encoded (cli_binary_format base64).
        cloud.aws("modify-instance-attribute", "--instance-id", iid,
                  "--user-data", "Value=" + second)
        out = cloud.aws("describe-instance-attribute", "--instance-id", iid,
                        "--attribute", "userData")
        assert out["UserData"]["Value"] == second

        assert ec2_error(cloud.ec2.modify_instance_attribute, InstanceId=iid,
                         InstanceType={"Value": "t9.huge"}) == ("InvalidParameterValue", 400)
        assert cloud.aws_error("modify-instance-attribute", "--instance-id", iid, "--attribute",
                               "kernel", "--value", "x") == "UnsupportedOperation"
        assert cloud.describe([iid])[iid]["InstanceType"] == "t3.small"  # unchanged by the errors

        # The next launch uses the new type (the VMM's configuration: 2048 MiB for t3.small).
        cloud.ec2.start_instances(InstanceIds=[iid])
        cloud.wait_states([iid], "running")
        with open(os.path.join(cloud.instance_dir(iid), "vmm-config.json")) as f:
            assert json.load(f)["machine-config"]["mem_size_mib"] == 2048
    finally:
        cloud.terminate([iid])


# --- 7. durability ------------------------------------------------------------------------------

def test_ternd_crash_adopts_vmms_and_notices_lost_ones(cloud):
    kept, lost = ids = cloud.run_running(2)
    pids = {i: cloud.one_pid(i) for i in ids}
    creds = read_bytes(os.path.join(cloud.aws_dir, "credentials"))

    cloud.ternd.kill(signal.SIGKILL)
    assert {i: cloud.pids(i) for i in ids} == {i: [p] for i, p in pids.items()}  # VMMs outlive it
    cloud.restart()
    states = cloud.describe(ids)
    assert {i: s["State"]["Name"] for i, s in states.items()} == {kept: "running", lost: "running"}
    # Adopted, not relaunched: the same processes, one per instance, also a moment later.
    assert {i: cloud.pids(i) for i in ids} == {i: [p] for i, p in pids.items()}
    cloud.ec2.describe_instances()
    assert {i: cloud.pids(i) for i in ids} == {i: [p] for i, p in pids.items()}

    # A VMM that dies while no ternd watches: its instance is found stopped, not relaunched.
    cloud.ternd.kill(signal.SIGKILL)
    os.kill(pids[lost], signal.SIGKILL)
    wait_for(f"{lost}'s VMM to exit", lambda: not cloud.pids(lost), timeout=5)
    cloud.restart()
    stopped = cloud.wait_states([lost], "stopped")[lost]
    assert stopped["StateReason"]["Code"] == "Server.InternalError"
    assert cloud.state(kept) == "running" and cloud.pids(kept) == [pids[kept]]
    assert cloud.pids(lost) == []
    assert read_bytes(os.path.join(cloud.aws_dir, "credentials")) == creds  # kept at restarts
    cloud.terminate(ids)


def test_ternd_crash_right_after_run_instances_launches_once(cloud):
    # An AMI whose root disk is 64 MiB of data (not sparse), every 4 KiB block numbered: its copy
    # for a new instance takes long enough that the SIGKILL lands while the launch goes on.
    ami_dir = os.path.join(cloud.work, "ami-full")
    os.mkdir(ami_dir)
    shutil.copy(os.path.join(cloud.ami_dir, "vmlinuz"), ami_dir)
    digest = hashlib.sha256()
    with open(os.path.join(ami_dir, "rootfs.raw"), "wb") as f:
        for block in range(64 * 256):
            data = (b"block %08d " % block).ljust(4096, b".")
            digest.update(data)
            f.write(data)
    ami = cloud.ec2.register_image(Name="fake-ami-full", ImageLocation=ami_dir)["ImageId"]
    launched, damaged = [], []
    try:
        for _ in range(3):
            [iid] = cloud.run(1, ImageId=ami)
            cloud.ternd.kill(signal.SIGKILL)  # while its launch is likely still going on
            launched.append(iid)
            phase = "its VMM was up" if cloud.pids(iid) else "its VMM was not up yet"
            cloud.restart()
            cloud.wait_states([iid], "running")
            pid = cloud.one_pid(iid)
            cloud.ec2.describe_instances()  # a moment later, still the one VMM
            assert cloud.pids(iid) == [pid]
            # The guest's disk is the AMI's, whole: a copy cut short by the crash is not kept.
            with open(os.path.join(cloud.instance_dir(iid), "root.raw"), "rb") as f:
                if hashlib.file_digest(f, "sha256").digest() != digest.digest():
                    damaged.append(f"{iid} (at the kill, {phase})")
        assert not damaged, f"root disks that differ from their AMI's: {damaged}"
    finally:
        if launched:
            cloud.terminate(launched)
        cloud.ec2.deregister_image(ImageId=ami)


def test_ternd_crash_during_stop_instances_still_stops(cloud):
    # An AMI whose guest ignores the power button: its stop lasts until the shutdown timeout
    # (2 s here), so the SIGKILL lands while the instance is stopping.
    ami_dir = os.path.join(cloud.work, "ami-deaf")
    os.mkdir(ami_dir)
    for name in ("vmlinuz", "rootfs.raw"):
        subprocess.run(["cp", "--sparse=always", os.path.join(cloud.ami_dir, name), ami_dir],
                       check=True)
    with open(os.path.join(ami_dir, "cmdline"), "w") as f:
        f.write("console=ttyS0 tern_fake_vmm=ignore-shutdown\n")
    ami = cloud.ec2.register_image(Name="fake-ami-deaf", ImageLocation=ami_dir)["ImageId"]
    [iid] = cloud.run_running(1, ImageId=ami)
    cloud.one_pid(iid)
    cloud.ec2.stop_instances(InstanceIds=[iid])
    assert cloud.state(iid) == "stopping"
    cloud.ternd.kill(signal.SIGKILL)
    cloud.restart()
    # The accepted stop is not lost: the restarted ternd finishes it, and no VMM is left.
    stopped = cloud.wait_states([iid], "stopped", timeout=30)[iid]
    assert stopped["StateTransitionReason"].startswith("User initiated"), stopped
    wait_for(f"{iid}'s VMM to exit", lambda: not cloud.pids(iid), timeout=10)
    cloud.ec2.start_instances(InstanceIds=[iid])
    cloud.wait_states([iid], "running")
    cloud.one_pid(iid)
    cloud.terminate([iid])
    cloud.ec2.deregister_image(ImageId=ami)


# --- 8. images ------------------------------------------------------------------------------------

def test_images(cloud):
    [image] = cloud.aws("describe-images", "--image-ids", cloud.ami)["Images"]
    assert (image["ImageId"], image["Name"], image["State"], image["Architecture"]) == (
        cloud.ami, "fake-ami", "available", "x86_64")
    owned = cloud.aws("describe-images", "--owners", "self", "--filters", "Name=name,Values=fake-*")
    assert cloud.ami in [i["ImageId"] for i in owned["Images"]]
    assert cloud.aws_error("register-image", "--name", "fake-ami", "--image-location",
                           cloud.ami_dir) == "InvalidAMIName.Duplicate"
    assert ec2_error(cloud.ec2.register_image, Name="nowhere",
                     ImageLocation=os.path.join(cloud.work, "no-such-dir")) == \
        ("InvalidParameterValue", 400)

    [iid] = cloud.run_running(1)
    cloud.ec2.stop_instances(InstanceIds=[iid])
    cloud.wait_states([iid], "stopped")
    copy = cloud.aws("create-image", "--instance-id", iid, "--name", "fake-copy")["ImageId"]
    cloud.aws("wait", "image-available", "--image-ids", copy)
    [described] = cloud.ec2.describe_images(ImageIds=[copy])["Images"]
    assert (described["Name"], described["State"]) == ("fake-copy", "available")
    [child] = cloud.run_running(1, ImageId=copy)  # the new image launches
    cloud.terminate([iid, child])

    assert cloud.aws("deregister-image", "--image-id", copy) is None
    assert ec2_error(cloud.ec2.describe_images, ImageIds=[copy]) == ("InvalidAMIID.NotFound", 400)
    assert copy not in [i["ImageId"] for i in cloud.ec2.describe_images()["Images"]]
    assert ec2_error(cloud.ec2.run_instances, ImageId=copy, MinCount=1, MaxCount=1) == \
        ("InvalidAMIID.NotFound", 400)


# --- 9. key pairs -------------------------------------------------------------------------------

def colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def ssh_blob(public_line: str) -> bytes:
    return base64.b64decode(public_line.split()[1])


def test_key_pairs(cloud, tmp_path):
    # Created RSA: EC2's fingerprint is the SHA-1 of the private key's PKCS#8 DER.
    rsa = cloud.aws("create-key-pair", "--key-name", "made-rsa")
    assert rsa["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    private = serialization.load_pem_private_key(rsa["KeyMaterial"].encode(), password=None)
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    assert rsa["KeyFingerprint"] == colon_hex(hashlib.sha1(pkcs8).digest())
    assert re.fullmatch(r"key-[0-9a-f]{17}", rsa["KeyPairId"])

    # Created ED25519: an OpenSSH private key that ssh-keygen reads; fingerprint SHA-256, base64.
    ed = cloud.ec2.create_key_pair(KeyName="made-ed25519", KeyType="ed25519")
    assert ed["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    key_file = tmp_path / "ed25519"
    key_file.write_text(ed["KeyMaterial"])
    key_file.chmod(0o600)
    r = subprocess.run(["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ed["KeyFingerprint"] == \
        base64.b64encode(hashlib.sha256(ssh_blob(r.stdout)).digest()).decode()

    # Imported: an RSA key's fingerprint is the MD5 of its public key's DER; ED25519 as above.
    # (EC2 imports RSA keys of 1024, 2048 or 4096 bits; ssh-keygen's default is 3072.)
    imported = {}
    for kind in ("rsa", "ed25519"):
        path = tmp_path / f"id_{kind}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-b", "2048", "-N", "", "-f", str(path)],
                       check=True)
        out = cloud.aws("import-key-pair", "--key-name", f"imported-{kind}",
                        "--public-key-material", f"fileb://{path}.pub")
        public = (tmp_path / f"id_{kind}.pub").read_text()
        if kind == "rsa":
            der = serialization.load_ssh_public_key(public.encode()).public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            expected = colon_hex(hashlib.md5(der).digest())
        else:
            expected = base64.b64encode(hashlib.sha256(ssh_blob(public)).digest()).decode()
            shown = subprocess.run(["ssh-keygen", "-l", "-f", f"{path}.pub"], capture_output=True,
                                   text=True, check=True).stdout.split()[1]
            assert shown == "SHA256:" + expected.rstrip("=")
        assert out["KeyFingerprint"] == expected
        imported[kind] = out

    listed = {k["KeyName"]: k for k in cloud.aws("describe-key-pairs")["KeyPairs"]}
    assert {n: (k["KeyType"], k["KeyFingerprint"]) for n, k in listed.items()
            if n.startswith(("made-", "imported-"))} == {
        "made-rsa": ("rsa", rsa["KeyFingerprint"]),
        "made-ed25519": ("ed25519", ed["KeyFingerprint"]),
        "imported-rsa": ("rsa", imported["rsa"]["KeyFingerprint"]),
        "imported-ed25519": ("ed25519", imported["ed25519"]["KeyFingerprint"])}
    only = cloud.ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["imported-*"]}])
    assert sorted(k["KeyName"] for k in only["KeyPairs"]) == ["imported-ed25519", "imported-rsa"]

    assert cloud.aws_error("create-key-pair", "--key-name", "made-rsa") == \
        "InvalidKeyPair.Duplicate"
    assert ec2_error(cloud.ec2.import_key_pair, KeyName="junk",
                     PublicKeyMaterial=b"ssh-rsa bm90IGEga2V5") == ("InvalidKey.Format", 400)

    for name in ("made-rsa", "made-ed25519", "imported-rsa", "imported-ed25519"):
        cloud.aws("delete-key-pair", "--key-name", name)
    assert cloud.aws_error("describe-key-pairs", "--key-names", "made-rsa") == \
        "InvalidKeyPair.NotFound"
    cloud.ec2.delete_key_pair(KeyName="made-rsa")  # deleting an absent key is no error in EC2


def test_describe_key_pairs_includes_the_public_key_on_request(cloud, tmp_path):
    # EC2 API reference, DescribeKeyPairs: with IncludePublicKey=true, each key pair's publicKey.
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text()
    cloud.ec2.import_key_pair(KeyName="with-public-key", PublicKeyMaterial=public.encode())
    try:
        [key] = cloud.ec2.describe_key_pairs(KeyNames=["with-public-key"],
                                             IncludePublicKey=True)["KeyPairs"]
        assert key.get("PublicKey", "(none)").split()[:2] == public.split()[:2]
    finally:
        cloud.ec2.delete_key_pair(KeyName="with-public-key")


# --- the `tern` command line ---------------------------------------------------------------------

TERN = binary("tern")


def tern(cloud, *args, home=None, url=None) -> subprocess.CompletedProcess:
    """`tern` with the [tern] profile ternd wrote (HOME), against the module's ternd."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = home or cloud.home
    return subprocess.run([TERN, "--endpoint-url", url or cloud.url, *args], env=env,
                          capture_output=True, text=True, timeout=60)


def tern_ok(cloud, *args) -> str:
    r = tern(cloud, *args)
    assert r.returncode == 0, f"tern {' '.join(args)}: {r.stderr}"
    return r.stdout


def test_tern_cli_everyday_path(cloud, tmp_path):
    image = tern_ok(cloud, "image", "register", "cli-ami", cloud.ami_dir).strip()
    assert re.fullmatch(r"ami-[0-9a-f]{17}", image)
    assert "cli-ami" in tern_ok(cloud, "image", "ls")
    user_data = tmp_path / "user-data"
    user_data.write_text("#!/bin/sh\necho from-tern\n")
    r = tern(cloud, "run", "cli-ami", "--type", "t3.nano", "--name", "web", "--count", "2",
             "--user-data", str(user_data))
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == 2 and all(re.fullmatch(r"i-[0-9a-f]{17}", i) for i in ids), r.stdout
    assert all(f"{i}: running" in r.stderr for i in ids), r.stderr  # the progress it showed
    described = cloud.describe(ids)
    assert {d["State"]["Name"] for d in described.values()} == {"running"}
    assert {d["ImageId"] for d in described.values()} == {image}
    attribute = cloud.ec2.describe_instance_attribute(InstanceId=ids[0], Attribute="userData")
    assert base64.b64decode(attribute["UserData"]["Value"]) == b"#!/bin/sh\necho from-tern\n"
    listing = tern_ok(cloud, "ls").splitlines()
    assert listing[0].split()[:3] == ["INSTANCE", "NAME", "STATE"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert rows[ids[0]][1:4] == ["web", "running", "t3.nano"], listing
    assert f"{ids[0]}: running -> stopping" in tern_ok(cloud, "stop", ids[0])
    assert cloud.state(ids[0]) == "stopped"  # tern stop waited for it
    assert f"{ids[0]}: stopped -> pending" in tern_ok(cloud, "start", ids[0])
    assert cloud.state(ids[0]) == "running"
    assert tern_ok(cloud, "reboot", ids[1]) == f"{ids[1]}: rebooting\n"
    # tern_fake_vmm prints nothing: put a line where ternd keeps the serial console.
    with open(os.path.join(cloud.instance_dir(ids[1]), "console.log"), "a") as f:
        f.write("tern-cli: console line é\n")
    assert "tern-cli: console line é" in tern_ok(cloud, "console", ids[1])
    out = tern_ok(cloud, "rm", *ids)
    assert all(f"{i}: running -> shutting-down" in out for i in ids), out
    assert {d["State"]["Name"] for d in cloud.describe(ids).values()} == {"terminated"}


def test_tern_cli_errors_are_one_line(cloud, tmp_path):
    def one_line_error(r, expected: str):
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("tern: "), r.stderr
        assert expected in r.stderr, r.stderr

    one_line_error(tern(cloud, "stop", "i-0123456789abcdef0"), "InvalidInstanceID.NotFound")
    one_line_error(tern(cloud, "rm", "instance-1"), "InvalidInstanceID.Malformed")
    one_line_error(tern(cloud, "run", "no-such-image"), "no image named 'no-such-image'")
    one_line_error(tern(cloud, "run", "ami-0123456789abcdef0"), "InvalidAMIID.NotFound")
    one_line_error(tern(cloud, "ls", url=f"http://127.0.0.1:{free_port()}"), "ConnectionFailed")
    one_line_error(tern(cloud, "ls", url="ftp://example"), "is not http://HOST:PORT")
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    one_line_error(tern(cloud, "ls", home=str(empty_home)), "start ternd once")
    for args in (("run",), ("run", "x", "--count", "0"), ("frobnicate",), ("stop",)):
        bad = tern(cloud, *args)  # usage errors: one line, exit 2
        assert bad.returncode == 2 and bad.stderr.startswith("tern: "), (args, bad.stderr)
        assert bad.stderr.count("\n") == 1, (args, bad.stderr)
    assert cloud.ec2.describe_instances()["ResponseMetadata"]["HTTPStatusCode"] == 200
