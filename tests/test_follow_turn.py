"""What one turn of the follow loop costs and still catches. A server that writes each line on its
own keeps the daemon turning 25 times a second: a live read asks the kernel for a small buffer
(not a 1 MiB one it then shrinks), and the per-turn truncation check compares the file's first
bytes with the ones it matched last time instead of hashing them again — while a file truncated
and rewritten past the read position between two turns is still caught."""

from __future__ import annotations

import os

from diag.daemon import config
from diag.ingest import filereader, follow

LINE = "(APIServer pid=1) INFO 01-24 10:00:00 [x.py:1] " + "y" * 50 + "\n"


def _follower(tmp_path, got: list) -> tuple[follow.Follower, str]:
    log = tmp_path / "vllm.log"
    log.write_text(LINE * 10)
    cfg = config.Config(logs=[config.LogSpec(str(log))], state_dir=tmp_path / "state", from_beginning=True, use_inotify=False)
    f = follow.Follower(cfg, [], consume=lambda r, lines, flush: got.extend(lines))
    f.discover(force=True)
    return f, str(log)


def _texts(out: list) -> list[str]:
    return [line.text for _r, lines in out for line in lines]


def test_a_live_read_asks_for_a_small_buffer_and_a_big_backlog_still_comes_whole(tmp_path, monkeypatch):
    got: list = []
    f, log = _follower(tmp_path, got)
    asked: list[int] = []
    real_read = os.read

    def spy(fd, n):
        asked.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(filereader.os, "read", spy)
    assert len(_texts(f.poll())) == 10
    with open(log, "a") as fh:
        fh.write(LINE * 3)
    assert len(_texts(f.poll())) == 3
    assert asked and max(asked) <= filereader.FOLLOW_READ  # a few new lines: no 1 MiB buffer

    # More than the small buffer holds: one poll still takes all of it (a second call), not 64 KiB of it.
    n = 2 * filereader.FOLLOW_READ // len(LINE)
    with open(log, "a") as fh:
        fh.write(LINE * n)
    r = next(iter(f.readers.values()))
    assert len(_texts(f.poll())) == n and not r.behind

    # A backlog past READ_CHUNK: the read stops at the limit, says it is behind, and the next asks for a full chunk at once.
    n = filereader.READ_CHUNK // len(LINE) + 100
    with open(log, "a") as fh:
        fh.write(LINE * n)
    asked.clear()
    first = len(_texts(f.poll()))
    assert r.behind and first < n
    asked.clear()
    assert first + len(_texts(f.poll())) == n and not r.behind
    assert asked[0] == filereader.READ_CHUNK
    f.close()


def test_truncated_and_rewritten_past_the_position_between_turns_is_caught_hashing_once(tmp_path, monkeypatch):
    got: list = []
    f, log = _follower(tmp_path, got)
    hashed: list[int] = []
    real = filereader.fingerprint_of

    def counting(data: bytes) -> str:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(filereader, "fingerprint_of", counting)
    monkeypatch.setattr(follow, "fingerprint_of", counting)
    f.poll()
    hashed.clear()
    for i in range(20):  # turns over a growing file: its first bytes are hashed at most once
        with open(log, "a") as fh:
            fh.write(LINE)
        assert len(_texts(f.poll())) == 1
    assert len(hashed) <= 1

    # copytruncate's second half with no copy to salvage from, then the server writes more than
    # was there before: the size alone says nothing, the first bytes differ.
    other = LINE.replace("yyyy", "zzzz")
    with open(log, "w") as fh:
        fh.write(other * 60)
    out = _texts(f.poll()) + _texts(f.poll())
    assert len(out) == 60 and all("zzzz" in t for t in out)  # read from byte 0, none taken from the middle
    assert f.rotations[log] == 1
    f.close()


def test_a_reader_resumed_from_a_stored_fingerprint_checks_against_it(tmp_path):
    """After a restart only the stored hash is known: the first check of a turn hashes, and a file
    whose first bytes no longer match it is read again from its start."""
    got: list = []
    f, log = _follower(tmp_path, got)
    f.poll()
    states = f.states()
    f.close()
    for s in states:  # as a daemon whose parser took the ten lines commits them (this consumer has no parser)
        s.offset, s.lineno = os.path.getsize(log), 10
    cfg = config.Config(logs=[config.LogSpec(log)], state_dir=tmp_path / "state", use_inotify=False)
    g = follow.Follower(cfg, states, consume=lambda r, lines, flush: got.extend(lines))
    g.discover(force=True)
    assert _texts(g.poll()) == []
    with open(log, "r+") as fh:  # rewritten in place, same inode, longer than before
        fh.write(LINE.replace("yyyy", "wwww") * 12)
    out = _texts(g.poll())
    assert len(out) == 12 and all("wwww" in t for t in out)
    g.close()
