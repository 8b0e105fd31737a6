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
from diag.ingest.containerlog import container_format
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

    def __post_init__(self) -> None:
        if self.consumed < 0:
            self.consumed = self.state.lines_read

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
        if self.raw:
            out.append(data)  # the consumer runs it through this reader's splitter, in order
        else:
            out.extend(self.splitter.feed(data))

    def _look(self, data: bytes) -> None:
        """A file followed from its start that is not a server's log as the server writes it, but
        what `diag scan` reads through a decoder (UTF-16 saved on Windows, a container runtime's
        log file): followed, its lines are bytes in no format. Said once, in one line."""
        self._looked = True
        if self.state.offset:
            return
        what = ("UTF-16 text" if utf16_encoding(data) else
                {"cri": "a Kubernetes (CRI) container log", "docker-json": "a Docker json-file container log"}.get(container_format(data) or ""))
        if what:
            log.warning("%s: %s: followed, its lines are in no server's format and nothing will be found in them; "
                        "follow the server's own log (or its `kubectl logs`/`docker logs` output), or `diag scan` this file",
                        display(self.state.path), what)

    def close(self) -> None:
        try:
            self.f.close()  # type: ignore[attr-defined]
        except OSError:
            pass

    def sync_state(self) -> SourceState:
        """The state to commit: the safe offset (a record being assembled is not done yet)."""
        s = self.state
        s.offset, s.lineno = self.parser.safe_offset
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
