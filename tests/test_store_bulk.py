"""What makes a catch-up after downtime cheaper keeps the store and the daemon as they were.

A trace row binds its NULLs as NaN (diag.store.db: Python's sqlite3 looks every None up in its
adapter registry, SQLite keeps no NaN), so the columns the dashboard filters on must still read
NULL, `t` must still fall back to the commit's time, `counted` must still be an integer. The
daemon freezes its start-up objects out of the garbage collector's full passes (diag.daemon.heap);
a reload must let go of what it replaced.
"""

from __future__ import annotations

import gc
import sqlite3
import weakref

import pytest

from diag.analysis.trace import Trace
from diag.daemon import config, heap
from diag.daemon.service import Daemon
from diag.store.db import Store
from diag.store.rescan import ScanRun

COLUMNS = ("received_at", "t", "model", "http_status", "latency_s", "images", "counted", "scanned_path", "scan_run", "nfindings")


def _row(store: Store, tid: str) -> dict:
    cols = ", ".join(f"{c}, typeof({c}) AS {c}_type" for c in COLUMNS)
    return dict(store.db.execute(f"SELECT updated_at, {cols} FROM traces WHERE id = ?", (tid,)).fetchone())


def test_sqlite_keeps_no_nan_a_bound_one_is_null():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (r REAL, s TEXT, i INTEGER, a)")
    db.execute("INSERT INTO t VALUES (?, ?, ?, coalesce(?, 7))", (float("nan"),) * 4)
    assert db.execute("SELECT typeof(r), typeof(s), typeof(i), a FROM t").fetchone() == ("null", "null", "null", 7)


def test_a_trace_without_times_model_status_or_images_stores_nulls_then_its_values(tmp_path):
    s = Store(tmp_path / "d.sqlite3")
    t = Trace("chatcmpl-1", "vllm", "/logs/vllm.log", first_line=3)  # in flight, nothing measured yet
    s.commit([t], [], [])
    row = _row(s, "chatcmpl-1")
    for c in ("received_at", "model", "http_status", "latency_s", "images", "scanned_path", "scan_run"):
        assert row[c] is None and row[f"{c}_type"] == "null", c
    assert row["t"] == row["updated_at"]  # no arrival time: listed by when it was first stored
    assert (row["counted"], row["counted_type"]) == (0, "integer")
    assert (row["nfindings"], row["nfindings_type"]) == (0, "integer")
    first_t = row["t"]

    t.received_at, t.model, t.http_status, t.latency_s, t.images, t.status = 1700000000.5, "Qwen3-VL", 200, 1.25, 2, "ok"
    t.findings.append("slow")
    s.commit([t], [], [])
    row = _row(s, "chatcmpl-1")
    assert (row["received_at"], row["received_at_type"]) == (1700000000.5, "real")
    assert row["t"] == 1700000000.5 != first_t
    assert (row["model"], row["model_type"]) == ("Qwen3-VL", "text")
    assert (row["http_status"], row["http_status_type"]) == (200, "integer")
    assert (row["latency_s"], row["latency_s_type"]) == (1.25, "real")
    assert (row["images"], row["images_type"]) == (2, "integer")
    assert (row["counted"], row["counted_type"]) == (1, "integer")
    assert row["nfindings"] == 1
    assert s.db.execute("SELECT value FROM counters WHERE name = 'requests'").fetchone()[0] == 1
    s.close()


def test_a_scanned_trace_names_its_file_and_run(tmp_path):
    s = Store(tmp_path / "d.sqlite3")
    log = tmp_path / "vllm.log"
    log.write_text("")
    run = ScanRun.begin(s.db, [str(log)])
    t = Trace("chatcmpl-2", "vllm", str(log), status="ok", http_status=200)
    s.commit([t], [], [], scan=run)
    row = _row(s, "chatcmpl-2")
    assert row["scanned_path_type"] == "text" and row["scanned_path"] == run.scanned_path(str(log))
    assert (row["scan_run"], row["scan_run_type"]) == (run.id, "text")
    s.close()


@pytest.fixture
def thawed():
    """gc.freeze is process-wide: leave the test process as it was."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _daemon(tmp_path) -> Daemon:
    log = tmp_path / "vllm.log"
    log.write_text("")
    conf = tmp_path / "diag.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nuse_inotify = false\n[web]\nlisten = "off"\n'
                    f'[[log]]\npath = "{log}"\n')
    cfg = config.load(str(conf))
    return Daemon(cfg, str(conf))  # reload reads this file again


def test_the_daemon_freezes_its_start_up_objects(tmp_path, thawed):
    d = _daemon(tmp_path)
    d.stopping = True  # start up, then stop at once
    assert gc.get_freeze_count() == 0
    assert d.run() == 0
    assert gc.get_freeze_count() > 0


def test_a_reload_lets_go_of_frozen_objects_it_no_longer_holds(tmp_path, thawed):
    d = _daemon(tmp_path)
    gone = _Cycle()
    ref = weakref.ref(gone)
    heap.freeze_startup()
    del gone
    gc.collect()
    assert ref() is not None  # frozen: no collection looks at it
    d.reload()  # replaces the rules and alert sinks: what they held must not stay frozen for ever
    assert ref() is None
    assert gc.get_freeze_count() > 0  # and what the daemon keeps is frozen again
    d.follower.close()
    d.store.close()


def _every_field_set(tid: str) -> Trace:
    return Trace(tid, "vllm", "/logs/vllm.log", model="Qwen3-VL", client="10.0.0.7:5123", endpoint="chat",
                 received_at=1700000000.25, added_at=1700000000.5, first_output_at=1700000001.0, finished_at=1700000002.0,
                 aborted_at=1700000003.0, failed_at=1700000004.0, status="ok", http_status=200, prompt_tokens=12,
                 output_tokens=34, max_tokens=64, images=2, prompt_chars=900, latency_s=1.75, reason="stop",
                 says_no_image=True, stuck=True, findings=["slow"], timeline=[{"kind": "request.received", "time": 1.0, "line": 1}],
                 http={"method": "POST", "status": 200}, first_line=7, _text="generated words", _ended=True, _aborted=True,
                 _failed=True, _completed=True)


@pytest.mark.parametrize("trace", [
    Trace("chatcmpl-defaults", "vllm", "/logs/vllm.log"),  # defaults only: left out, first_line 0 kept
    _every_field_set("chatcmpl-every"),
    # values next to the defaults: zeros are kept, empty text and lists are not, an empty dict is
    Trace("chatcmpl-edges", "vllm", "/logs/vllm.log", model="", client=None, received_at=0.0, http_status=0, images=0,
          reason="", findings=[], timeline=[], http={}, first_line=0, says_no_image=False, _text="x"),
], ids=lambda t: t.id)
def test_the_stored_state_is_the_traces_to_state(tmp_path, trace):
    """The store builds a trace's state itself (diag.store.db._state, the catch-up's hot path): the
    stored JSON must be exactly what Trace.to_state gives, keys in the same order, and restore the same state."""
    from diag.compactjson import dumps_text

    s = Store(tmp_path / "d.sqlite3")
    s.commit([trace], [], [])
    stored = s.db.execute("SELECT data FROM traces WHERE id = ?", (trace.id,)).fetchone()[0]
    assert stored == dumps_text(trace.to_state())
    assert "_text" not in stored and "generated words" not in stored
    assert s.load_trace(trace.id).to_state() == trace.to_state()
