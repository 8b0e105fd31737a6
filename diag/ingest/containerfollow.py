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
decoder (`diag.ingest.containerlog.ContainerRecords`, the one `diag scan` reads with too, without
the marks), and `raw_at` turns a decoded safe offset into the raw offset of the same record boundary:
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

from diag.ingest.containerlog import ContainerRecords
from diag.ingest.reader import Line, LineSplitter, crlf_ends

HEAD_BYTES = 64 << 10  # a file's first bytes its format (and a resumed file's line ends) are judged from


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
