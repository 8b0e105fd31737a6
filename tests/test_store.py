"""The SQLite store: schema version and migrations, retention, and a full disk that loses nothing."""

from __future__ import annotations

import time

import pytest

from diag.daemon import config
from diag.daemon.service import Daemon
from diag.store.db import Store, StoreError
from diag.store.migrations import MIGRATIONS
from diag.analysis.trace import Trace


def test_schema_version_and_newer_store_refused(tmp_path):
    s = Store(tmp_path / "d.sqlite3")
    assert s.schema_version == len(MIGRATIONS)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    s.close()
    with pytest.raises(StoreError, match="newer than this diag"):
        Store(tmp_path / "d.sqlite3")


def test_every_trace_index_is_one_the_readers_need(tmp_path):
    """Each index costs every trace write: the status filter of the request list and /metrics is
    answered by traces(status, t), so no index of its own is kept for status."""
    s = Store(tmp_path / "d.sqlite3")
    names = {r[0] for r in s.db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'traces' "
                                        "AND sql IS NOT NULL")}
    assert "traces_status" not in names and "traces_status_t" in names
    plan = " ".join(r[-1] for r in s.db.execute("EXPLAIN QUERY PLAN SELECT count(*) FROM traces WHERE status = 'failed'"))
    assert "traces_status_t" in plan, plan
    s.close()


def test_retention_by_age_and_by_count(tmp_path):
    s = Store(tmp_path / "d.sqlite3")
    s.commit([Trace(f"t{i}", "vllm", "/x") for i in range(50)], [], [])
    old = time.time() - 30 * 86400
    s.db.execute("UPDATE traces SET updated_at = ? WHERE id IN ('t0', 't1', 't2')", (old,))
    assert s.prune(time.time(), days=14, max_traces=1000, max_findings=1000) == 3
    assert s.counts()["traces"] == 47
    while s.prune(time.time(), days=14, max_traces=10, max_findings=1000, batch=7):
        pass
    assert s.counts()["traces"] == 10


def test_retention_keeps_the_finished_files_rows_it_is_told_to_and_counts_only_those_it_deletes(tmp_path):
    """`keep` is given the finished files' rows past retention and names those to keep (the daemon:
    files still on disk); only the others are deleted, and only their lines are counted as pruned
    (`lines_pruned`, which /metrics adds to the lines read of a path's rows still stored)."""
    from diag.store import counters
    from diag.store.db import SourceState

    s = Store(tmp_path / "d.sqlite3")
    old, recent = time.time() - 30 * 86400, time.time()
    s.commit([], [], [SourceState("1:1", "/l/a.log", lines_read=5, state="done", updated_at=old),
                      SourceState("1:2", "/l/a.log", lines_read=7, state="done", updated_at=old),
                      SourceState("1:3", "/l/a.log", lines_read=11, state="done", updated_at=recent),
                      SourceState("1:4", "/l/a.log", lines_read=13, state="active", updated_at=old),
                      SourceState("1:5", "/l/b.log", lines_read=17, state="done", updated_at=old)])
    asked = []

    def keep(rows):
        asked.extend(r.key for r in rows)
        return ["1:2", "1:9"]  # (a key it was not asked about is no row)

    s.prune(time.time(), 14, 10**6, 10**6, keep=keep)
    assert sorted(asked) == ["1:1", "1:2", "1:5"]
    assert sorted(x.key for x in s.sources()) == ["1:2", "1:3", "1:4"]
    assert sorted((lab["path"], v) for lab, v in counters.read(s.db, "lines_pruned")) == [("/l/a.log", 5), ("/l/b.log", 17)]
    s.prune(time.time(), 14, 10**6, 10**6, keep=lambda rows: [])  # the file is gone now
    assert sorted(x.key for x in s.sources()) == ["1:3", "1:4"]
    assert sorted((lab["path"], v) for lab, v in counters.read(s.db, "lines_pruned")) == [("/l/a.log", 12), ("/l/b.log", 17)]
    s.close()


def test_full_disk_pauses_reading_and_loses_nothing(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text("")
    cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", use_inotify=False)
    d = Daemon(cfg)
    d.follower.discover(force=True)
    d.step()

    def write(a, b):
        with open(log, "a") as f:
            for i in range(a, b):
                f.write(f"(APIServer pid=1) INFO 01-24 10:00:00 [request_logger.py:65] Received request chatcmpl-{i:016x}: "
                        f"params: SamplingParams(n=1, max_tokens=8), lora_request: None.\n" + "x" * 2000 + "\n")

    pages = d.store.db.execute("PRAGMA page_count").fetchone()[0]
    d.store.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
    write(0, 200)
    d.step()
    assert d.committer.pending is not None  # kept, not dropped
    # what a crash now would resume from: nothing past the lines that could not be stored
    assert [s.offset for s in d.store.sources()] in ([], [0])
    write(200, 400)
    assert d.step() is False  # reading paused while the store refuses writes
    d.store.db.execute("PRAGMA max_page_count = 1073741823")  # space again
    for _ in range(5):
        d.step()
    ids = set(d.store.trace_ids())
    assert ids == {f"chatcmpl-{i:016x}" for i in range(400)}
    assert d.store.sources()[0].offset == log.stat().st_size  # every line stored, and the offset committed with them
    d.store.close()


def test_trace_and_findings_commands_and_no_prompt_text_in_the_store(tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    from conftest import CORPUS
    from test_privacy import corpus_user_text

    log = tmp_path / "vllm.log"
    shutil.copy(CORPUS / "vllm" / "synthetic-0.6.6-qwen2vl.log", log)
    cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", use_inotify=False, from_beginning=True)
    d = Daemon(cfg)
    d.follower.discover(force=True)
    while d.step():
        pass
    d.shutdown()
    d.store.close()
    state = ["--state-dir", str(tmp_path / "state")]
    r = subprocess.run([sys.executable, "-m", "diag", "trace", "chatcmpl-support-ticket", "--json", *state], capture_output=True, text=True)
    t = json.loads(r.stdout)
    assert t["id"] == "chatcmpl-support-ticket-4711" and t["images"] == 2 and t["status"] == "ok" and t["http_status"] == 200
    assert [e["kind"] for e in t["timeline"]][:2] == ["request.received", "request.added"]
    r = subprocess.run([sys.executable, "-m", "diag", "findings", "--json", *state], capture_output=True, text=True)
    rules_found = {f["rule"] for f in json.loads(r.stdout)}
    assert {"cuda-oom", "engine-dead", "unknown-model", "too-many-images"} <= rules_found
    assert subprocess.run([sys.executable, "-m", "diag", "trace", "nope", *state], capture_output=True).returncode == 1
    human = subprocess.run([sys.executable, "-m", "diag", "trace", "chatcmpl-support-ticket", *state], capture_output=True, text=True).stdout
    assert "request.received" in human and "images 2" in human
    raw = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir())
    leaked = [s for s in corpus_user_text() if s.encode() in raw]
    assert leaked == []  # the store holds derived facts only


def test_state_past_orjson_range_is_stored_and_counted_once(tmp_path):
    """A malformed log number (an integer past 64 bits) cannot go through the fast encoder: the trace
    is still stored, readable, and counted once however often it is committed."""
    s = Store(tmp_path / "d.sqlite3")
    big = Trace("chatcmpl-big", "vllm", "/l", model="m", received_at=time.time(), status="ok", http_status=200,
                max_tokens=10 ** 30)
    s.commit([big], [], [])
    s.commit([big], [], [])
    back = s.load_trace("chatcmpl-big")
    assert back is not None and back.max_tokens == 10 ** 30
    rows = s.db.execute("SELECT value FROM counters WHERE name = 'requests'").fetchall()
    assert [r[0] for r in rows] == [1]


def test_meta_not_written_by_a_failed_commit_is_written_by_the_next(tmp_path):
    """Unchanged meta values are not rewritten; one whose commit rolled back is not taken as written."""
    s = Store(tmp_path / "d.sqlite3")
    s.commit([], [], [], {"facts": {"a": 1}})

    def fail(db):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        s.commit([], [], [], {"facts": {"a": 2}}, extra=fail)
    assert s.meta()["facts"] == {"a": 1}
    s.commit([], [], [], {"facts": {"a": 2}})
    assert Store(tmp_path / "d.sqlite3", readonly=True).meta()["facts"] == {"a": 2}
