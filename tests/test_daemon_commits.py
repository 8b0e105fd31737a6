"""What each of the daemon's commits writes, and how often it commits: a server that writes every
line on its own (Python logging with PYTHONUNBUFFERED) must not cost a commit, a heartbeat row and
a rewrite of every followed file's row per line. Unchanged rows are skipped, the heartbeat is
written at most once a second (and `diag status` still tells a live daemon from a dead one), and a
steady stream is committed in longer windows than a line after a quiet spell."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from diag.daemon import config, service
from diag.daemon.service import Daemon
from diag.ingest.filereader import READ_CHUNK
from diag.store.db import SourceState, Store


def _row(store: Store, key: str) -> dict:
    return dict(store.db.execute("SELECT * FROM sources WHERE key = ?", (key,)).fetchone())


def test_an_unchanged_source_is_not_rewritten_and_a_moved_offset_is(tmp_path):
    s = Store(tmp_path / "d.sqlite3")
    st = SourceState(key="1:2", path="/logs/vllm.log", offset=100, lineno=3, size=100, updated_at=1000.0)
    s.commit([], [], [st])
    assert _row(s, "1:2")["updated_at"] == 1000.0

    st.updated_at = 2000.0  # the follower stamps every state it hands over; nothing else changed
    before = s.db.total_changes
    s.commit([], [], [st])
    assert s.db.total_changes == before  # no row written
    assert _row(s, "1:2")["updated_at"] == 1000.0

    st.offset, st.lineno, st.size, st.updated_at = 250, 7, 250, 3000.0
    s.commit([], [], [st])
    row = _row(s, "1:2")
    assert (row["offset"], row["lineno"], row["size"], row["updated_at"]) == (250, 7, 250, 3000.0)

    st.path, st.state, st.updated_at = "/logs/vllm.log.1", "rotated", 4000.0  # renamed away: found under its new path
    s.commit([], [], [st])
    assert [r[0] for r in s.db.execute("SELECT key FROM sources WHERE path = ?", ("/logs/vllm.log.1",))] == ["1:2"]
    assert s.db.execute("SELECT count(*) FROM sources WHERE path = ?", ("/logs/vllm.log",)).fetchone()[0] == 0
    s.close()

    # another connection (a restarted daemon) knows nothing of what was written: it writes its rows once
    s2 = Store(tmp_path / "d.sqlite3")
    st.updated_at = 5000.0
    s2.commit([], [], [st])
    assert _row(s2, "1:2")["updated_at"] == 5000.0
    s2.close()


def test_a_source_row_from_a_rolled_back_commit_is_written_by_the_next(tmp_path):
    s = Store(tmp_path / "d.sqlite3")
    st = SourceState(key="1:2", path="/l", offset=10)
    s.commit([], [], [st])

    def fail(db):
        raise RuntimeError("disk full")

    st.offset = 20
    with pytest.raises(RuntimeError):
        s.commit([], [], [st], extra=fail)
    assert _row(s, "1:2")["offset"] == 10
    s.commit([], [], [st])  # the same state again: not taken as written by the commit that failed
    assert _row(s, "1:2")["offset"] == 20
    s.close()


def test_a_finished_file_pruned_then_seen_again_is_stored_again(tmp_path):
    """Retention deletes finished files' rows behind the writer's back; a row it still remembers as
    written must not be skipped if that file is ever handed over again."""
    s = Store(tmp_path / "d.sqlite3")
    st = SourceState(key="1:2", path="/l", offset=10, state="done", updated_at=1.0)
    s.commit([], [], [st])
    s.prune(time.time(), 1, 10**6, 10**6)
    assert s.sources() == []
    s.commit([], [], [st])
    assert [x.key for x in s.sources()] == ["1:2"]
    s.close()


def test_a_meta_value_changed_in_place_is_rewritten_and_an_equal_one_is_not(tmp_path):
    """The daemon hands the store live objects (the startup facts per source): a value mutated in
    place since the last commit is still seen as changed."""
    s = Store(tmp_path / "d.sqlite3")
    facts = {"/l": {"server": "vllm", "starts": 1}}
    s.commit([], [], [], {"facts": facts, "errors": {}})
    before = s.db.total_changes
    s.commit([], [], [], {"facts": facts, "errors": {}})
    assert s.db.total_changes == before
    facts["/l"]["starts"] = 2
    s.commit([], [], [], {"facts": facts, "errors": {}})
    assert Store(tmp_path / "d.sqlite3", readonly=True).meta()["facts"] == {"/l": {"server": "vllm", "starts": 2}}
    s.close()


def _request(i: int) -> list[str]:
    rid = f"chatcmpl-{i:016x}"
    return [f"(APIServer pid=1) INFO 01-24 10:00:00 [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, "
            f"max_tokens=8), lora_request: None.\n",
            f"(APIServer pid=1) INFO 01-24 10:00:00 [async_llm.py:578] Added request {rid}-0000abcd.\n",
            f'INFO:     127.0.0.1:{20000 + i} - "POST /v1/chat/completions HTTP/1.1" 200 OK\n']


@pytest.fixture
def daemon(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text("")
    cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", use_inotify=False, web_listen=None)
    d = Daemon(cfg)
    d.follower.discover(force=True)
    d.commit(meta={"pid": os.getpid()})
    yield d, log
    d.alerts.close()
    d.follower.close()
    d.store.close()


def test_heartbeat_is_written_at_most_once_a_second_while_offsets_are_committed_each_time(daemon):
    d, log = daemon
    beats, offsets = [], []
    deadline = time.monotonic() + 2.6
    i = 0
    with open(log, "a") as f:
        while time.monotonic() < deadline:
            f.writelines(_request(i))
            f.flush()
            i += 1
            assert d.step()
            meta = d.store.meta()
            if not beats or meta["heartbeat"] != beats[-1]:
                beats.append(meta["heartbeat"])
            offsets.append(d.store.sources()[0].offset)
            time.sleep(0.05)
    assert offsets == sorted(set(offsets)) and offsets[-1] == log.stat().st_size  # every commit moved the offset
    assert len(offsets) > 2 * len(beats)
    assert all(b - a >= 0.9 for a, b in zip(beats, beats[1:])), beats
    assert 2 <= len(beats) <= 4 and time.time() - beats[-1] < 2


def test_steady_stream_waits_the_longer_window_a_line_after_quiet_the_short_one(daemon):
    d, log = daemon
    windows = []
    with open(log, "a") as f:
        f.write(_request(0)[0])  # one line after a quiet spell
        f.flush()
        assert d.step()
        windows.append(d._window())
        for line in [x for i in range(1, 11) for x in _request(i)]:  # 30 lines, each its own write
            f.write(line)
            f.flush()
        assert d.step()
        windows.append(d._window())
        assert not d.step()  # a quiet spell: the wait is for the file, no window
        f.writelines(_request(11))  # one request now and then: its three lines in one write
        f.flush()
        assert d.step()
        windows.append(d._window())
    assert windows == [service.COALESCE, service.COALESCE_STEADY, service.COALESCE]
    assert service.COALESCE_STEADY > service.COALESCE


def test_status_tells_a_live_daemon_writing_per_line_from_a_killed_one(tmp_path):
    """Heartbeat written once a second: `diag status` says running while lines come one write at a
    time, its last commit is recent, and after kill -9 it says not running."""
    state, log = tmp_path / "state", tmp_path / "vllm.log"
    state.mkdir()
    log.write_text("")
    d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--state-dir", str(state), "--log", str(log), "--no-web"],
                         stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def status() -> dict:
        r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)], capture_output=True, text=True)
        return json.loads(r.stdout) if r.returncode == 0 else {}

    try:
        wait_for(lambda: status().get("sources"), 30, "the daemon's first commit")
        with open(log, "a", buffering=1) as f:
            for i in range(60):
                for line in _request(i):
                    f.write(line)
                    time.sleep(0.01)
        wait_for(lambda: status().get("traces") == 60, 20, "every request stored")
        doc = status()
        assert doc["daemon"]["running"] is True
        db = sqlite3.connect(f"file:{state / 'diag.sqlite3'}?mode=ro", uri=True)
        heartbeat = json.loads(db.execute("SELECT value FROM meta WHERE key = 'heartbeat'").fetchone()[0])
        db.close()
        assert time.time() - heartbeat < 3
    finally:
        d.send_signal(signal.SIGKILL)
        d.wait()
    assert status()["daemon"]["running"] is False


def test_a_backlog_is_committed_every_catchup_commit_lines_and_its_end_at_once(daemon):
    """Catching up, the daemon commits once CATCHUP_COMMIT_LINES lines are read, not after each
    1 MiB read (with random request ids, traces sharing a transaction share its index pages); the
    backlog's last read, short of the limit, is committed at once, and every request is stored."""
    d, log = daemon
    n = 14_000  # ~42,000 lines, ~4.7 MB: five reads at READ_CHUNK, the last one short
    with open(log, "a") as f:
        for i in range(n):
            f.writelines(_request(i))
    size = log.stat().st_size
    reads = -(-size // READ_CHUNK)
    commits = []  # (traces stored, committed offset) after each commit
    d.on_commit.append(lambda: commits.append((d.store.counts()["traces"], d.store.sources()[0].offset)))
    turns = 0
    while d.step():
        turns += 1
    assert turns == reads  # the backlog took one read a turn
    assert commits[-1] == (n, size)  # all of it, committed as soon as the last read came short
    assert len(commits) < reads  # a commit per read before
    stored = [c[0] for c in [(0, 0)] + commits]
    # every commit but the last took at least CATCHUP_COMMIT_LINES lines' requests (3 lines each)
    assert all(b - a >= service.CATCHUP_COMMIT_LINES // 3 for a, b in zip(stored, stored[1:-1])), stored


def test_a_followed_stream_is_committed_each_turn_while_no_read_is_full(daemon):
    """Not catching up (no read reached its size limit), each turn that read lines commits them:
    a line's latency is the coalescing window, whatever CATCHUP_COMMIT_LINES is."""
    d, log = daemon
    commits = []
    d.on_commit.append(lambda: commits.append(d.store.counts()["traces"]))
    with open(log, "a") as f:
        for i in range(5):
            f.writelines(_request(i))
            f.flush()
            assert d.step()
            assert commits[-1] == i + 1
    assert len(commits) == 5
