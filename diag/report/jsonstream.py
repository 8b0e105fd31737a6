"""`diag scan --json`, written as it is produced: bounded memory whatever the size of the logs.

The document keeps the shape the README documents (and `diag.report.document.to_json` builds in memory
for callers that want a dict). What differs is how it is made: each trace is serialised once,
when it leaves the pipeline, into a spool file; memory holds a few numbers per trace (where its
bytes are and its place in the document's order) and the running summary. At the end the
document is written in its documented order, traces copied from the spool sorted by source and
first line, each on one line (spooled after the separator it has in the document, so that a run
of traces in order is copied as it is), through one large buffer (one system call per MiB, also when
PYTHONUNBUFFERED is set, as many container images do).
"""

from __future__ import annotations

import json
import sys
import tempfile
from array import array
from typing import Any, BinaryIO

from diag.pipeline import Pipeline
from diag.report.document import TraceSummary, to_json
from diag.analysis.trace import Trace
from diag.report.tracejson import trace_json

_PLACEHOLDER = "\x00diag-traces\x00"
BUFFER = 1 << 20


class TraceSpool:
    """Traces serialised as they settle, in a temporary file, replayed in document order."""

    __slots__ = ("summary", "indent", "_sep", "_file", "_sources", "_src", "_line", "_end", "_size", "_buf", "_spilled")

    def __init__(self, indent: int | None = None) -> None:
        """`indent`: the document's (`write_document`'s); each trace is spooled after the separator
        it has there, so that traces which follow each other in the spool are copied as they are."""
        self.summary = TraceSummary()
        self.indent = indent
        self._sep = b", " if indent is None else b",\n" + b" " * (2 * indent)
        self._file = tempfile.TemporaryFile(prefix="diag-traces-")
        self._sources: dict[str, int] = {}
        self._src = array("I")
        self._line = array("Q")
        self._end = array("Q")
        self._size = 0  # bytes serialised so far
        self._buf: list[bytes] = []  # those not yet in the file
        self._spilled = 0  # bytes in the file

    def __len__(self) -> int:
        return len(self._end)

    def add(self, t: Trace) -> None:
        """Once per request: kept to a few lookups (the summary's counts, the bytes, where they are)."""
        source = t.source
        sid = self._sources.get(source)
        if sid is None:
            sid = self._sources[source] = len(self._sources)
        self.summary.add(t)  # its place: (source, first line, arrival)
        data = trace_json(t)
        size = self._size = self._size + len(self._sep) + len(data)
        self._src.append(sid)
        self._line.append(t.first_line)
        self._end.append(size)
        self._buf.append(self._sep)
        self._buf.append(data)
        if size - self._spilled >= BUFFER:
            self._spill()

    def _spill(self) -> None:
        self._file.write(b"".join(self._buf))
        self._buf.clear()
        self._spilled = self._size

    def order(self) -> list[int]:
        """Trace numbers sorted by (source, first line), ties in the order they settled."""
        rank = {sid: r for r, (_, sid) in enumerate(sorted(self._sources.items()))}
        src, line = self._src, self._line
        keys = [(rank[src[i]] << 44) | line[i] for i in range(len(src))]
        return sorted(range(len(keys)), key=keys.__getitem__)

    def write_to(self, out: BinaryIO) -> None:
        """The traces, the separator between them. Each is spooled after its separator, and traces
        that follow each other in the spool (the common case: requests mostly settle in the order
        they arrived) are copied as they are, up to a MiB per read; the first one's goes."""
        self._spill()
        end, skip = self._end, len(self._sep)
        first = True
        run_start = run_stop = -1  # the [start, stop) byte range of the spool being gathered
        for i in self.order():
            start = end[i - 1] if i else 0
            stop = end[i]
            if start == run_stop and stop - run_start <= BUFFER:
                run_stop = stop
                continue
            if run_stop >= 0:
                self._copy(out, run_start + skip if first else run_start, run_stop)
                first = False
            run_start, run_stop = start, stop
        if run_stop >= 0:
            self._copy(out, run_start + skip if first else run_start, run_stop)

    def _copy(self, out: BinaryIO, start: int, stop: int) -> None:
        self._file.seek(start)
        out.write(self._file.read(stop - start))

    def close(self) -> None:
        self._file.close()


def stdout_writer() -> BinaryIO:
    """A large buffer over standard output, whatever PYTHONUNBUFFERED says."""
    sys.stdout.flush()
    return open(sys.stdout.fileno(), "wb", buffering=BUFFER, closefd=False)


def write_document(pipe: Pipeline, spool: TraceSpool, out: BinaryIO, warnings: list[str] | None = None) -> None:
    """The whole document, the traces taken from `spool` (the pipeline kept none), indented as the
    spool's traces were spooled for (`TraceSpool(indent=…)`); `warnings`: what `diag scan` said of
    what it could not analyse (`to_json`)."""
    indent = spool.indent
    doc = to_json(pipe, summary=spool.summary, warnings=warnings)
    doc["traces"] = _PLACEHOLDER
    text = json.dumps(doc, ensure_ascii=False, indent=indent)
    head, tail = text.split(json.dumps(_PLACEHOLDER), 1)
    out.write(head.encode("utf-8"))
    if not len(spool):
        out.write(b"[]")
    elif indent is None:
        out.write(b"[")
        spool.write_to(out)
        out.write(b"]")
    else:
        pad = b" " * indent
        out.write(b"[\n" + pad * 2)
        spool.write_to(out)
        out.write(b"\n" + pad + b"]")
    out.write(tail.encode("utf-8"))
    out.write(b"\n")
    out.flush()
