"""A rotated file that is only left compressed: its unread bytes, from the archive.

logrotate's `compress` without `delaycompress` compresses a rotated file at once. With
copytruncate, the copy the follower takes a truncated file's unread lines from
(`Follower._salvage`) is already `vllm.log.1.gz` when diag looks; a file renamed while diag was
down is only `vllm.log.1.gz` when it starts again, and the archive has a new inode, so it is not
found by identity (`Follower._resume_rotated`). Either way the lines diag had not read yet are in
the archive, and its decompressed bytes are the file's own bytes: the archive whose first
decompressed bytes carry the stored fingerprint, and which is at least as long as what was read,
is that file. It is read on from the same offset through the same splitter and parser, so lines,
line numbers and offsets are what they would have been, and nothing is read twice.

The search is bounded. Only names that fit the log's rotated names are opened (`vllm.log.1.gz`,
`vllm.log-20260124.gz`, with logrotate's `extension .log` `vllm.1.log.gz`: the log's name without
its extension, then something with a digit, then a suffix read here), in the directories where its
rotated files go (`diag.ingest.rotated_dirs`), the MAX_CANDIDATES most recently modified; of each,
the fingerprinted bytes are decompressed, and only the one that matches is decompressed on to the
offset (at most SKIP_LIMIT bytes: gzip decompresses at over 1 GB/s of log text). gzip, bzip2 and xz
are read with the standard library, streaming (READ_CHUNK at a time); other compressors
(`.zst`, ...) are passed over. A corrupt or truncated archive is one warning line: a candidate
that cannot be read is passed over, an archive that breaks while it is read ends there.
"""

from __future__ import annotations

import logging
import os
import re
from typing import BinaryIO, Callable

from diag.fsname import display
from diag.ingest.filereader import READ_CHUNK, FileReader, fingerprint_of, reader_at
from diag.ingest.reader import BROKEN, DECOMPRESSORS, Line, LineSplitter
from diag.ingest.rotated_dirs import RotatedDirs
from diag.parsing.source import PARSERS
from diag.store.db import SourceState

log = logging.getLogger("diag")

OPENERS: dict[str, Callable[[BinaryIO], BinaryIO]] = {  # by the suffix of a rotated name
    ".gz": DECOMPRESSORS[b"\x1f\x8b"], ".bz2": DECOMPRESSORS[b"BZh"], ".xz": DECOMPRESSORS[b"\xfd7zXZ\x00"]}
MAX_CANDIDATES = 8  # archives whose first bytes are decompressed, per search
SKIP_LIMIT = 1 << 32  # bytes decompressed at most to reach the offset read to (about 3 s of CPU)
_DIGIT = re.compile(r"\d")


class Archive:
    """An open compressed file, decompressed as a stream; `read` never raises: an archive that
    breaks is one warning, then its end."""

    def __init__(self, path: str, raw: BinaryIO, stream: BinaryIO):
        self.path = path
        self._raw = raw
        self._stream = stream
        self.pos = 0  # decompressed bytes read so far
        self.broken = False
        self.mtime = os.fstat(raw.fileno()).st_mtime

    @classmethod
    def open(cls, path: str) -> "Archive | None":
        opener = OPENERS.get(os.path.splitext(path)[1])
        if opener is None:
            return None
        raw = open(path, "rb")
        try:
            return cls(path, raw, opener(raw))
        except BaseException:
            raw.close()
            raise

    def read(self, n: int = READ_CHUNK) -> bytes:
        if self.broken:
            return b""
        try:
            data = self._stream.read1(n)  # type: ignore[attr-defined]  # (not `read`: what came before a break is kept)
        except BROKEN as exc:
            self.broken = True
            log.warning("%s: corrupt or truncated compressed data after byte %d (%s: %s); read no further",
                        display(self.path), self.pos, type(exc).__name__, exc)
            return b""
        self.pos += len(data)
        return data

    def read_exactly(self, n: int, keep: bool = True) -> bytes:
        """`n` bytes, fewer only at the end (or where the archive breaks); not `keep`: passed over
        (READ_CHUNK at a time), and b"" returned."""
        parts, left = [], n
        while left > 0:
            data = self.read(min(left, READ_CHUNK))
            if not data:
                break
            if keep:
                parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def fileno(self) -> int:
        return self._raw.fileno()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in (self._stream, self._raw):
            try:
                f.close()
            except BROKEN:
                pass


class ArchiveReader(FileReader):
    """A `FileReader` whose bytes are an archive's decompressed ones (`f` is an `Archive` positioned at
    the state's offset): the follower reads it to its end as the rotated file it is."""

    def chunk(self, n: int) -> bytes:
        return self.f.read(n)  # type: ignore[attr-defined]

    def head(self, n: int) -> bytes:
        """The archive's first `n` decompressed bytes."""
        try:
            a = Archive.open(self.f.path)  # type: ignore[attr-defined]
        except BROKEN:
            return b""
        if a is None:
            return b""
        with a:
            return a.read_exactly(n)


def fits_rotated_name(log_path: str, name: str) -> bool:
    """Could `name` (a file name) be one of `log_path`'s rotated files, compressed in a way read here?"""
    ext = os.path.splitext(name)[1]
    if ext not in OPENERS:
        return False
    base = os.path.basename(log_path)
    stem = os.path.splitext(base)[0] or base
    middle = name[len(stem):-len(ext)]
    return name.startswith(stem) and bool(_DIGIT.search(middle))


def _own_name(log_path: str, name: str) -> bool:
    """Is `name` (one that `fits_rotated_name`) unlike another log's: the log's whole name, or its
    name without the extension and then no letter or digit (`vllm.1.log.gz`, `vllm-20260124.log.gz`)?"""
    base = os.path.basename(log_path)
    stem = os.path.splitext(base)[0] or base
    return name.startswith(base) or not name[len(stem):len(stem) + 1].isalnum()


def find_archive(dirs: RotatedDirs, path: str, fp: str, fp_len: int, offset: int) -> Archive | None:
    """The archive of `path`'s rotated file that begins with the fingerprinted bytes and is at least
    `offset` bytes long decompressed, positioned at `offset`; None when there is none (or it lies
    past SKIP_LIMIT). The caller closes it."""
    if not fp_len:
        return None  # an empty file was fingerprinted: nothing tells its archive from another
    if offset > SKIP_LIMIT:
        log.warning("%s: its compressed copy would have to be decompressed past %d GiB to reach byte %d; not looked for",
                    display(path), SKIP_LIMIT >> 30, offset)
        return None
    found: list[tuple[bool, float, str]] = []

    names = dict.fromkeys((path, os.path.realpath(path)))  # (a symlink's target's rotated names: kubelet's /var/log/containers/*.log)

    def collect(e: os.DirEntry, st: os.stat_result) -> bool:
        for name in names:
            if fits_rotated_name(name, e.name):
                found.append((_own_name(name, e.name), st.st_mtime, e.path))
                break
        return False  # (all of them)

    dirs.find(path, collect)
    # the names that can only be this log's first (`worker1.log.1.gz`, not `worker10.log.1.gz`, which
    # fits `worker1.log` too: a glob's siblings rotated in the same run must not crowd it out), then
    # the one just rotated first
    found.sort(reverse=True)
    for _, _, candidate in found[:MAX_CANDIDATES]:
        a = _matching(candidate, fp, fp_len, offset)
        if a is not None:
            return a
    return None


def _matching(candidate: str, fp: str, fp_len: int, offset: int) -> Archive | None:
    """`candidate` positioned at `offset`, if it begins with the fingerprinted bytes and reaches it."""
    a = _open(candidate)
    if a is None:
        return None
    head = a.read_exactly(fp_len)
    if len(head) != fp_len or fingerprint_of(head) != fp:
        a.close()
        return None
    if offset < a.pos:  # read to less than was fingerprinted (a last line without its end): from the start again
        a.close()
        a = _open(candidate)
        if a is None:
            return None
    a.read_exactly(offset - a.pos, keep=False)
    if a.pos == offset:
        return a
    a.close()
    return None


def _open(candidate: str) -> Archive | None:
    try:
        return Archive.open(candidate)
    except BROKEN as exc:
        log.warning("%s: cannot be opened (%s); passed over", display(candidate), exc)
        return None


def take(f: Archive | BinaryIO, splitter: LineSplitter, budget: int) -> list[Line]:
    """The lines of what `f` (a file or an archive, positioned where the splitter is) holds, up to
    `budget` bytes (copytruncate's salvage: its lines are applied at once)."""
    out: list[Line] = []
    while budget > 0:
        data = f.read(min(READ_CHUNK, budget))
        if not data:
            break
        budget -= len(data)
        out.extend(splitter.feed(data))
    return out


def salvage_archive(a: Archive, path: str, splitter: LineSplitter, out: list[Line], budget: int) -> bool:
    """copytruncate's copy, compressed at once: the lines of its bytes past the offset read to
    (where `a` is), up to `budget` bytes, into `out`; closes it. False when bytes were left over."""
    start = a.pos
    with a:
        out.extend(take(a, splitter, budget))
        whole = not a.read(1)
    log.info("%s: truncated (copytruncate); read bytes %d.. from the compressed copy %s", display(path), start, display(a.path))
    return whole


def archived(dirs: RotatedDirs, s: SourceState, max_line: int, raw: bool) -> FileReader | None:
    """A reader of the file `s` was read from, rotated and compressed while diag was down (its inode
    is gone: `Follower._resume_rotated` did not find it), from `s.offset` in the archive's decompressed bytes."""
    a = find_archive(dirs, s.path, s.fingerprint, s.fp_len, s.offset)
    if a is None:
        return None
    s.state = "rotated"
    log.info("%s: finishing %s (rotated and compressed while diag was down) from byte %d", display(s.path), display(a.path), s.offset)
    return reader_at(s, a, display(s.path), a.mtime, s.format if s.format in PARSERS else None, max_line, raw, cls=ArchiveReader)
