"""Container runtimes' own log files, read as the lines the server wrote.

vLLM nearly always runs in a container, and the files its runtime keeps are what a post-mortem
often has: Kubernetes nodes' `/var/log/containers/*.log` and `/var/log/pods/…` (the CRI format of
containerd and CRI-O: `<RFC 3339 time> stdout|stderr F|P <line>`) and Docker's json-file driver
(`/var/lib/docker/containers/<id>/<id>-json.log`: `{"log":"<line>\\n","stream":…,"time":…}`).
Read as they are, no line was in any format: diag found nothing in them and said nothing.

Both runtimes cut a line longer than 16 KiB into pieces (CRI: `P` on all but the last; Docker:
no newline at the end of all but the last), and a vLLM Received line with a long prompt is such
a line: its pieces are joined again here, so the prompt stays one span that the vLLM parser masks
(a piece read on its own would be a line of the user's text). Each line comes out as
`docker logs --timestamps` prints it, `<time> <line>`, whose time the wrappers keep
(`diag.parsing.wrappers.DOCKER_TS`) for the lines that have none of their own.

`diag scan` reads such a file through `ContainerLogSource` (`diag.ingest.reader.open_source`), the
daemon follows it through `diag.ingest.containerfollow`: both turn each record into lines with the
one `RecordDecoder`.
"""

from __future__ import annotations

import json
import re
from collections import deque
from typing import Any, BinaryIO

from diag.ingest.decoded import DecodedSource

# `<time> <stream> <tags> <line>`: the first tag is P (partial) or F; more may follow after ":"
# (kubelet's kuberuntime/logs parser: "Keep this forward compatible").
CRI = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP])(?::[^ ]*)?(?: |$)")
_DOCKER = b'{"log":'
MAX_JOINED = 1 << 20  # a line joined from pieces: beyond this it is cut, as the line splitter would cut it
MAX_CARRY = 8 << 20  # a "line" of the runtime's file longer than this is passed on as it is, unread


def container_format(head: bytes) -> str | None:
    """"cri" or "docker-json" when a file's first line is one of those runtimes' records, else None."""
    first = head.split(b"\n", 1)[0]
    if CRI.match(first):
        return "cri"
    if first.startswith(_DOCKER) and first.rstrip(b"\r").endswith(b"}"):
        return "docker-json"
    return None


class RecordDecoder:
    """A runtime's records, one at a time, into the server's lines: the one decoder `diag scan`
    (`ContainerLogSource`) and the daemon (`diag.ingest.containerfollow`) share. A record that is
    not the runtime's (a file cut in the middle, a line of something else) is passed on as it is:
    nothing is lost."""

    def __init__(self, fmt: str):
        self._cri = fmt == "cri"
        # A long line's pieces so far, per stream: (the first piece's time, the pieces). The runtime
        # copies stdout and stderr each on its own, so the other stream's lines come between pieces.
        self._pieces: dict[bytes, tuple[bytes, bytes]] = {}

    @property
    def holding(self) -> bool:
        """Pieces of a line whose last piece has not come yet are held."""
        return bool(self._pieces)

    def line(self, line: bytes) -> bytes:
        """What one record (without its newline) completes: `<time> <line>\n` lines, or b"" (a piece held)."""
        if self._cri:
            m = CRI.match(line)
            if m is None:
                return self.end_pieces() + line + b"\n"
            ts, stream, text, whole = m.group(1), m.group(2), line[m.end():], m.group(3) == b"F"
        else:
            try:
                rec = json.loads(line)
                log, ts, stream = rec["log"], rec.get("time", ""), rec.get("stream")
                if not isinstance(log, str) or not isinstance(ts, str):
                    raise TypeError
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):  # (a line nested past the recursion limit)
                return self.end_pieces() + line + b"\n"
            whole = log.endswith("\n")
            text = (log[:-1] if whole else log).encode("utf-8", "replace")
            ts = ts.encode("ascii", "replace")
            stream = b"stderr" if stream == "stderr" else b"stdout"  # (two at most: memory stays bounded)
        held = self._pieces.get(stream)
        if not whole:
            if held is None:
                self._pieces[stream] = (ts, text[:MAX_JOINED])
            elif len(held[1]) < MAX_JOINED:
                self._pieces[stream] = (held[0], held[1] + text[:MAX_JOINED - len(held[1])])
            return b""
        if held is not None:
            del self._pieces[stream]
            ts, text = held[0], held[1] + text
        return (ts + b" " if ts else b"") + text + b"\n"

    def end_pieces(self) -> bytes:
        """Pieces whose last piece never came (the file ends, or something else follows): as they are."""
        if not self._pieces:
            return b""
        out = b"".join((ts + b" " if ts else b"") + text + b"\n" for ts, text in self._pieces.values())
        self._pieces.clear()
        return out


class ContainerRecords:
    """A runtime's file's raw bytes, read on from raw offset `offset` (line `lineno`), turned into
    the server's lines: the records each read completes, a record it cuts held for the next. For
    the daemon (`diag.ingest.containerfollow`) it also marks where each line handed on ends in
    both coordinates (`raw_at`); decoded offsets start at `offset` too, so the splitter and parser
    of a reader that started there go on as they are. `track=False`: no marks (`diag scan`).
    `records`: another decoder of one record per line, with `RecordDecoder`'s `line`, `end_pieces`
    and `holding` (a journal's JSON export: `diag.ingest.journalexport`), to be read the same way."""

    def __init__(self, fmt: str, offset: int = 0, lineno: int = 0, track: bool = True, records: Any = None):
        self.fmt = fmt
        self._track = track  # (what `diag scan` reads needs no raw offsets: `ContainerLogSource`)
        self._records = RecordDecoder(fmt) if records is None else records
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
        if not self._track:
            return b"".join(map(self._records.line, buf[:last].split(b"\n")))
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
        if out and self._track:
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


class ContainerLogSource(DecodedSource):
    """A runtime's log file read as `<time> <line>` lines (see the module doc): a read returns the
    lines the bytes read complete (`ContainerRecords`, the daemon's reader of these files too)."""

    def __init__(self, raw: BinaryIO, fmt: str, records: Any = None):
        super().__init__(raw)
        self._records = ContainerRecords(fmt, track=False, records=records)

    def _decode(self, data: bytes, final: bool) -> bytes:
        return self._records.flush() if final else self._records.feed(data)
