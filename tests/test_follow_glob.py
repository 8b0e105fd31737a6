"""A glob that also matches rotated names (`vllm.log*`, `*.log*`): logrotate renames the file the
daemon follows to a name the glob matches, or copies it there (copytruncate). The follower knows a
file by its identity (device and inode, checked against its first bytes), not by its name: a file
it is still reading under its old name, or has finished (also in a run before a restart), is not
read again from its first byte under the new one; lines written to it after it was finished (a
server still writing through its old descriptor) are read once (diag.ingest.identity).

Each request here comes with an OOM line: a trace read twice is stored once (by its id), but an
OOM line read twice is a second finding."""

from __future__ import annotations

import os
import time
import json
import re
import shutil
import sqlite3
from collections import Counter
from contextlib import closing

import pytest

from conftest import vllm_request_lines
from diag.daemon import config
from diag.daemon.service import Daemon
from diag.store.db import Store


OOM = ("(APIServer pid=4242) ERROR 01-24 10:03:33 [serving_chat.py:1012] Error in chat completion stream generator: "
       "CUDA out of memory. Tried to allocate {n}.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 7.04 GiB is free.\n")


def _requests(path, *numbers: int) -> None:
    with open(path, "a") as fh:
        fh.write("".join(vllm_request_lines(f"chatcmpl-{i:016x}", 40000 + i) + OOM.format(n=i) for i in numbers))


def _turns(d: Daemon, n: int = 3) -> None:
    for _ in range(n):
        d.step()


def _stored(state) -> dict[str, Counter]:
    """Each stored trace's timeline by kind (a line read twice in one run shows as a kind counted
    twice), and "oom" with the OOM findings by request number (a line read twice in any run)."""
    with closing(Store(state / "diag.sqlite3", readonly=True)) as s:
        out = {tid: Counter(e["kind"] for e in s.trace(tid)["timeline"]) for tid in s.trace_ids()}
    with closing(sqlite3.connect(f"file:{state / 'diag.sqlite3'}?mode=ro", uri=True)) as db:
        out["oom"] = Counter(int(float(json.loads(f)["size"].split()[0])) for (f,) in db.execute("SELECT fields FROM findings WHERE rule = 'cuda-oom'"))
    return out


ONCE = Counter({"request.received": 1, "request.added": 1, "http.access": 1})


def _read_once(tmp_path, numbers) -> dict[str, Counter]:
    """Requests `numbers` were each stored once, and each OOM line found once (over every run)."""
    stored = _stored(tmp_path / "state")
    assert stored.pop("oom") == Counter({i: 1 for i in numbers})
    # (another run's ids, another file's, get a suffix: `#2`, `@vllm.log-b`)
    assert sorted(re.split("[#@]", tid)[0] for tid in stored) == sorted(f"chatcmpl-{i:016x}" for i in numbers)
    assert {tid: c for tid, c in stored.items() if c != ONCE} == {}
    return stored


def _daemon(tmp_path, rotate_wait: float, rescan_globs: float = 0.0) -> tuple[Daemon, object]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    cfg = config.Config(state_dir=tmp_path / "state", from_beginning=True, rescan_globs=rescan_globs, rotate_wait=rotate_wait,
                        use_inotify=False, logs=[config.LogSpec(f"{logs}/vllm.log*")])
    return Daemon(cfg), logs


def _following(tmp_path, rotate_wait: float, *first: int) -> tuple[Daemon, object, object]:
    """A daemon that has read requests `first` of vllm.log (the caller shuts it down)."""
    d, logs = _daemon(tmp_path, rotate_wait)
    log = logs / "vllm.log"
    _requests(log, *first)
    d.follower.discover(force=True)
    _turns(d)
    return d, logs, log


def test_a_glob_matching_rotated_names_reads_each_line_once(tmp_path):
    d, logs, log = _following(tmp_path, 0.2, 0, 1)
    try:
        # logrotate (create): renamed to a name the glob matches, a new file in its place; the server
        # writes one more request through its old descriptor before it reopens
        _requests(log, 2)
        os.rename(log, logs / "vllm.log.1")
        _requests(logs / "vllm.log.1", 3)
        _requests(log, 10)
        _turns(d)  # the rotated file is read to its end under its old name, not opened again under its new one
        time.sleep(0.3)
        _turns(d)  # ... nor once that reader has finished (quiet for rotate_wait)
        _requests(logs / "vllm.log.1", 4)  # written after diag finished the file: read once, from where it stopped
        _requests(log, 11)
        _turns(d)
        # a second rotation: .1 -> .2, the current file -> .1, a new current file
        os.rename(logs / "vllm.log.1", logs / "vllm.log.2")
        os.rename(log, logs / "vllm.log.1")
        _requests(log, 20)
        _requests(logs / "vllm.log.1", 12)
        _turns(d)
        time.sleep(0.3)
        _turns(d)
        errors = dict(d.follower.errors)
    finally:
        d.shutdown()
    # a restart: the store says which files were finished, and where
    d = Daemon(d.cfg)
    try:
        _requests(logs / "vllm.log.2", 5)
        _requests(log, 21)
        d.follower.discover(force=True)
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 1, 2, 3, 4, 5, 10, 11, 12, 20, 21))
    assert errors == {}  # a rotation is no error


def test_a_finished_file_rewritten_in_place_is_read_whole(tmp_path):
    """Identity is the inode *and* the first bytes: a finished file whose inode now holds other
    bytes (rewritten in place; or a deleted file's inode taken by a new one) is a new file, read
    from its start, not resumed where the old one was left."""
    d, logs, log = _following(tmp_path, 0.1, 0)
    try:
        os.rename(log, logs / "vllm.log.1")
        _requests(log, 10)
        _turns(d)
        time.sleep(0.2)
        _turns(d)  # vllm.log.1 finished
        with open(logs / "vllm.log.1", "r+") as fh:  # the same inode, other bytes, longer than before
            fh.truncate(0)
        _requests(logs / "vllm.log.1", 5, 6, 7)
        _turns(d)
    finally:
        d.shutdown()
    stored = _read_once(tmp_path, (0, 5, 6, 7, 10))
    with closing(Store(tmp_path / "state" / "diag.sqlite3", readonly=True)) as s:  # a file of its own name, not vllm.log's last part
        assert {s.trace(tid)["source"] for tid in stored if tid.startswith(f"chatcmpl-{5:016x}")} == {str(logs / "vllm.log.1")}


def test_copytruncate_with_a_glob_matching_the_copy_reads_each_line_once(tmp_path):
    """logrotate's copytruncate (for a server that never reopens its log): the copy, under a name
    the glob matches, holds the lines diag read already. It is not read again — not while it is
    a copy of the file being followed, nor after the truncation, when the lines not read yet are
    taken from it — and lines written to it later are read once."""
    d, logs, log = _following(tmp_path, 0.1, 0, 1)
    try:
        _requests(log, 2)  # not read yet when the copy is made
        shutil.copyfile(log, logs / "vllm.log.1")
        _turns(d)  # the copy is found before the truncation: a copy of the followed file
        _requests(log, 3)
        shutil.copyfile(log, logs / "vllm.log.1")
        with open(log, "r+") as fh:
            fh.truncate(0)
        _requests(log, 10)
        _turns(d)  # the truncation: request 3 from the copy, then the file from its start
        time.sleep(0.2)
        _turns(d)
        _requests(logs / "vllm.log.1", 4)  # someone appends to the copy: read once
        _requests(log, 11)
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 1, 2, 3, 4, 10, 11))


def test_a_glob_does_not_follow_compressed_rotations(tmp_path):
    """logrotate's `compress`: vllm.log.2.gz is an archive (`diag scan` reads it), not a log being
    written; followed, its compressed bytes would be read as lines."""
    import gzip

    d, logs = _daemon(tmp_path, rotate_wait=0.1)
    log = logs / "vllm.log"
    try:
        with gzip.open(logs / "vllm.log.2.gz", "wt") as fh:
            fh.write(vllm_request_lines(f"chatcmpl-{7:016x}", 40007))
        _requests(log, 0)
        d.follower.discover(force=True)
        _turns(d)
        (logs / "vllm.log.3.xz").write_bytes(b"\xfd7zXZ\x00\x00" + bytes(range(256)))  # appears later
        _turns(d)
        followed = sorted(r.state.path for r in d.follower.readers.values())
    finally:
        d.shutdown()
    assert followed == [str(log)]
    _read_once(tmp_path, (0,))


def test_a_new_file_that_begins_as_the_old_one_did_is_no_copy(tmp_path):
    """A server that starts with the same first lines each time (llama-server's build and system
    banner has no time in it) writes a new file whose first bytes are the followed one's: in the
    followed file's place after a rotation, or beside it under a name the glob matches (a second
    server), it is read whole, not taken for copytruncate's copy of the file being read."""
    banner = "".join(f"build: 4321 (abcdef0) line {i} of a banner without a time in it\n" for i in range(8))
    d, logs = _daemon(tmp_path, rotate_wait=5.0)
    log = logs / "vllm.log"
    try:
        log.write_text(banner)
        _requests(log, 0)
        d.follower.discover(force=True)
        _turns(d)
        os.rename(log, logs / "vllm.log.1")  # renamed, the server restarted: the same banner, then its own lines
        log.write_text(banner)
        _requests(log, 10)
        _turns(d)
        _requests(log, 11)
        _turns(d)
        (logs / "vllm.log-b").write_text(banner)  # a second server, its own log
        _turns(d)  # (all of it so far is the followed file's first bytes: it may wait)
        _requests(logs / "vllm.log-b", 20)
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 10, 11, 20))


def test_a_restart_before_the_glob_finds_a_finished_file_under_its_new_name(tmp_path):
    """The file was read to its end and the daemon stopped before its glob was expanded again: the
    next run knows it from the store, by identity, and reads only what was written to it since."""
    d, logs = _daemon(tmp_path, rotate_wait=0.1, rescan_globs=3600.0)  # the glob is expanded at start only
    log = logs / "vllm.log"
    try:
        _requests(log, 0, 1)
        _turns(d)
        os.rename(log, logs / "vllm.log.1")
        _requests(log, 10)
        _turns(d)
        time.sleep(0.2)
        _turns(d)  # vllm.log.1 read to its end and finished; the glob not expanded since
        assert not any(r.state.path.endswith(".1") for r in d.follower.readers.values())
    finally:
        d.shutdown()
    d, _ = _daemon(tmp_path, rotate_wait=0.1, rescan_globs=3600.0)
    try:
        _turns(d)  # the glob finds vllm.log.1: known, nothing new in it
        _requests(logs / "vllm.log.1", 2)  # the server still wrote to it
        _requests(log, 11)
        d.follower.discover(force=True)
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 1, 2, 10, 11))


BANNER = "".join(f"build: 4321 (abcdef0) line {i} of a banner without a time in it\n" for i in range(8))


def _create_on_inode(path, ino: int) -> None:
    """Create `path` on the inode `ino`, freed just before: what ext4 usually does by itself with
    the next file created (logrotate: unlink the oldest, rename, create)."""
    junk = []
    try:
        for i in range(2000):
            p = path.parent / f".junk{i}"
            p.touch()
            if p.stat().st_ino == ino:
                os.rename(p, path)
                return
            junk.append(p)
        pytest.skip("this file system did not hand the freed inode out again")
    finally:
        for p in junk:
            p.unlink()


@pytest.mark.parametrize("glob_name,new_name", [(True, "vllm.log"), (False, "vllm.log"), (True, "vllm.log-b")],
                         ids=["glob", "plain path", "glob, another name"])
def test_a_new_file_on_a_finished_files_inode_with_the_same_first_bytes_is_read_whole(tmp_path, glob_name, new_name):
    """logrotate `rotate 1`: the oldest file is deleted, the current one renamed, a new one created,
    which may get the deleted file's inode back, and begins with the same banner. It is a new file
    (its bytes where the finished one ended differ), read from its start, and followed; so is one
    a second server creates under another name the glob matches."""
    from diag.daemon import config

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "vllm.log"
    d = Daemon(config.Config(state_dir=tmp_path / "state", from_beginning=True, rescan_globs=0.0, rotate_wait=0.1,
                             use_inotify=False, logs=[config.LogSpec(f"{logs}/vllm.log*" if glob_name else str(log))]))
    try:
        log.write_text(BANNER)
        _requests(log, 0)
        d.follower.discover(force=True)
        _turns(d)
        os.rename(log, logs / "vllm.log.1")
        log.write_text(BANNER)
        _requests(log, 10)
        _turns(d)
        time.sleep(0.2)
        _turns(d)  # vllm.log.1 finished
        ino = (logs / "vllm.log.1").stat().st_ino
        os.unlink(logs / "vllm.log.1")
        new = logs / new_name
        if new == log:
            os.rename(log, logs / "vllm.log.1")
        _create_on_inode(new, ino)
        with open(new, "w") as fh:
            fh.write(BANNER + "x" * 300 + "\n")  # (past where the finished file ended: it could be read on from there)
        _requests(new, 20, 21, 22)
        _turns(d)
        time.sleep(0.2)
        _turns(d)
        _requests(new, 23)
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 10, 20, 21, 22, 23))


def test_a_new_empty_file_under_the_glob_is_read_at_the_next_turn(tmp_path):
    """An empty file is a prefix of any file (it could be copytruncate's copy, just created): it is
    asked again at each turn, not only at the next glob expansion, and read from its start once it
    has lines of its own — also by a daemon restarted just after (nothing lost)."""
    d, logs = _daemon(tmp_path, rotate_wait=5.0, rescan_globs=3600.0)
    log = logs / "vllm.log"
    new = logs / "vllm.log-20261128"  # a server started with `> vllm.log-$(date +%Y%m%d)`
    try:
        _requests(log, 0)
        d.follower.discover(force=True)
        _turns(d)
        new.touch()
        d.follower.dirty = True  # inotify's CREATE (a write is no reason to expand the glob)
        _turns(d)
        _requests(new, 30)
        _turns(d, 1)
        followed = sorted(r.state.path for r in d.follower.readers.values())
    finally:
        d.shutdown()
    assert followed == [str(log), str(new)]
    d, _ = _daemon(tmp_path, rotate_wait=5.0, rescan_globs=3600.0)
    try:
        _requests(new, 31)
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 30, 31))


def test_copytruncate_between_the_read_and_the_glob_of_one_turn(tmp_path):
    """The truncation lands after a turn's read and before its glob expansion: the copy is no
    prefix of the (now empty) followed file any more, but begins as it did; it waits for the next
    turn's read, which takes the copy's last lines (salvage) and finishes it."""
    d, logs, log = _following(tmp_path, 0.1, 0, 1)
    try:
        _requests(log, 2)
        shutil.copyfile(log, logs / "vllm.log.1")
        d.follower.dirty = True  # inotify: the copy's CREATE
        read = d.follower.poll

        def read_then_truncate():
            out = read()
            with open(log, "r+") as fh:
                fh.truncate(0)
            d.follower.poll = read
            return out

        d.follower.poll = read_then_truncate
        _turns(d, 1)
        _requests(log, 10)
        _turns(d)
        time.sleep(0.2)
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 1, 2, 10))


def test_copytruncates_copy_is_known_after_a_restart(tmp_path):
    """The copy's finished state is committed: a restarted daemon (which reads files it does not
    know from their start, `from_beginning`) does not read it again."""
    d, logs, log = _following(tmp_path, 0.1, 0, 1)
    try:
        _requests(log, 2)
        shutil.copyfile(log, logs / "vllm.log.1")
        with open(log, "r+") as fh:
            fh.truncate(0)
        _requests(log, 10)
        _turns(d)
    finally:
        d.shutdown()
    d, _ = _daemon(tmp_path, rotate_wait=0.1)
    try:
        _turns(d)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 1, 2, 10))


def test_two_globs_that_match_one_name_follow_it_once_without_an_error(tmp_path):
    """`*.log` and `vllm.log*` both name vllm.log: one name, one reader, and no "the same file as
    itself" error (which would raise the unreadable-log alert)."""
    from diag.daemon import config

    logs = tmp_path / "logs"
    logs.mkdir()
    _requests(logs / "vllm.log", 0)
    d = Daemon(config.Config(state_dir=tmp_path / "state", from_beginning=True, rescan_globs=0.0, use_inotify=False,
                             logs=[config.LogSpec(f"{logs}/*.log"), config.LogSpec(f"{logs}/vllm.log*")]))
    try:
        d.follower.discover(force=True)
        _turns(d)
        _requests(logs / "vllm.log", 1)
        _turns(d)
        errors = dict(d.follower.errors)
    finally:
        d.shutdown()
    _read_once(tmp_path, (0, 1))
    assert errors == {}


# -- retention: a finished file's row outlives `retention_days` while the file is on disk ----------------
DAY = 86400.0


def _retention_daemon(tmp_path, from_beginning: bool, glob_name: bool = True) -> tuple[Daemon, object, object]:
    """A daemon following vllm.log (`vllm.log*` or the plain name), retention_days 14 (the default)."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / "vllm.log"
    log.touch()
    cfg = config.Config(state_dir=tmp_path / "state", from_beginning=from_beginning, rescan_globs=0.0, rotate_wait=0.1,
                        use_inotify=False, logs=[config.LogSpec(f"{logs}/vllm.log*" if glob_name else str(log))])
    assert cfg.retention_days == 14
    d = Daemon(cfg)
    d.follower.discover(force=True)
    return d, logs, log


def _rotate_and_finish(d: Daemon, logs, log, old: tuple[int, ...], new: tuple[int, ...]) -> None:
    """logrotate (create): requests `old` end up in vllm.log.1, read to its end and finished; `new` in a new vllm.log."""
    _requests(log, *old)
    _turns(d)
    os.rename(log, logs / "vllm.log.1")
    _requests(log, *new)
    _turns(d)
    time.sleep(0.2)
    _turns(d)


def _restart(stopped: Daemon) -> None:
    """A daemon started again with the same configuration: what it reads at start, then stopped."""
    d = Daemon(stopped.cfg)
    try:
        d.follower.discover(force=True)
        _turns(d)
    finally:
        d.shutdown()


def _done_rows(tmp_path) -> dict[str, str]:
    """The finished files' rows: key -> the name they were read under."""
    with closing(Store(tmp_path / "state" / "diag.sqlite3", readonly=True)) as s:
        return {x.key: x.path for x in s.sources() if x.state == "done"}


def _counted_once(tmp_path, numbers) -> None:
    """Each request counted once and each OOM found once, over every run: the store's cumulative
    counters (what /metrics serves), which retention never prunes. Retention deletes the traces and
    findings rows older than it keeps; a file read again stores them again — and alerts again."""
    from diag.store import counters

    with closing(sqlite3.connect(f"file:{tmp_path / 'state' / 'diag.sqlite3'}?mode=ro", uri=True)) as db:
        requests = sum(v for _, v in counters.read(db, "requests"))
        ooms = sum(v for lab, v in counters.read(db, "findings") if lab["rule"] == "cuda-oom")
    assert (requests, ooms) == (len(numbers), len(numbers))


@pytest.mark.parametrize("from_beginning", [True, False], ids=["from_beginning", "from the end"])
def test_a_rotated_file_kept_past_retention_is_not_read_again_after_a_restart(tmp_path, from_beginning):
    """logrotate `rotate 4 weekly` keeps a rotated file four weeks, retention_days is 14: the row that
    says the file was read to its end stays while the file is there — also once logrotate renamed
    it on (.1 -> .2, the same inode) — so a daemon restarted after that, whose glob finds the file,
    neither reads it again nor raises its OOM alerts again (from_beginning reads a file it does not
    know from its first byte; without it a file present at start is read from its end)."""
    d, logs, log = _retention_daemon(tmp_path, from_beginning)
    try:
        _rotate_and_finish(d, logs, log, (0, 1), (10,))
        finished = (logs / "vllm.log.1").stat()
        d.retain(time.time() + 15 * DAY)  # the daemon has run on for 15 days
        os.rename(logs / "vllm.log.1", logs / "vllm.log.2")  # the next week's rotation
        os.rename(log, logs / "vllm.log.1")
        _requests(log, 20)
        _turns(d)
        time.sleep(0.2)
        _turns(d)
        d.retain(time.time() + 22 * DAY)
        assert f"{finished.st_dev}:{finished.st_ino}" in _done_rows(tmp_path)
    finally:
        d.shutdown()
    _requests(log, 21)
    _restart(d)
    _counted_once(tmp_path, (0, 1, 10, 20, 21))
    assert {0, 1} & set(_stored(tmp_path / "state")["oom"]) == set()  # (their rows went with the retention passes)


def test_a_rotated_file_deleted_past_retention_forgets_its_row_and_counts_its_lines(tmp_path):
    """Retention keeps a finished file's row while the file is there, and counts its lines as pruned
    (`lines_pruned`) only once the row goes — when logrotate deleted the file: /metrics' lines read
    of vllm.log (its rows' lines, plus those pruned) stays the same through both passes."""
    from diag.store import counters
    from diag.web.metrics import exposition, make_registry

    def lines() -> tuple[float, dict[str, float]]:
        """(lines counted as pruned, /metrics' diag_lines_read_total by path)"""
        with closing(Store(tmp_path / "state" / "diag.sqlite3", readonly=True)) as s:
            text = exposition(make_registry(lambda: s, lambda: {})).decode()
            pruned = sum(v for _, v in counters.read(s.db, "lines_pruned"))
        return pruned, {m[1]: float(m[2]) for m in re.finditer(r'^diag_lines_read_total\{path="([^"]*)"\} (\S+)$', text, re.M)}

    d, logs, log = _retention_daemon(tmp_path, from_beginning=True)
    try:
        _rotate_and_finish(d, logs, log, (0, 1), (10,))
        st = (logs / "vllm.log.1").stat()
        key = f"{st.st_dev}:{st.st_ino}"
        pruned, read = lines()
        assert pruned == 0 and read[str(log)] >= 8  # (the current file's last record may still be held)
        d.retain(time.time() + 15 * DAY)
        assert _done_rows(tmp_path) == {key: str(log)}
        assert lines() == (0, read)
        os.unlink(logs / "vllm.log.1")
        d.retain(time.time() + 15 * DAY)
        assert _done_rows(tmp_path) == {}
        assert lines() == (8, read)
    finally:
        d.shutdown()
    _counted_once(tmp_path, (0, 1, 10))


@pytest.mark.parametrize("same_inode", [False, True], ids=["another inode", "its inode, its first bytes"])
def test_a_rotated_file_replaced_under_its_name_past_retention_is_read(tmp_path, same_inode):
    """A finished file deleted and another one in its place under its name (with the same banner,
    on the freed inode: what ext4 hands out next): that is not the file the row is about — the row
    goes, and a restarted daemon reads the new file whole, once."""
    d, logs, log = _retention_daemon(tmp_path, from_beginning=True)
    rotated = logs / "vllm.log.1"
    try:
        log.write_text(BANNER)
        _rotate_and_finish(d, logs, log, (0, 1), (10,))
        ino = rotated.stat().st_ino
        new = logs / ".new"  # created while the finished file still holds its inode
        if same_inode:
            os.unlink(rotated)
            _create_on_inode(new, ino)
        with open(new, "w") as fh:
            fh.write(BANNER + "x" * 300 + "\n")  # (past where the finished file ended)
        _requests(new, 5, 6)
        os.replace(new, rotated)
        assert (rotated.stat().st_ino == ino) == same_inode
        d.retain(time.time() + 15 * DAY)
        assert _done_rows(tmp_path) == {}
    finally:
        d.shutdown()
    _restart(d)
    _counted_once(tmp_path, (0, 1, 5, 6, 10))
    oom = _stored(tmp_path / "state")["oom"]
    assert (oom[5], oom[6]) == (1, 1) and {0, 1} & set(oom) == set()  # the new file's, not the old one's again
