# A client for tern-vmm's control API (HTTP/1.1 on a Unix socket), for the system tests and
# benchmarks. Standard library only.
from __future__ import annotations

import http.client
import json
import socket
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket at `path`."""

    def __init__(self, path: str, timeout: float = 30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Api:
    """Requests to one tern-vmm API socket; each returns (status, parsed JSON body or None)."""

    def __init__(self, path: str):
        self.path = path

    def wait_ready(self, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.get("/")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def request(self, method: str, path: str, body=None, raw: bytes | None = None):
        conn = UnixHTTPConnection(self.path)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            return response.status, (json.loads(payload) if payload else None)
        finally:
            conn.close()

    def get(self, path):
        return self.request("GET", path)

    def put(self, path, body=None, raw=None):
        return self.request("PUT", path, body, raw)

    def patch(self, path, body=None, raw=None):
        return self.request("PATCH", path, body, raw)
