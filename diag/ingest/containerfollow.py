"""The daemon following a container runtime's log file as the server's own lines.

vLLM nearly always runs in a container, and a daemon on the node (a systemd service, a Kubernetes
DaemonSet) is naturally pointed at the runtime's files: `/var/log/containers/*.log` or
`/var/log/pods/…/0.log` (CRI: containerd, CRI-O) and `/var/lib/docker/containers/<id>/<id>-json.log`
(Docker's json-file driver). Read as they are, none of their lines is in a server's format. A
followed file whose first line is such a record (`container_format`, decided again from the file's
head whenever it is opened: the store keeps no place for it) is decoded record by record with the
decoder `diag scan` uses (`diag.ingest.containerlog.RecordDecoder`), so the splitter, the fast path
and the parser see exactly the `<time> <line>` lines scan sees, with the same line numbers.

What the follower stores, though, are offsets in the file's own bytes: it resumes, detects
truncation and commits by them. The parser's safe offset is in the decoded bytes' coordinates
(which begin at the raw offset the reader started at); `ContainerRecords` keeps, per decoded line
handed on, where it ends in both coordinates (and its line number) while nothing is held in the
decoder, and `raw_at` turns a decoded safe offset into the raw offset of the same record boundary:
resuming there decodes again exactly the lines not yet committed. A half record at the end of
the file waits (the raw offset stays before it), and so does a line's `P` piece whose `F` has not
come yet; `flush` takes them as they are when the writer has gone quiet, as the follower takes a
plain file's unterminated last line.

One case has no exact raw offset: while one stream's long line is held in pieces, the other
stream's lines that complete meanwhile are handed on (in the order scan gives), but the raw file
has no boundary between "those lines done" and "the pieces before them not". A commit whose safe
offset falls there is stored at the boundary before the pieces (the last point where nothing was
held): a restart after it reads those few lines again. Nothing is lost either way.
"""

from __future__ import annotations

from collections import deque

from diag.ingest.containerlog import MAX_CARRY, RecordDecoder
from diag.ingest.reader import Line, LineSplitter, crlf_ends

HEAD_BYTES = 64 << 10  # a file's first bytes its format (and a resumed file's line ends) are judged from


class ContainerRecords:
    """One followed file's raw bytes, read on from raw offset `offset` (line `lineno`), turned into
    the server's lines; decoded offsets start at `offset` too, so the splitter and parser of a
    reader that started there go on as they are."""

    def __init__(self, fmt: str, offset: int, lineno: int):
        self.fmt = fmt
        self._records = RecordDecoder(fmt)
        self._carry = b""
        self._raw = offset  # raw offset just past the last record taken (where the carry begins)
        self._dec = offset  # decoded offset: the end of what was handed on
        self._lineno = lineno  # decoded lines handed on (as the splitter counts them)
        # (decoded end, raw end, line number) at each point where nothing was held: oldest first,
        # pruned as commits pass them (`raw_at`)
        self._marks: deque[tuple[int, int, int]] = deque([(offset, offset, lineno)])

    @property
    def holding(self) -> bool:
        """A half record, or pieces of a line, are waiting for the rest."""
        return bool(self._carry) or self._records.holding

    def feed(self, data: bytes) -> bytes:
        """The decoded lines the raw bytes `data` complete (the rest waits for the next read)."""
        buf = self._carry + data if self._carry else data
        last = buf.rfind(b"\n")
        if last < 0:
            if len(buf) > MAX_CARRY:  # no record is this long: passed on as it is, as scan does (the splitter cuts it)
                self._carry = b""
                self._raw += len(buf)
                self._dec += len(buf)
                return buf
            self._carry = buf
            return b""
        self._carry = buf[last + 1:]
        records, marks = self._records, self._marks
        line_of = records.line
        raw, dec, lineno = self._raw, self._dec, self._lineno
        parts = []
        for rec in buf[:last].split(b"\n"):
            raw += len(rec) + 1
            out = line_of(rec)
            if out:
                parts.append(out)
                dec += len(out)
                lineno += out.count(b"\n")
                if not records.holding:
                    marks.append((dec, raw, lineno))
        self._raw, self._dec, self._lineno = raw, dec, lineno
        return b"".join(parts)

    def flush(self) -> bytes:
        """What waits (a half record, a line's pieces), as it is: the writer went quiet, or its file ended."""
        out = b""
        if self._carry:
            self._raw += len(self._carry)
            out = self._records.line(self._carry)
            self._carry = b""
        out += self._records.end_pieces()
        if out:
            self._dec += len(out)
            self._lineno += out.count(b"\n")
            self._marks.append((self._dec, self._raw, self._lineno))
        return out

    def raw_at(self, offset: int, lineno: int) -> tuple[int, int]:
        """The raw (offset, line number) to commit for the decoded safe position (`offset`, `lineno`):
        the same boundary, or the last one before it where nothing was held. Marks before it are
        dropped (commits only move forward)."""
        marks = self._marks
        while len(marks) > 1 and marks[1][0] <= offset:
            marks.popleft()
        dec, raw, at = marks[0]
        if dec == offset:
            return raw, lineno
        return raw, at


class DecodedSplitter:
    """A reader's line splitter fed through its `ContainerRecords`: what copytruncate's salvage and
    an idle flush feed (`feed`, `flush`, as `LineSplitter`'s)."""

    def __init__(self, records: ContainerRecords, splitter: LineSplitter):
        self.records = records
        self.splitter = splitter

    def feed(self, data: bytes) -> list[Line]:
        return list(self.splitter.feed(self.records.feed(data)))

    def flush(self) -> list[Line]:
        out = list(self.splitter.feed(self.records.flush()))
        out.extend(self.splitter.flush())
        return out


def decoded_line_ends(fmt: str, head: bytes) -> bool | None:
    """`crlf_ends` of the lines a file's first bytes decode to (a resumed reader's splitter is judged
    from the file's start, as scan judges it)."""
    return crlf_ends(ContainerRecords(fmt, 0, 0).feed(head))
