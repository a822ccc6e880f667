# System tests of tern-vmm's control API on its Unix socket, run on this machine (no guest
# boots here: configuration, state checks, error handling, the OpenAPI document, the config
# file). Booting through the API is tested in the test host (test_api_lifecycle.py).
import json
import os
import re
import subprocess

import pytest
import yaml

from api_client import Api
from vmm_session import REPO, vmm_path

OPENAPI = os.path.join(REPO, "docs", "api", "openapi.yaml")


@pytest.fixture
def vmm(tmp_path):
    sock = str(tmp_path / "api.sock")
    proc = subprocess.Popen([vmm_path(), "--api-sock", sock, "--id", "test-vm"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    api = Api(sock)
    api.wait_ready()
    yield api
    # Whatever a test sent, the VMM must still be running and answering.
    assert proc.poll() is None, proc.stdout.read().decode()
    assert api.get("/")[0] == 200
    proc.kill()
    proc.wait()


def fault(response):
    status, body = response
    assert status == 400, response
    assert set(body) == {"fault_message"} and body["fault_message"], response
    return body["fault_message"]


def test_instance_info_before_start(vmm):
    status, info = vmm.get("/")
    assert status == 200
    assert info["id"] == "test-vm" and info["state"] == "Not started"
    assert info["app_name"] == "tern" and re.match(r"^\d+\.\d+\.\d+$", info["vmm_version"])


def test_machine_config_put_patch_get(vmm):
    assert vmm.put("/machine-config", {"vcpu_count": 2, "mem_size_mib": 512}) == (204, None)
    assert vmm.patch("/machine-config", {"mem_size_mib": 1024}) == (204, None)
    status, config = vmm.get("/machine-config")
    assert status == 200
    assert config["vcpu_count"] == 2 and config["mem_size_mib"] == 1024 and config["smt"] is False
    assert "mem_size_mib" in fault(vmm.put("/machine-config", {"vcpu_count": 2}))
    assert "vcpu_count" in fault(vmm.patch("/machine-config", {"vcpu_count": 0}))
    assert "vcpu_count" in fault(vmm.patch("/machine-config", {"vcpu_count": "two"}))
    assert "`bogus`" in fault(vmm.patch("/machine-config", {"bogus": 1}))
    assert vmm.get("/machine-config")[1]["mem_size_mib"] == 1024  # refused requests changed nothing


def test_full_configuration_round_trips_through_vm_config(vmm, tmp_path):
    assert vmm.put("/boot-source", {"kernel_image_path": "/k", "initrd_path": "/i",
                                    "boot_args": "console=ttyS0"}) == (204, None)
    assert vmm.put("/drives/rootfs", {"drive_id": "rootfs", "path_on_host": "/r.img",
                                      "is_root_device": True, "is_read_only": False}) == (204, None)
    assert vmm.put("/drives/data", {"drive_id": "data", "path_on_host": "/d.img",
                                    "is_root_device": False, "io_engine": "Sync"}) == (204, None)
    assert vmm.patch("/drives/data", {"drive_id": "data", "path_on_host": "/d2.img"}) == (204, None)
    assert vmm.put("/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0",
                                                "guest_mac": "06:00:ac:10:00:02"}) == (204, None)
    assert vmm.put("/metrics", {"metrics_path": str(tmp_path / "m.json")}) == (204, None)
    assert "no balloon" in fault(vmm.get("/balloon"))
    assert vmm.put("/balloon", {"amount_mib": 0, "deflate_on_oom": True,
                                "stats_polling_interval_s": 1}) == (204, None)
    assert vmm.patch("/balloon", {"amount_mib": 64}) == (204, None)
    assert vmm.get("/balloon") == (200, {"amount_mib": 64, "deflate_on_oom": True,
                                         "stats_polling_interval_s": 1})
    assert "guest_cid" in fault(vmm.put("/vsock", {"guest_cid": 2, "uds_path": "/v.sock"}))
    assert vmm.put("/vsock", {"guest_cid": 3, "uds_path": "/v.sock"}) == (204, None)
    status, config = vmm.get("/vm/config")
    assert status == 200
    assert config["boot-source"] == {"kernel_image_path": "/k", "initrd_path": "/i",
                                     "boot_args": "console=ttyS0"}
    assert [d["path_on_host"] for d in config["drives"]] == ["/r.img", "/d2.img"]
    assert config["network-interfaces"][0]["guest_mac"] == "06:00:ac:10:00:02"
    assert config["balloon"]["amount_mib"] == 64 and config["vsock"]["guest_cid"] == 3
    # The exported configuration is a valid --config-file: tern-vmm accepts it and goes on to
    # boot (which fails here, on a host without usable KVM or without /k, but not on the file).
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    check = subprocess.run([vmm_path(), "--config-file", str(path)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 1 and "--config-file" not in check.stderr, check.stderr


def test_bad_drive_and_interface_requests_are_refused(vmm):
    base = {"drive_id": "a", "path_on_host": "/a", "is_root_device": True}
    assert "differs" in fault(vmm.put("/drives/b", base))
    assert "is_root_device" in fault(vmm.put("/drives/a", {"drive_id": "a", "path_on_host": "/a"}))
    assert "invalid id" in fault(vmm.put("/drives/bad-id!", dict(base, drive_id="bad-id!")))
    assert vmm.put("/drives/a", base) == (204, None)
    assert "root device" in fault(vmm.put("/drives/b", dict(base, drive_id="b")))
    assert "no such drive" in fault(vmm.patch("/drives/zz", {"drive_id": "zz", "path_on_host": "/z"}))
    assert "cache_type" in fault(vmm.put("/drives/a", dict(base, cache_type="Fast")))
    assert "guest_mac" in fault(vmm.put("/network-interfaces/e", {
        "iface_id": "e", "host_dev_name": "tap0", "guest_mac": "zz:00:00:00:00:00"}))
    assert "host_dev_name" in fault(vmm.put("/network-interfaces/e", {
        "iface_id": "e", "host_dev_name": "a/b"}))
    assert "no such network interface" in fault(vmm.patch("/network-interfaces/q", {"iface_id": "q"}))


def test_malformed_bodies_and_paths_get_400(vmm):
    assert "malformed JSON" in fault(vmm.put("/boot-source", raw=b'{"kernel_image_path": '))
    assert "JSON object" in fault(vmm.put("/boot-source", raw=b'[1, 2]'))
    assert "needs a JSON body" in fault(vmm.put("/boot-source", raw=b""))
    assert "exceeds 51200 bytes" in fault(vmm.put("/boot-source", raw=b"{" + b" " * (1 << 20) + b"}"))
    assert "Invalid request method and/or path" in fault(vmm.get("/nothing"))
    assert "Invalid request method and/or path" in fault(vmm.request("DELETE", "/machine-config"))
    assert "Invalid request" in fault(vmm.get("/?x=1"))
    assert "not a valid action_type" in fault(vmm.put("/actions", {"action_type": "Explode"}))
    assert "unknown field" in fault(vmm.put("/actions", {"action_type": "InstanceStart", "x": 1}))


def test_state_checks_before_start(vmm):
    assert "not been started" in fault(vmm.patch("/vm", {"state": "Paused"}))
    assert "not been started" in fault(vmm.patch("/vm", {"state": "Resumed"}))
    assert "not been started" in fault(vmm.put("/actions", {"action_type": "SendCtrlAltDel"}))
    assert "no boot source" in fault(vmm.put("/actions", {"action_type": "InstanceStart"}))
    assert "no metrics file" in fault(vmm.put("/actions", {"action_type": "FlushMetrics"}))


def test_instance_start_on_a_host_without_usable_kvm_is_a_clear_400(vmm):
    assert vmm.put("/boot-source", {"kernel_image_path": "/nonexistent"}) == (204, None)
    message = fault(vmm.put("/actions", {"action_type": "InstanceStart"}))
    assert message.startswith("InstanceStart: ") and "\n" not in message
    assert vmm.get("/")[1]["state"] == "Not started"


def test_flush_metrics_appends_json_lines(vmm, tmp_path):
    path = tmp_path / "metrics.json"
    assert vmm.put("/metrics", {"metrics_path": str(path)}) == (204, None)
    for _ in range(2):
        assert vmm.put("/actions", {"action_type": "FlushMetrics"}) == (204, None)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    assert {"utc_timestamp_ms", "vcpu", "unknown_accesses", "devices"} <= set(lines[0])
    status, now = vmm.get("/metrics")
    assert status == 200 and now["unknown_accesses"] == {"port_io": 0, "mmio": 0}
    assert now["devices"] == {}  # no VM yet


def openapi_operations():
    with open(OPENAPI) as f:
        doc = yaml.safe_load(f)
    return doc, [(method.upper(), path) for path, item in doc["paths"].items()
                 for method in item if method in ("get", "put", "patch")]


def test_openapi_document_matches_the_server(vmm):
    doc, operations = openapi_operations()
    assert doc["openapi"].startswith("3.")
    for method, path in operations:
        concrete = path.replace("{drive_id}", "d1").replace("{iface_id}", "n1")
        status, body = vmm.request(method, concrete, raw=None if method == "GET" else b"{}")
        message = (body or {}).get("fault_message", "")
        assert "Invalid request method and/or path" not in message, (method, path, body)
        if method == "GET" and not path.startswith("/balloon"):
            assert status == 200, (method, path, body)
    # Operations the document does not list are refused.
    documented = set(operations)
    for method in ("GET", "PUT", "PATCH"):
        for path in ("/", "/boot-source", "/machine-config", "/actions", "/vm", "/vm/config",
                     "/metrics", "/drives/d1", "/network-interfaces/n1", "/balloon",
                     "/balloon/statistics", "/vsock", "/snapshot/create"):
            template = re.sub(r"^/drives/.*", "/drives/{drive_id}",
                              re.sub(r"^/network-interfaces/.*", "/network-interfaces/{iface_id}", path))
            if (method, template) in documented:
                continue
            status, body = vmm.request(method, path, raw=None if method == "GET" else b"{}")
            assert status == 400 and "Invalid request method and/or path" in body["fault_message"], \
                (method, path, body)


def test_config_file_errors_are_one_line(tmp_path):
    cases = {"broken.json": "{", "unknown.json": '{"boot-source": {"kernel_image_path": "/k", "x": 1}}',
             "toplevel.json": '{"balloons": {}}'}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        r = subprocess.run([vmm_path(), "--config-file", str(path)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "--config-file" in lines[0], r.stderr
    r = subprocess.run([vmm_path()], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "nothing to run" in r.stderr


def test_api_socket_that_exists_is_refused(tmp_path):
    sock = tmp_path / "taken.sock"
    sock.write_text("")
    r = subprocess.run([vmm_path(), "--api-sock", str(sock)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "--api-sock" in r.stderr and len(r.stderr.strip().splitlines()) == 1
