"""What a turn of the daemon's follow loop may skip, and what it must still catch. A server that
writes each line on its own keeps the loop turning 25 times a second, so a turn does only what its
lines need: no alert bookkeeping or alert rows while no alert exists, no look for configured files
while every plain path is followed and no glob is due, and the dashboard's thread inside the daemon
wakes once a second rather than ten times. Each of these must still let through what it skips over:
the first hit of a quiet stream alerts, a configured file that appears is read from its first
byte, a glob's new file is found, and the dashboard still answers, dates its answers and stops at once."""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from conftest import free_port, vllm_request_lines
from diag.daemon import config
from diag.daemon.service import Daemon
from diag.web import server as web_server

OOM = ("(APIServer pid=1) ERROR 01-24 10:03:33 [serving_chat.py:1012] Error in chat completion stream generator: CUDA out of memory. "
       "Tried to allocate 11.72 GiB. GPU 0 has a total capacity of 79.19 GiB of which 7.04 GiB is free.\n")


def _request(i: int) -> list[str]:
    return vllm_request_lines(f"chatcmpl-{i:016x}", 20000 + i).splitlines(keepends=True)


def _daemon(tmp_path, *logs: str) -> Daemon:
    cfg = config.Config(logs=[config.LogSpec(p) for p in logs], state_dir=tmp_path / "state", use_inotify=False, web_listen=None,
                        from_beginning=False)
    d = Daemon(cfg)
    d.follower.discover(force=True)
    d.commit(meta={"pid": os.getpid()})
    return d


def _close(d: Daemon) -> None:
    d.alerts.close()
    d.follower.close()
    d.store.close()


def _count(d: Daemon, table: str) -> int:
    return d.store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_quiet_turns_write_no_alert_rows_and_the_first_hit_after_them_alerts(tmp_path, monkeypatch):
    log = tmp_path / "vllm.log"
    log.write_text("")
    d = _daemon(tmp_path, str(log))
    extras: list = []
    real_commit = d.store.commit

    def spy(*args, **kw):
        extras.append(kw.get("extra"))
        return real_commit(*args, **kw)

    d.periodic()  # the start-up's own look at alert timers
    monkeypatch.setattr(d.store, "commit", spy)
    try:
        with open(log, "a") as f:
            for i in range(5):
                for line in _request(i):  # each line its own write, a turn after each request
                    f.write(line)
                    f.flush()
                assert d.step()
                d.periodic()  # the main loop's housekeeping after each turn: no alert is due, no second commit
            assert d.store.db.execute("SELECT count(*) FROM traces WHERE status = 'ok'").fetchone()[0] == 5
            assert len(extras) == 5 and all(e is None for e in extras)  # one commit a turn, nothing for the alert tables
            assert d.alerts.manager.empty
            f.write(OOM)
            f.writelines(_request(5))  # the next line completes the ERROR record
            f.flush()
            assert d.step()
        assert _count(d, "findings") == 1
        rules = [r[0] for r in d.store.db.execute("SELECT rule FROM alerts")]
        assert len(rules) == 1 and "oom" in rules[0].lower()
        assert _count(d, "alert_groups") == 1
        assert extras[-1] is not None and not d.alerts.manager.empty
    finally:
        _close(d)


def test_a_configured_file_that_appears_while_another_streams_is_read_from_its_first_byte(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("")
    d = _daemon(tmp_path, str(a), str(b))
    try:
        with open(a, "a") as f:
            for i in range(3):
                f.writelines(_request(i))
                f.flush()
                assert d.step()
            b.write_text("".join(_request(100)))  # appears between two turns of a's stream
            f.writelines(_request(3))
            f.flush()
            assert d.step()
        ids = {r[0] for r in d.store.db.execute("SELECT id FROM traces WHERE status = 'ok'")}
        assert len(ids) == 5 and any(i.startswith(f"chatcmpl-{100:016x}") for i in ids)  # b's request, tagged with its file
        assert {s.path for s in d.store.sources()} == {str(a), str(b)}
    finally:
        _close(d)


def test_a_new_file_matching_a_glob_is_found_when_the_glob_is_due(tmp_path):
    a = tmp_path / "a.log"
    a.write_text("")
    cfg_glob = str(tmp_path / "g-*.log")
    d = _daemon(tmp_path, str(a), cfg_glob)
    try:
        (tmp_path / "g-1.log").write_text("".join(_request(7)))
        d.follower.dirty = True  # what inotify says when a file is created there
        d.step()
        d.step()
        ids = [r[0] for r in d.store.db.execute("SELECT id FROM traces WHERE status = 'ok'")]
        assert len(ids) == 1 and ids[0].startswith(f"chatcmpl-{7:016x}")
    finally:
        _close(d)


@pytest.fixture
def dashboard(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text("")
    d = _daemon(tmp_path, str(log))
    web = web_server.prepare(d.cfg.db_path, f"127.0.0.1:{free_port()}", None)
    yield web
    web.stop()
    _close(d)


def test_the_dashboard_thread_in_the_daemon_answers_with_a_date_and_stops_at_once(dashboard, monkeypatch):
    monkeypatch.setattr(web_server, "DAEMON_TICK", 30.0)  # far longer than any wait below: only the stop can end it
    web = dashboard
    web.start_thread()
    r = None
    for _ in range(100):
        try:
            r = httpx.get(web.url + "metrics", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    assert r is not None and r.status_code == 200
    assert r.headers.get("date", "").endswith(" GMT")
    web.stop()
    assert not [t for t in threading.enumerate() if t.name == "diag-web"]  # ended by the wake-up, not by its 30 s tick
