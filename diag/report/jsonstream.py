"""`diag scan --json`, written as it is produced: bounded memory whatever the size of the logs.

The document keeps the shape the README documents (and `diag.report.document.to_json` builds in memory
for callers that want a dict). What differs is how it is made: each trace is serialised once,
when it leaves the pipeline, into a spool file; memory holds a few numbers per trace (where its
bytes are and its place in the document's order) and the running summary. At the end the
document is written in its documented order, traces copied from the spool sorted by source and
first line, each on one line, through one large buffer (one system call per MiB, also when
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

    def __init__(self) -> None:
        self.summary = TraceSummary()
        self._file = tempfile.TemporaryFile(prefix="diag-traces-")
        self._sources: dict[str, int] = {}
        self._src = array("I")
        self._line = array("Q")
        self._end = array("Q")
        self._size = 0
        self._buf: list[bytes] = []
        self._buffered = 0

    def __len__(self) -> int:
        return len(self._end)

    def add(self, t: Trace) -> None:
        sid = self._sources.setdefault(t.source, len(self._sources))
        self.summary.add_settled(t)
        data = trace_json(t)
        self._size += len(data)
        self._src.append(sid)
        self._line.append(t.first_line)
        self._end.append(self._size)
        self._buf.append(data)
        self._buffered += len(data)
        if self._buffered >= BUFFER:
            self._spill()

    def _spill(self) -> None:
        self._file.write(b"".join(self._buf))
        self._buf.clear()
        self._buffered = 0

    def order(self) -> list[int]:
        """Trace numbers sorted by (source, first line), ties in the order they settled."""
        rank = {sid: r for r, (_, sid) in enumerate(sorted(self._sources.items()))}
        src, line = self._src, self._line
        keys = [(rank[src[i]] << 44) | line[i] for i in range(len(src))]
        return sorted(range(len(keys)), key=keys.__getitem__)

    def write_to(self, out: BinaryIO, sep: bytes) -> None:
        """The traces, `sep` between them. Traces that follow each other in the spool (the common
        case: requests mostly settle in the order they arrived) are copied a MiB per read."""
        self._spill()
        f, end = self._file, self._end
        runs: list[list[int]] = []  # [start, stop) byte ranges of the spool, in document order
        for i in self.order():
            start = end[i - 1] if i else 0
            if runs and runs[-1][1] == start and end[i] - runs[-1][0] <= BUFFER:
                runs[-1][1] = end[i]
            else:
                runs.append([start, end[i]])
        for k, (start, stop) in enumerate(runs):
            f.seek(start)
            data = f.read(stop - start)
            if k:
                out.write(sep)
            # Inside a run, one trace's closing brace meets the next one's `{"id"`: a sequence no
            # serialised trace contains (its quotes inside strings are escaped).
            out.write(data.replace(b'}{"id"', b"}" + sep + b'{"id"'))

    def close(self) -> None:
        self._file.close()


def stdout_writer() -> BinaryIO:
    """A large buffer over standard output, whatever PYTHONUNBUFFERED says."""
    sys.stdout.flush()
    return open(sys.stdout.fileno(), "wb", buffering=BUFFER, closefd=False)


def write_document(pipe: Pipeline, spool: TraceSpool, out: BinaryIO, indent: int | None) -> None:
    """The whole document, the traces taken from `spool` (the pipeline kept none)."""
    doc = to_json(pipe, summary=spool.summary)
    doc["traces"] = _PLACEHOLDER
    text = json.dumps(doc, ensure_ascii=False, indent=indent)
    head, tail = text.split(json.dumps(_PLACEHOLDER), 1)
    out.write(head.encode("utf-8"))
    if not len(spool):
        out.write(b"[]")
    elif indent is None:
        out.write(b"[")
        spool.write_to(out, b", ")
        out.write(b"]")
    else:
        pad = b" " * indent
        out.write(b"[\n" + pad * 2)
        spool.write_to(out, b",\n" + pad * 2)
        out.write(b"\n" + pad + b"]")
    out.write(tail.encode("utf-8"))
    out.write(b"\n")
    out.flush()
