"""The daemon as a real process over real files: rotation, truncation, kill -9, bad input, reloads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import wait_for
from diag.store import Store

HERE = Path(__file__).parent


def start_daemon(state: Path, *logs: str, extra=(), env=None, prefix=()):
    args = [*prefix, sys.executable, "-m", "diag", "daemon", "--state-dir", str(state)]
    for lg in logs:
        args += ["--log", lg]
    errlog = open(state.parent / f"daemon-{time.time_ns()}.err", "w")
    return subprocess.Popen([*args, *extra], stderr=errlog, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})}), errlog.name


def status(state: Path) -> dict:
    """`diag status --json`; before the daemon created its store, an empty status."""
    r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)], capture_output=True, text=True)
    if r.returncode == 2 and "no diag store" in r.stderr:
        return {"sources": [], "traces": 0, "findings": 0}
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def stored_traces(state: Path) -> dict[str, dict]:
    s = Store(state / "diag.sqlite3", readonly=True)
    try:
        return {tid: s.trace(tid) for tid in s.trace_ids()}
    finally:
        s.close()


def test_exactly_once_through_rotations_and_two_kill9(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    log = logs / "vllm.log"  # absent at start: the daemon waits for it
    n = 24000
    plan = "3000=rename,6500=copytruncate,10000=rename,14000=copytruncate,18000=rename"
    d, _ = start_daemon(state, str(log))
    w = None
    try:
        time.sleep(1.0)
        w = subprocess.Popen([sys.executable, str(HERE / "daemon_writer.py"), str(log), str(n), "6000", plan],
                             stdout=subprocess.PIPE, text=True)
        for delay in (2.5, 3.5):  # SIGKILL twice while the writer is busy, restart each time
            time.sleep(delay)
            d.send_signal(signal.SIGKILL)
            d.wait()
            d, _ = start_daemon(state, str(log))
        out, _ = w.communicate(timeout=120)
        rate = float(out.split("(")[1].split()[0])
        assert rate >= 5000, out
        assert "5 rotations" in out
        wait_for(lambda: status(state)["traces"] >= n and all(s["lag_bytes"] == 0 for s in status(state)["sources"]), 90,
                 "the daemon to catch up")
        time.sleep(1)
        d.send_signal(signal.SIGTERM)
        assert d.wait(timeout=30) == 0
    finally:
        for p in (d, w):
            if p is not None and p.poll() is None:
                p.kill()
    traces = stored_traces(state)
    assert set(traces) == {f"chatcmpl-{i:016x}" for i in range(n)}  # zero lost, none extra
    dup = []
    for tid, t in traces.items():
        kinds = Counter(e["kind"] for e in t["timeline"])
        if kinds != Counter({"request.received": 1, "request.added": 1, "http.access": 1}):
            dup.append((tid, dict(kinds)))
    assert dup == [], dup  # every line processed exactly once
    assert Counter(t["status"] for t in traces.values()) == {"ok": n}
    st = status(state)
    src = st["sources"][0]
    assert src["rotations"] == 5 and src["lines_read"] == 3 * n


def test_deleted_and_recreated_file_and_glob_pickup(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    a = logs / "a.log"
    a.write_text("")
    d, err = start_daemon(state, str(logs / "*.log"), extra=("--from-beginning",))
    try:
        wait_for(lambda: status(state)["sources"], 20, "the first file")
        a.write_text("(APIServer pid=1) ERROR 01-24 10:00:00 [serving.py:274] Error with model error=ErrorInfo(message='The model `x1` does not exist.', type='NotFoundError', param='model', code=404)\n")
        wait_for(lambda: status(state)["findings"] == 1, 20, "a finding from a.log")
        a.unlink()
        time.sleep(0.5)
        a.write_text("(APIServer pid=1) ERROR 01-24 10:00:01 [serving.py:274] Error with model error=ErrorInfo(message='The model `x2` does not exist.', type='NotFoundError', param='model', code=404)\n")
        (logs / "b.log").write_text("RuntimeError: NCCL error: unhandled cuda error\n")
        wait_for(lambda: status(state)["findings"] == 3, 30, "the recreated file and the new glob match")
        s = Store(state / "diag.sqlite3", readonly=True)
        rules = sorted((f["rule"], f["fields"].get("model")) for f in s.findings())
        assert rules == [("nccl-error", None), ("unknown-model", "x1"), ("unknown-model", "x2")]
    finally:
        d.terminate()
        assert d.wait(timeout=30) == 0


def test_long_lines_garbage_partial_lines_and_permission_denied(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    good, locked = logs / "good.log", logs / "locked.log"
    good.write_bytes(b"")
    locked.write_text("Fatal Python error: Illegal instruction\n")
    locked.chmod(0)
    prefix = ()
    if os.geteuid() == 0:  # root reads anything: drop its capabilities so mode 000 really is unreadable
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
        prefix = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all")
    d, err = start_daemon(state, str(good), str(locked), extra=("--from-beginning",), prefix=prefix)
    try:
        wait_for(lambda: any("permission denied" in (s["last_error"] or "") for s in status(state)["sources"]), 20, "the error")
        with open(good, "ab") as f:
            f.write(b"x" * (10 * 1024 * 1024) + b"\n")  # 10 MB line
            f.write(os.urandom(100_000).replace(b"\n", b"") + b"\n")  # binary garbage
            f.write(b"\xff\xfe invalid utf-8 \x00 NUL\n")
            f.write(b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")  # no newline yet
        wait_for(lambda: status(state)["findings"] >= 1, 30, "the unterminated last line to be flushed")
        st = {s["path"]: s for s in status(state)["sources"]}
        assert st[str(good)]["truncated_lines"] >= 1 and st[str(good)]["lines_read"] == 4
        locked.chmod(0o644)  # fixed: the daemon retries and reads it
        wait_for(lambda: status(state)["findings"] >= 2, 30, "the file once readable")
        s = Store(state / "diag.sqlite3", readonly=True)
        assert {f["rule"] for f in s.findings()} == {"cuda-oom", "fatal-python-error"}
        assert d.poll() is None  # still running
    finally:
        d.terminate()
        assert d.wait(timeout=30) == 0


def test_sighup_with_a_broken_rule_file_keeps_the_old_rules(tmp_path):
    logs, state, rules_dir = tmp_path / "logs", tmp_path / "state", tmp_path / "rules"
    for p in (logs, state, rules_dir):
        p.mkdir()
    log = logs / "vllm.log"
    log.write_text("")
    cfg = tmp_path / "diag.toml"
    cfg.write_text(f'[daemon]\nrules_dirs = ["{rules_dir}"]\n[[log]]\npath = "{log}"\n')
    d, err = start_daemon(state, extra=("--config", str(cfg)))
    try:
        wait_for(lambda: status(state)["sources"], 20, "startup")
        (rules_dir / "broken.toml").write_text("[[rule]]\nid = 'x'\ntitle = \n")
        d.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        with open(log, "a") as f:
            f.write("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
        wait_for(lambda: status(state)["findings"] == 1, 20, "the built-in rule still working")
        text = Path(err).read_text()
        assert "rules not reloaded" in text and "broken.toml" in text
        assert d.poll() is None
    finally:
        d.terminate()
        assert d.wait(timeout=30) == 0


def test_example_config_parses_and_check_config(tmp_path):
    from diag import config

    cfg = config.Config()
    import tomllib

    config.apply(cfg, tomllib.loads(config.example_path().read_text()), "example")
    assert [s.path for s in cfg.logs] == ["/var/log/vllm/vllm.log", "/var/log/proxy/*.log"] and cfg.stuck_after == 300
    r = subprocess.run([sys.executable, "-m", "diag", "daemon", "--check-config", "--config", str(config.example_path())],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "2 log(s)" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nstuck_after = 'soon'\n")
    r = subprocess.run([sys.executable, "-m", "diag", "daemon", "--check-config", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "stuck_after" in r.stderr


def test_sd_notify_ready_and_watchdog(tmp_path):
    import socket as so

    sock_path = tmp_path / "notify.sock"
    srv = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    srv.bind(str(sock_path))
    srv.settimeout(20)
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "x.log"
    log.write_text("")
    d, _ = start_daemon(state, str(log), env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
    try:
        got = []
        while not any("WATCHDOG=1" in m for m in got):
            got.append(srv.recv(4096).decode())
        assert any(m.startswith("READY=1") for m in got)
        assert got.index(next(m for m in got if m.startswith("READY=1"))) < got.index("WATCHDOG=1")
    finally:
        d.terminate()
        assert d.wait(timeout=30) == 0
        srv.close()


def test_systemd_unit_verifies(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (.ci/run installs it and verifies the unit)")
    diag_bin = shutil.which("diag") or str(Path(sys.executable).parent / "diag")
    unit = tmp_path / "diag.service"
    unit.write_text((HERE.parent / "systemd" / "diag.service").read_text().replace("/usr/local/bin/diag", diag_bin))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = unit.read_text()
    for want in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=diag", "ProtectSystem=strict",
                 "ProtectHome=", "NoNewPrivileges=yes", "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID", "--check-config"):
        assert want in text
    assert "PrivateDevices" not in text.replace("# Not PrivateDevices=", "")
