"""`diag doctor`'s logs check on a server that logs to journald (`--journal UNIT`, `[[journal]]`):
the recent part of the unit's journal read through the pipeline (`journalexport.read_recent`).
Real journal files written by systemd-journal-remote, read by the real journalctl, as in
tests/test_journal.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from test_journal import UNIT, append, corpus_lines, entry, pytestmark  # noqa: F401  (the skip without the tools)


def recent_entries(lines: list[bytes], now: float) -> list[bytes]:
    """The lines as logged now: vLLM's own time (`MM-DD HH:MM:SS`, local) and the journal's both recent."""
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(now)).encode()
    us = int(now * 1_000_000)
    return [entry(re.sub(rb"\b\d\d-\d\d \d\d:\d\d:\d\d\b", stamp, ln, count=1), i, __REALTIME_TIMESTAMP=str(us + i))
            for i, ln in enumerate(lines)]


def doctor(tmp_path: Path, jdir: Path, *extra: str, env: dict | None = None) -> dict:
    cfg = tmp_path / "diag.toml"
    cfg.write_text(f'[[journal]]\nunit = "{UNIT}"\ndirectory = "{jdir}"\n')
    r = subprocess.run([sys.executable, "-m", "diag", "doctor", "--json", "--config", str(cfg), "--check", "logs", *extra],
                       capture_output=True, text=True, timeout=120, env=env, check=False)
    doc = json.loads(r.stdout)
    return {c["id"]: c for c in doc["checks"]}["logs"]


def test_the_doctor_reads_the_recent_journal_of_a_unit(tmp_path):
    jdir = tmp_path / "j"
    jdir.mkdir()
    now = time.time()
    # an hour ago, out of the window: a wrong model name; now: the engine cannot hold one request
    append(jdir, [entry(b"(APIServer pid=1) ERROR 01-01 00:00:00 [serving.py:274] Error with model error=ErrorInfo(message="
                        b"'The model `old-name` does not exist.', type='NotFoundError', param='model', code=404)", 0,
                        __REALTIME_TIMESTAMP=str(int((now - 3600) * 1_000_000)))])
    append(jdir, recent_entries(corpus_lines("oom-kv-no-blocks.log"), now))
    logs = doctor(tmp_path, jdir)
    assert logs["status"] == "fail", logs
    assert any("kv-cache-no-blocks" in d for d in logs["details"]), logs["details"]
    assert not any("unknown-model" in d for d in logs["details"])  # (before the window)
    n = sum(1 for ln in corpus_lines("oom-kv-no-blocks.log") if ln)  # (an empty MESSAGE is no field: no line)
    assert f"journal:{UNIT}: {n} line(s) in the last 30 minutes" in logs["details"]


def test_a_unit_without_recent_entries_and_a_missing_journalctl(tmp_path):
    jdir = tmp_path / "j"
    jdir.mkdir()
    append(jdir, [entry(b"INFO:     127.0.0.1:1 - \"GET /health HTTP/1.1\" 200 OK", 0,
                        __REALTIME_TIMESTAMP=str(int((time.time() - 7200) * 1_000_000)))])
    quiet = doctor(tmp_path, jdir)
    assert quiet["status"] == "warn" and f"journal:{UNIT} has no entries in the last 30 minutes" in quiet["summary"]
    assert f"systemctl status {UNIT}" in quiet["remedy"]
    # without journalctl (a PATH where the interpreter is, and no journalctl)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    missing = doctor(tmp_path, jdir, env={**os.environ, "PATH": str(bin_dir)})
    assert missing["status"] == "fail" and "journalctl could not be run" in missing["summary"], missing
