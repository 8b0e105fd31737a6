"""Serving from the command line: `diag daemon --web/--no-web`, tokens, `diag web`, `diag scan --store`, `[web]` config."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import VLLM, free_port
from diag.daemon import config


def diag(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diag", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_get(url: str, token: str | None = None, timeout: float = 30) -> tuple[int, bytes]:
    deadline = time.time() + timeout
    while True:
        try:
            return get(url, token)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def start(tmp_path: Path, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    errpath = tmp_path / f"daemon-{time.time_ns()}.err"
    p = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--state-dir", str(tmp_path / "state"), "--log",
                          str(VLLM / "text.log"), "--from-beginning", *extra], stderr=open(errpath, "w"),
                         stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return p, errpath


def wait_traces(state: Path, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    while True:
        r = diag("status", "--json", "--state-dir", str(state))
        n = json.loads(r.stdout)["traces"] if r.returncode == 0 else 0
        if n or time.time() > deadline:
            return n
        time.sleep(0.3)


def stop(p: subprocess.Popen) -> int:
    p.terminate()
    return p.wait(timeout=30)


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", "[::]:{port}", "192.0.2.1:{port}"])
def test_daemon_refuses_a_non_loopback_bind_without_a_token(tmp_path, listen):
    env = {k: v for k, v in os.environ.items() if k != "DIAG_WEB_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "diag", "daemon", "--state-dir", str(tmp_path), "--log", str(VLLM / "text.log"),
                        "--web", listen.format(port=free_port())], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a token" in lines[0] and lines[0].startswith("diag: refusing")
    assert not (tmp_path / "diag.sqlite3").exists()  # refused before reading anything


def test_daemon_serves_beyond_loopback_with_a_token_only_to_its_holders(tmp_path):
    port = free_port()
    p, err = start(tmp_path, "--web", f"0.0.0.0:{port}", env={"DIAG_WEB_TOKEN": "t0ken-xyz"})
    try:
        status, body = wait_get(f"http://127.0.0.1:{port}/api/status")
        assert status == 401
        assert wait_traces(tmp_path / "state") > 0
        status, body = get(f"http://127.0.0.1:{port}/metrics", "t0ken-xyz")
        assert status == 200 and b"diag_requests_total{" in body and b"diag_lines_read_total{" in body
        stream = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/events",
                                                               headers={"Authorization": "Bearer t0ken-xyz"}), timeout=10)
        assert stream.readline() == b"event: hello\n"  # a page is open on the live stream while the daemon stops
        t0 = time.time()
    finally:
        assert stop(p) == 0
    assert time.time() - t0 < 5
    assert stream.read().endswith(b"\n\n")  # the server ended the stream cleanly
    text = err.read_text()
    assert "(token required)" in text and "ERROR" not in text and "Traceback" not in text


def test_token_file_unreadable_or_empty_is_a_one_line_error(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for tf, what in ((tmp_path / "missing", "cannot read it"), (empty, "is empty")):
        cfg = tmp_path / "diag.toml"
        cfg.write_text(f'[web]\nlisten = "127.0.0.1:{free_port()}"\ntoken_file = "{tf}"\n')
        r = diag("daemon", "--config", str(cfg), "--state-dir", str(tmp_path), "--log", str(VLLM / "text.log"),
                 env={"DIAG_WEB_TOKEN": ""})
        assert r.returncode == 2 and what in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_daemon_without_web_and_with_its_port_taken_keeps_following(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        p, err = start(tmp_path, "--web", f"127.0.0.1:{port}")
        (tmp_path / "b").mkdir()
        q, err2 = start(tmp_path / "b", "--no-web")
        try:
            for state in (tmp_path / "state", tmp_path / "b" / "state"):
                assert wait_traces(state) > 0  # both follow their log
        finally:
            assert stop(p) == 0 and stop(q) == 0
    finally:
        taken.close()
    text = err.read_text()
    assert f"web: cannot listen on 127.0.0.1:{port}" in text and "the dashboard is off" in text
    assert "web:" not in err2.read_text()


def test_scan_into_a_store_then_serve_it_read_only(tmp_path):
    store = tmp_path / "pm"
    r = diag("scan", "--store", str(store), str(VLLM / "text.log"), str(VLLM / "oom-kv-no-blocks.log"))
    assert "stored" in r.stderr and (store / "diag.sqlite3").exists()
    before = (store / "diag.sqlite3").stat().st_mtime_ns
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "diag", "web", "--state-dir", str(store), "--listen", f"127.0.0.1:{port}"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        status, body = wait_get(f"http://127.0.0.1:{port}/api/traces?limit=500")
        traces = json.loads(body)["traces"]
        assert status == 200 and len(traces) > 5 and {t["model"] for t in traces} == {"tiny"}
        status, body = get(f"http://127.0.0.1:{port}/findings")
        assert status == 200 and b"Findings" in body
        status, body = get(f"http://127.0.0.1:{port}/")
        assert b"Scanned files" in body and b"oom-kv-no-blocks.log" in body
    finally:
        p.terminate()
        p.wait(timeout=30)
    assert "read-only" in p.stderr.read()
    assert (store / "diag.sqlite3").stat().st_mtime_ns == before  # served, not written


def test_web_without_a_store_is_a_one_line_error(tmp_path):
    r = diag("web", "--state-dir", str(tmp_path))
    assert r.returncode == 2 and "no diag store" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_web_config_section():
    cfg = config.Config()
    config.apply(cfg, {"web": {"listen": "0.0.0.0:9000", "token_file": "/etc/diag/token"}})
    assert (cfg.web_listen, cfg.web_token_file) == ("0.0.0.0:9000", "/etc/diag/token")
    config.apply(cfg, {"web": {"listen": "off"}})
    assert cfg.web_listen is None
    assert config.Config().web_listen == "127.0.0.1:8765"
    for bad in ({"web": {"port": 1}}, {"web": {"listen": 8765}}):
        with pytest.raises(config.ConfigError, match=r"\[web\]"):
            config.apply(config.Config(), bad)
