"""Shared helpers: the recorded corpus (copied from ../shared/corpus) and a scan helper."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest

from diag import rules
from diag.pipeline import Pipeline
from diag.report import to_json

CORPUS = Path(__file__).parent / "data" / "corpus"
VLLM = CORPUS / "vllm" / "real-0.32.0-cpu"
LLAMA = CORPUS / "llamacpp" / "real-b0c1e57-cpu"


@pytest.fixture(scope="session")
def ruleset():
    rs = rules.load()
    assert not rs.errors, rs.errors
    return rs


_cache: dict[tuple, dict] = {}


def scan(*paths: Path | str, rules_dirs=(), fmt=None) -> dict:
    """Run the real pipeline over files and return the `diag scan --json` document."""
    key = (tuple(str(p) for p in paths), tuple(rules_dirs), fmt)
    if key not in _cache:
        rs = rules.load(rules_dirs)
        pipe = Pipeline(rs)
        for p in paths:
            pipe.scan_path(str(p), fmt)
        pipe.finish()
        _cache[key] = to_json(pipe)
    return _cache[key]


def traces(doc: dict) -> dict[str, dict]:
    return {t["id"]: t for t in doc["traces"]}


def statuses(doc: dict) -> Counter:
    return Counter(t["status"] for t in doc["traces"])


def findings(doc: dict) -> dict[str, dict]:
    return {f["rule"]: f for f in doc["findings"]}


def severe(doc: dict) -> set[str]:
    return {f["rule"] for f in doc["findings"] if f["severity"] in ("error", "critical")}


def wait_for(cond, timeout: float = 60.0, what: str = "condition"):
    """Poll `cond` until it returns something truthy (returned), or fail after `timeout` seconds."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl CLI (skips without it)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def free_port() -> int:
    """A port nothing listens on right now (bind 0, read it back, close)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Receiver:
    """A real HTTP receiver on loopback that records every request (for the alert sinks).

    `status` is what it answers (set 503 to play a receiver that is down); `answer` the JSON body.
    """

    def __init__(self, status: int = 200, answer: bytes = b'{"code":0,"errcode":0}', tls: tuple[Path, Path] | None = None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.status = status
        self.answer = answer
        self.cond = threading.Condition()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with rec.cond:
                    status = rec.status
                    if status < 300:
                        rec.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                             "time": __import__("time").time()})
                    rec.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(rec.answer)))
                self.end_headers()
                self.wfile.write(rec.answer)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:  # (certificate, key): serve HTTPS
            import ssl

            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json(self) -> list:
        import json

        with self.cond:
            return [json.loads(r["body"]) for r in self.requests]

    def wait(self, n: int, timeout: float = 30.0) -> list:
        """The first n JSON bodies, waiting for them to arrive."""
        import time

        deadline = time.time() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"receiver got {len(self.requests)} request(s), expected {n}")
                self.cond.wait(left)
        return self.json()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
