"""Feeding one source's bytes through the pipeline: fast records first, the full parser for the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO, Callable

from diag.parsing import events as E
from diag.parsing.events import Event
from diag.parsing.usercontent import kept_path, scrub
from diag.ingest.fastpath import classify as C
from diag.parsing.source import SourceParser
from diag.parsing.formats import uvicorn, vllm
from diag.parsing.wrappers import rfc3339, strip
from diag.ingest.reader import CHUNK, Line, LineSplitter, normalise, read_chunks

if TYPE_CHECKING:
    from diag.pipeline import Pipeline


def unwrap(prefix: str | None, ctx) -> int | None:
    """journalctl's prefix of a line the fast path takes (`classify`'s `wrap`): read by
    `wrappers.strip` itself, as the full path reads it (its time from the source's clock, in the
    line's order, before the line's own time is read; its width, by which journalctl indents a
    message's next lines; its pid, the line's unless a process tag names one). Returns that pid;
    None, and nothing read, for no prefix or a container runtime's time (`wrap_time` reads it)."""
    if prefix is None or prefix[0] <= "9":
        return None
    strip(prefix, ctx)
    return ctx.pid


def wrap_time(prefix: str | None, ctx) -> float | None:
    """The time of a line that has none of its own, from what came before it (`classify`'s `wrap`):
    a container runtime's (read here, only when it is needed) or journalctl's (read by `unwrap`)."""
    if prefix is None:
        return None
    return rfc3339(prefix[:-1]) if prefix[0] <= "9" else ctx.wrap_ts


class FastSource:
    """One source fed in chunks of bytes: read to the end (`diag scan`) or as it grows (the daemon).

    Line numbers, byte offsets, truncation of over-long lines and the unterminated last line
    follow `LineSplitter` exactly (it still handles every line that spans a chunk boundary).
    A record from the classifier is applied directly only when the full parser would have read
    the line the same way *now*: `SourceParser.between_records()` (nothing being assembled or
    held), the line is not as long as a believed terminal width (it would be held as a possible
    wrap), no parser that comes before the line's own in the source parser's order could claim
    it, and the user-content scrubber (URLs, queries, bodies) leaves its text as it is. Lines are parsed under
    the pipeline's guard: one a parser chokes on is counted and skipped.
    """

    def __init__(self, pipe: "Pipeline", parser: SourceParser, splitter: LineSplitter):
        from diag.ingest.fastpath import split_classify  # the selected implementation

        self.pipe = pipe
        self.parser = parser
        self.splitter = splitter
        self.path = parser.path
        self.lines = 0
        self.plain = 0  # lines applied straight to the trace assembler, without an event (`_plain`)
        self._split_classify = split_classify
        self._at = (0, 0)  # (line number, offset) just past the last line applied

    def read(self, f: BinaryIO, progress: Callable[[int], None] | None = None, chunk: int = CHUNK) -> None:
        """The whole stream, then its unterminated last line and the record still being assembled."""
        for data in read_chunks(f, chunk):
            self.feed(data)
            if progress is not None:
                progress(len(data))
        self._slow(self.splitter.flush())
        for ev in self.parser.flush():
            self.pipe.event(ev)

    def feed(self, data: bytes) -> int:
        """One chunk: every line it completes goes through the pipeline. Returns how many."""
        before = self.lines
        self._feed(data)
        return self.lines - before

    def _feed(self, data: bytes) -> None:
        sp = self.splitter
        if sp.crlf is None:
            sp.judge(data)
        if not sp.idle:  # the end of a line begun in the previous chunk
            nl = data.find(b"\n")
            if nl < 0:
                self._slow(sp.feed(data))
                return
            self._slow(sp.feed(data[:nl + 1]))
            data = data[nl + 1:]
        last = data.rfind(b"\n")
        if last < 0:
            self._slow(sp.feed(data))
            return
        self._block(data[:last])
        if last + 1 < len(data):
            self._slow(sp.feed(data[last + 1:]))

    def _block(self, body: bytes) -> None:
        sp = self.splitter
        max_line = sp.max_line
        lineno, offset = sp.lineno, sp.offset
        crlf = sp.crlf is True  # Windows line ends (`crlf_ends`): lines are classified without their \r
        records = self._split_classify(body, max_line, crlf)
        first = lineno
        try:
            self._apply(records, lineno, offset, crlf)
        finally:
            # where LineSplitter would be if it had handed these lines out (also if one of them raised)
            lineno, offset = self._at
            self.lines += lineno - first
            sp.lineno, sp.offset = lineno, offset

    def _apply(self, records: list, lineno: int, offset: int, crlf: bool = False) -> None:
        sp, parser, pipe = self.splitter, self.parser, self.pipe
        event, parse, took = pipe.event, pipe.parse, parser.took
        path = self.path
        max_line = sp.max_line
        order = parser.order
        VLLM, UVI = vllm, uvicorn
        ACCESS, RECEIVED, LOG = C.ACCESS, C.RECEIVED, E.LOG
        classify_msg, access_fields, stamp_time = vllm.classify, uvicorn.access_fields, vllm.stamp_time
        ctx = parser.ctx
        plain = None  # made when first needed, and again after an event went to the rules (`PlainWay`)
        try:
            for rec in records:
                lineno += 1
                if rec.__class__ is bytes:
                    offset += len(rec) + 1
                    truncated = len(rec) > max_line
                    if truncated:
                        sp.truncated_lines += 1
                        rec = rec[:max_line]
                    text, cr = normalise(rec, crlf)
                    for ev in parse(parser, Line(lineno, text, cr, truncated, offset)):
                        event(ev)
                        plain = None
                    continue
                kind = rec[0]
                raw = rec[1]
                offset += len(raw) + 1 + crlf  # (and its \r)
                text, start = rec[7], rec[8]
                if kind == ACCESS:
                    mod, other = UVI, VLLM
                    as_is = rec[10] and kept_path(rec[4])
                else:
                    mod, other = VLLM, UVI
                    as_is = rec[10]
                if not as_is:  # the classifier could not rule out user content: scrub says
                    scrubbed = scrub(text)
                    as_is = scrubbed is text or scrubbed == text
                if (not as_is or not parser.between_records() or not (order[0] is mod or (order[1] is mod and order[0] is other))
                        or parser.holds(start + len(text)) or (kind == RECEIVED and rec[9] is None)):
                    # the full parser decides (a record being assembled may take this line; user content to take out;
                    # a Received line whose id the classifier could not read may be the start of a record: `user_rest`)
                    text, cr = normalise(raw)
                    for ev in parse(parser, Line(lineno, text, cr, False, offset)):
                        event(ev)
                        plain = None
                    continue
                if plain is None:
                    plain = PlainWay(pipe, parser)
                if plain.apply(rec, kind == ACCESS, kind == RECEIVED, lineno, offset):
                    self.plain += 1
                    continue
                try:
                    wrap = rec[11]
                    wrap_pid = unwrap(wrap, ctx)
                    if kind == ACCESS:
                        _, _, client, method, hpath, status, msg, _, _, _, _, _ = rec
                        ev = Event(path, lineno, "uvicorn", LOG, "INFO", wrap_time(wrap, ctx), msg, None, wrap_pid)
                        access_fields(ev, client, method, hpath, status)
                    else:
                        _, _, proc, pid, stamp, src, msg, _, _, _, _, _ = rec
                        ts = stamp_time(stamp, ctx)
                        if ts is None:  # (as the full path: a wrapper's time for a line without one)
                            ts = wrap_time(wrap, ctx)
                        ev = Event(path, lineno, "vllm", LOG, "INFO", ts, msg, proc, pid if proc is not None else wrap_pid, src)
                        classify_msg(ev, msg)
                    took(ev, offset, raw)
                except Exception as exc:  # noqa: BLE001 - as the pipeline's parse guard: counted, the line skipped
                    pipe.internal.record("parse", path, lineno, exc)
                    parser.start_at(offset, lineno)
                    continue
                event(ev)
                plain = None
        finally:
            self._at = (lineno, offset)  # just past the last line applied (also if one of them raised)

    def _slow(self, lines) -> None:
        self.lines += self.pipe.feed_line_batch(self.parser, lines)


class PlainWay:
    """Applies one lifecycle record straight to the trace assembler, without an event, when that is
    the plain case (`TraceAssembler.plain_*`) and nothing but the assembler would look at the event
    (`Pipeline.lifecycle_open`); False: nothing was done, the line takes the event's way (also when
    finding that out raised: the event's way meets it again, under its guards).

    Made again after each event the rules saw: a busy log is nearly all such lines, and each of the
    objects and functions used here would otherwise be looked up again on every one of them. So is
    whether the rules would look at a Received or Added line at all (`Pipeline.lifecycle_open`),
    and which texts make them look at an access line (`Pipeline.lifecycle_needles`): only an event
    fed to them can change that (a hit they hold until a later line; a rule switched off only makes
    them look at less). An object rather than a closure: a built package compiles it to a C type
    (source.pxd) whose calls to the assembler, the parser and the pipeline are C calls."""

    __slots__ = ("pipe", "asm", "parser", "open_received", "open_added", "access_needles",
                 "access_path", "received", "received_known", "added_id", "stamp_time")

    def __init__(self, pipe: "Pipeline", parser: SourceParser) -> None:
        self.pipe = pipe
        self.asm = pipe.assembler
        self.parser = parser
        self.open_received = pipe.lifecycle_open("vllm", E.RECEIVED)
        self.open_added = pipe.lifecycle_open("vllm", E.ADDED)
        self.access_needles = pipe.lifecycle_needles("uvicorn", E.ACCESS)  # an access line's text asked of once
        self.access_path, self.received, self.received_known, self.added_id, self.stamp_time = (
            uvicorn.access_path, vllm.received, vllm.received_known, vllm.added_id, vllm.stamp_time)

    def apply(self, rec: tuple, access: bool, is_received: bool, lineno: int, offset: int) -> bool:
        asm = self.asm
        parser = self.parser
        path = parser.path
        try:  # is it the plain case? (changes nothing)
            wrap = rec[11]
            if access:
                _, raw, client, method, hpath, status, msg, _, _, _, _, _ = rec
                needles = self.access_needles
                if needles is None:
                    return False
                for n in needles:
                    if n in msg:
                        return False
                hpath = self.access_path(hpath)
                t = asm.plain_access(path, method, hpath)
                if t is None:
                    return False
                fmt, proc = "uvicorn", None
                pid = unwrap(wrap, parser.ctx)  # (once the line is known to be plain: reading it moves the clock)
                ts = wrap_time(wrap, parser.ctx)
            else:
                _, raw, proc, pid, stamp, _, msg, _, _, rid, _, _ = rec
                if is_received:
                    if not self.open_received:
                        return False
                    f: dict = {}
                    if rid is not None:  # the classifier read the id: what `received` would
                        self.received_known(msg, rid, f)
                    elif self.received(msg, f) is None:
                        return False
                    rid = f["request_id"]
                    cid = asm.plain_received(path, rid)
                    if cid is None:
                        return False
                else:
                    if not self.open_added:
                        return False
                    if rid is None:
                        rid = self.added_id(msg)
                    found = asm.plain_added(path, rid) if rid else None
                    if found is None:
                        return False
                wrap_pid = unwrap(wrap, parser.ctx)  # (before the line's own time, as the full path reads them)
                if proc is None:
                    pid = wrap_pid
                fmt, ts = "vllm", self.stamp_time(stamp, parser.ctx)
                if ts is None:
                    ts = wrap_time(wrap, parser.ctx)
        except Exception:  # noqa: BLE001 - the event's way parses the line again and records what it meets
            return False
        ts = parser.took_line(fmt, lineno, proc, pid, ts, offset, raw)
        pipe = self.pipe
        if (pipe.since is not None or pipe.until is not None) and pipe.outside(ts):
            pipe.dropped(ts, 1)
            return True  # taken, and dropped as `Pipeline.event` drops an event outside the window
        pipe.seen(ts)
        try:
            if access:
                asm.apply_access(t, path, lineno, client or None, method, hpath, status, ts)
            elif is_received:
                asm.apply_received(cid, rid, path, lineno, f, ts)
            else:
                asm.apply_added(found[0], found[1], path, lineno, ts)
        except Exception as exc:  # noqa: BLE001 - as the pipeline's guard around the assembler
            self.pipe.internal.record("traces", path, lineno, exc)
        return True
