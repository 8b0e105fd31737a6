"""Which file a name a glob finds is, when the glob also matches rotated names (`vllm.log*`).

logrotate renames the followed file to a name such a glob matches (`vllm.log.1`), or copies it
there and truncates it (copytruncate). Either way the glob then finds a file whose lines diag has
read already. The follower (`diag.ingest.follow`) asks this module before it opens a name:

* a file it has **finished** (read to its end after a rotation, then quiet for `rotate_wait`; or
  copytruncate's copy, once the truncation took its last lines from it) is known by its identity
  (device and inode) *and* its bytes where it begins and where it was read to (an inode of a
  deleted file may be taken by another, which may begin with the same banner): only what was
  written to it since is read, as the rotated file it is, under the name it had;
* a file whose bytes so far are a **prefix of a file being read** (its first bytes that file's, and
  its last ones too, at the same offsets) is copytruncate's copy being made, or an empty file: it
  is not opened yet. A new log stops being a prefix at its first own byte and is then read from
  its start; a server that starts with the same banner each time writes a file that only *begins*
  like the old one.

Compressed rotations (`vllm.log.2.gz`) are archives, not logs being written: a glob skips them.

A finished file is known after a restart by its stored state only: retention keeps that state
while the file is on disk as the same file (`still_on_disk`), however long logrotate keeps it.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from diag.fsname import file_key
from diag.ingest.filereader import FP_BYTES, FileReader, fingerprint_of
from diag.store.db import SourceState

COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".lzo", ".Z")  # what logrotate's compresscmd may write
FINISHED_KEPT = 256  # finished files remembered by identity (each rotation finishes one)


UNCHANGED = "unchanged"  # `FinishedFiles.finished_as`: a finished file with nothing new in it


class FinishedFiles:
    """The last state of each file read to its end, by key, the most recent FINISHED_KEPT."""

    def __init__(self) -> None:
        self._by_key: dict[str, SourceState] = {}

    def add(self, s: SourceState, fd: int) -> None:
        """`s`: the state of the file open as `fd`, read to `s.offset`; its end is fingerprinted here."""
        s.end_fingerprint = fingerprint_of(last_bytes(fd, s.offset))
        self._by_key.pop(s.key, None)
        self._by_key[s.key] = s  # the newest last: the oldest go first
        while len(self._by_key) > FINISHED_KEPT:
            del self._by_key[next(iter(self._by_key))]

    def finished_as(self, key: str, path: str, size: int, stored: SourceState | None) -> SourceState | str | None:
        """What the file `key` found at `path` (`size` bytes) is, if it is one read to its end under
        another name, in this run or (`stored`, the store's state of that key) one before a
        restart: its last state when it grew since (read on from there), UNCHANGED when it did not.
        None: another file — a name's own new file, or one that took a finished file's inode (its
        first bytes, or its bytes where the old one ended, differ)."""
        s = self._by_key.get(key)
        if s is None and stored is not None and stored.state == "done":
            s = stored
        if s is None or s.path == path or not is_finished_file(s, path, size):
            return None
        return s if size > s.offset else UNCHANGED


def is_finished_file(s: SourceState, path: str, size: int) -> bool:
    """Is the file at `path` (`size` bytes) the one `s` says was read to its end? Its first bytes
    are the ones `s` fingerprinted, and so are its bytes where it was read to (an inode freed and
    taken by a new file that begins with the same banner has other bytes there)."""
    if not (s.fp_len and starts_with(path, s.fingerprint, s.fp_len)):
        return False
    if not s.end_fingerprint:  # stored by a version that kept no end: known only while it has not grown
        return size == s.offset
    n = min(FP_BYTES, s.offset)
    end = _bytes_at(path, s.offset - n, n)
    return end is not None and len(end) == n and fingerprint_of(end) == s.end_fingerprint


def still_on_disk(finished: Iterable[SourceState],
                  where: Callable[[str], Iterable[str]] = lambda path: (os.path.dirname(path),)) -> set[str]:
    """The keys of these finished files that are still on disk as the same file: retention keeps
    their rows (a restarted daemon whose glob finds such a file must know it, or it reads it again
    from its first byte and raises its alerts again), and forgets the others.

    A rotated file keeps its inode while logrotate renames it on (`vllm.log.1`, `.2`, ...) until it
    deletes it, so it is looked for by device and inode among the files in the directory of the name
    it was read under, or in each of `where(name)` (its directory, and where logrotate's `olddir`
    moves it: `RotatedDirs.search`) — where `Follower` finds a file rotated while diag was down — then
    checked as `FinishedFiles.finished_as` does. Called once a minute with the rows past retention (a handful):
    a directory listing and a stat per entry, and two reads of at most FP_BYTES per file found —
    about 0.1 ms for a directory of 40 files and 10 us a file found, so nothing is cached: a check
    skipped while inode and size are unchanged would save little and miss a file rewritten in place."""
    by_dir: dict[str, dict[str, SourceState]] = {}
    for s in finished:
        for directory in where(s.path):
            by_dir.setdefault(directory, {})[s.key] = s
    kept = set()
    for directory, wanted in by_dir.items():
        try:
            entries = list(os.scandir(directory or "."))
        except FileNotFoundError:
            continue  # gone, and its files with it
        except OSError:  # not readable now: what is in it cannot be told, its rows are kept
            kept.update(wanted)
            continue
        for e in entries:
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except OSError:
                continue
            s = wanted.get(file_key(st))
            if s is not None and s.key not in kept and is_finished_file(s, e.path, st.st_size):
                kept.add(s.key)
    return kept


def _bytes_at(path: str, at: int, n: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), n, at)
    except (OSError, ValueError):
        return None


def last_bytes(fd: int, end: int) -> bytes:
    """The up to FP_BYTES bytes before `end` of the open file `fd`."""
    n = min(FP_BYTES, max(end, 0))
    return os.pread(fd, n, end - n) if n else b""


def starts_with(path: str, fingerprint: str, n: int) -> bool:
    """Does the file at `path` begin with the `n` bytes `fingerprint` was taken of?"""
    data = _bytes_at(path, 0, n)
    return data is not None and len(data) == n and fingerprint_of(data) == fingerprint


def prefix_of_followed(path: str, readers: Iterable[FileReader]) -> bool:
    """Are the bytes of the file at `path` so far a prefix of a file being read (compared at its
    start and at its end)? True for an empty file; and for one that begins as a file being read
    did, which is shorter now than where it was read to: truncated since the last look, its
    copy's last lines are taken first (the follower's salvage), and the copy is finished then."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(FP_BYTES)
            at = max(0, size - FP_BYTES)
            tail = os.pread(f.fileno(), FP_BYTES, at)
    except OSError:
        return False
    for r in readers:
        try:
            fd = r.fileno()
            now = os.fstat(fd).st_size
            n = r.state.fp_len
            if n and len(head) >= n and fingerprint_of(head[:n]) == r.state.fingerprint and now < os.lseek(fd, 0, os.SEEK_CUR):
                return True
            if now >= size and os.pread(fd, len(head), 0) == head and os.pread(fd, len(tail), at) == tail:
                return True
        except OSError:
            continue
    return False
