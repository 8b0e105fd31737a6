"""One log file being read: its identity and the reader that takes its new bytes.

A file is known by device/inode (`diag.fsname.file_key`) plus a fingerprint of its first bytes
(`fingerprint_of`), never by name, so a rename or a copytruncate can be told from new content.
A `FileReader` holds the open descriptor, the line splitter and the source parser of one inode,
and turns what it reads into the state the store commits (`sync_state`): the offset up to which
every line is done, not what was merely read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from diag.fsname import display
from diag.ingest.containerfollow import HEAD_BYTES, DecodedSplitter, decoded_line_ends
from diag.ingest.containerlog import ContainerRecords, container_format
from diag.ingest.reader import Line, LineSplitter
from diag.ingest.utf16 import utf16_encoding
from diag.parsing.source import SourceParser
from diag.store.db import SourceState

log = logging.getLogger("diag")
FP_BYTES = 256
READ_CHUNK = 1 << 20
# What a live read asks for first. Asking the kernel for READ_CHUNK when a few lines are new
# allocates (and page-faults, then shrinks) a 1 MiB buffer on every turn: at a turn every 30-40 ms
# that was ~60 us of a ~1 ms turn. A read that fills this goes on to READ_CHUNK in a second call.
FOLLOW_READ = 64 << 10


def fingerprint_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class FileReader:
    """One inode being read: where we are, and the parser its lines go to."""

    state: SourceState
    f: object
    splitter: LineSplitter
    parser: SourceParser
    last_data: float = field(default_factory=time.monotonic)
    rotated_at: float | None = None
    pending_lines: list[Line] = field(default_factory=list)  # salvaged from a copy, fed before new reads
    raw: bool = False  # hand new data over as raw chunks (bytes) for the consumer to split (diag.ingest.fastpath)
    fast: Any = None  # the consumer's per-reader state for raw chunks
    consumed: int = -1  # lines fed to the parser, including any it still holds
    behind: bool = False  # the last read stopped at its size limit, not at the end of the file: more is waiting
    _head: tuple[str, bytes] | None = None  # (fingerprint, the bytes it was computed from), see `head_matches`
    _looked: bool = False  # at what kind of text its first bytes are (`_look`)
    # a container runtime's records decoded into the server's lines (`diag.ingest.containerfollow`)
    decoder: ContainerRecords | None = None
    _decided: bool = False  # whether the file's first line said if it is a runtime's log (`_decide`)
    _early: bytes = b""  # bytes read before the first line was complete (a new file): fed once it is

    def __post_init__(self) -> None:
        if self.consumed < 0:
            self.consumed = self.state.lines_read
        self._decide(self.head(HEAD_BYTES), False)

    def head(self, n: int) -> bytes:
        """The file's first `n` bytes (its format is judged from them)."""
        return os.pread(self.fileno(), n, 0)

    def _decide(self, head: bytes, force: bool) -> bool:
        """Decode the file's records (`decoder`) when its first line is a container runtime's
        record, as `diag scan` would; False while that line is not complete (unless `force`)."""
        if not force and b"\n" not in head and len(head) < HEAD_BYTES:
            return False
        self._decided = True
        fmt = container_format(head)
        if fmt is not None:
            sp = self.splitter
            self.decoder = ContainerRecords(fmt, sp.offset, sp.lineno)
            if sp.offset:  # resumed: line ends are judged from the file's first lines, decoded
                sp.crlf = decoded_line_ends(fmt, head)
        return True

    @property
    def key(self) -> str:
        return self.state.key

    def fileno(self) -> int:
        return self.f.fileno()  # type: ignore[attr-defined]

    def head_matches(self, head: bytes) -> bool:
        """Whether `head` (the file's first bytes now, at least `fp_len` of them) still starts with
        the bytes of the committed fingerprint: the file was not truncated and rewritten.

        Asked on every turn of the follow loop; hashing 256 bytes each time (an OpenSSL context
        set up and torn down, ~1 % of a following daemon's CPU) is needed only when the fingerprint
        is not the one last matched here: the bytes that matched are kept and compared instead."""
        s = self.state
        known = self._head
        mine = head[: s.fp_len]
        if known is not None and known[0] == s.fingerprint and len(known[1]) == s.fp_len:
            return mine == known[1]
        if fingerprint_of(mine) != s.fingerprint:
            return False
        self._head = (s.fingerprint, mine)
        return True

    def read(self, limit: int = READ_CHUNK) -> list[Line | bytes]:
        """New complete lines (or, `raw`, the chunk they are in), at most about `limit` bytes of them."""
        out: list[Line | bytes] = list(self.pending_lines)
        self.pending_lines = []
        fd = self.fileno()
        if self.behind or limit <= FOLLOW_READ:  # catching up: the last read was full, so is this one
            data = os.read(fd, limit)
        else:
            data = os.read(fd, FOLLOW_READ)
            if len(data) == FOLLOW_READ:
                data += os.read(fd, limit - FOLLOW_READ)
        self.behind = len(data) >= limit
        if not data:
            return out
        self.last_data = time.monotonic()
        self._take(out, data)
        return out

    def read_to_eof(self, budget: int = 64 * READ_CHUNK) -> list[Line | bytes]:
        out: list[Line | bytes] = []
        self.behind = False
        while budget > 0:
            data = self.chunk(READ_CHUNK)
            if not data:
                return out
            self.last_data = time.monotonic()
            self._take(out, data)
            budget -= len(data)
        self.behind = True
        return out

    def chunk(self, n: int) -> bytes:
        """The next bytes of the file (an archive's reader gives its decompressed ones: `diag.ingest.compressed`)."""
        return os.read(self.fileno(), n)

    def _take(self, out: list[Line | bytes], data: bytes) -> None:
        if not self._looked:
            self._look(data)
        if not self._decided:
            data = self._early + data
            self._early = b""
            if not self._decide(self.head(HEAD_BYTES), len(data) >= HEAD_BYTES):
                self._early = data  # a new file's first line is not complete yet
                return
        if self.decoder is not None:
            data = self.decoder.feed(data)
            if not data:
                return
        if self.raw:
            out.append(data)  # the consumer runs it through this reader's splitter, in order
        else:
            out.extend(self.splitter.feed(data))

    def _look(self, data: bytes) -> None:
        """A file followed from its start that is UTF-16 (saved on Windows), which `diag scan`
        reads through a decoder: followed, its lines are bytes in no format. Said once, in one
        line. (A container runtime's log file is decoded: `_decide`.)"""
        self._looked = True
        if self.state.offset:
            return
        if utf16_encoding(data):
            log.warning("%s: UTF-16 text: followed, its lines are in no server's format and nothing will be found in them; "
                        "follow the server's own log, or `diag scan` this file", display(self.state.path))

    @property
    def holding(self) -> bool:
        """Bytes wait for the rest of their line (or record, or a line's last piece)."""
        return bool(self.splitter.pending or self._early) or (self.decoder is not None and self.decoder.holding)

    @property
    def line_feed(self) -> LineSplitter | DecodedSplitter:
        """What turns this file's bytes into lines (`feed`, `flush`): its splitter, through its decoder if any."""
        return self.splitter if self.decoder is None else DecodedSplitter(self.decoder, self.splitter)

    def settle(self) -> list[Line]:
        """A new file whose first line is not complete yet (`_early`) is decided from what there is,
        and the lines its bytes so far complete are returned: before a flush, or the bytes of a
        copytruncate's copy that go on from them."""
        if self._decided:
            return []
        early, self._early = self._early, b""
        # (from its own first bytes when the file was read from its start: a truncated file's head is not them)
        self._decide(early if not self.splitter.offset else self.head(HEAD_BYTES), True)
        return list(self.line_feed.feed(early))

    def flush(self) -> list[Line]:
        """What waits for the rest of its line, as it is (the writer went quiet)."""
        out = self.settle()
        out.extend(self.line_feed.flush())
        return out

    def restart(self) -> None:
        """Read the file from its first byte again (truncated): lines, offsets and decoding start over."""
        self.splitter.offset = 0
        self.splitter.lineno = 0
        self.parser.start_at(0, 0)
        if self.decoder is not None:
            self.decoder = ContainerRecords(self.decoder.fmt, 0, 0)

    def close(self) -> None:
        try:
            self.f.close()  # type: ignore[attr-defined]
        except OSError:
            pass

    def sync_state(self) -> SourceState:
        """The state to commit: the safe offset (a record being assembled is not done yet)."""
        s = self.state
        s.offset, s.lineno = self.parser.safe_offset
        if self.decoder is not None:  # decoded bytes' coordinates: the raw offset of the same record boundary
            s.offset, s.lineno = self.decoder.raw_at(s.offset, s.lineno)
        held = self.parser._prev_lineno - s.lineno  # lines of a record still being assembled: read again after a crash
        s.lines_read = self.consumed - max(0, held)
        s.truncated_lines = self.splitter.truncated_lines
        try:
            s.size = os.fstat(self.fileno()).st_size
        except OSError:
            pass
        if self.parser.last_ts is not None:
            s.last_line_time = self.parser.last_ts
        s.format = self.parser.detected
        s.updated_at = time.time()
        return s


def reader_at(state: SourceState, f: object, name: str, mtime: float, fmt: str | None, max_line: int, raw: bool,
              cls: type[FileReader] = FileReader) -> FileReader:
    """A reader of `f` (positioned at `state.offset`) whose splitter and parser go on from the
    state's offset and line number: lines read on number and place as if never interrupted."""
    parser = SourceParser(name, mtime, fmt, stamp_now=True)
    parser.start_at(state.offset, max(state.lineno, 0))
    splitter = LineSplitter(max_line, state.offset, max(state.lineno, 0))
    splitter.truncated_lines = state.truncated_lines
    return cls(state, f, splitter, parser, raw=raw)
