"""One pipeline, one direction: source → line parser → event → facts → traces → rules → sinks.

`diag scan` feeds it files read to the end; `diag daemon` feeds it files followed live. Only
the source differs; what happens to a line is the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from diag.parsing.events import LOG, RAW, STATS, Event
from diag.analysis.facts import FACT_KINDS, FactCollector
from diag.analysis.engine import RuleEngine
from diag.analysis.findings import FindingSet, Hit
from diag.analysis.guard import InternalErrors
from diag.parsing.source import SourceParser
from diag.ingest.reader import DEFAULT_MAX_LINE, Bundle, InputError, Line, LineSplitter, open_source, read_lines
from diag.analysis.rules.ruleset import RuleSet
from diag.analysis.trace import Trace
from diag.analysis.traces import TraceAssembler
from diag.fsname import display


MAX_SAMPLES = 200_000  # a week of 10 s stats lines from three servers; the daemon drains them at each commit


@dataclass
class SourceResult:
    path: str
    format: str = "unknown"
    lines: int = 0
    truncated_lines: int = 0
    events: int = 0  # lines read as a server's log line (format detection's count)
    error: str | None = None
    left_out: dict[str, list[str]] = field(default_factory=dict)  # an archive's members that are no logs, by why (`scan_archive`)
    recognised: bool = True  # False: lines, none of them a server's log line, and no rule matched any (`diag scan` says so)

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, "format": self.format, "lines": self.lines, "truncated_lines": self.truncated_lines}
        if self.error:
            d["error"] = self.error
        if not self.recognised:
            d["recognised"] = False
        return d


class Stats:
    """What a run counts. A class by hand, not a dataclass: a built package lays it out as a C type
    (pipeline.pxd), so counting an event is an increment, not two attribute lookups."""

    __slots__ = ("lines", "events", "started", "seconds", "outside", "outside_first", "outside_last")

    def __init__(self) -> None:
        self.lines = 0
        self.events = 0
        self.started = time.perf_counter()
        self.seconds = 0.0
        self.outside = 0  # lines the --since/--until window left out (`Pipeline.dropped`)
        self.outside_first: float | None = None  # the earliest and latest time of those lines
        self.outside_last: float | None = None

    def __repr__(self) -> str:
        return f"Stats(lines={self.lines}, events={self.events}, seconds={self.seconds}, outside={self.outside})"


class Pipeline:
    def __init__(self, ruleset: RuleSet, since: float | None = None, until: float | None = None,
                 on_hit: Callable[[Hit], None] | None = None, on_trace: Callable[[Trace], None] | None = None,
                 keep_traces: bool = True, max_line: int = DEFAULT_MAX_LINE, fast: bool = True,
                 trace_sink: Callable[[Trace], None] | None = None, keep_http: bool | None = None):
        self.since, self.until = since, until
        self.findings = FindingSet()
        self._on_hit = on_hit
        self._on_trace = on_trace
        self.keep_traces = keep_traces
        self._trace_sink = trace_sink  # hears of every trace once it is final (scan streams them out)
        self.traces: list[Trace] = []
        # HTTP records (access lines no trace took) feed the report's summary; the daemon only counts them
        self.assembler = TraceAssembler(on_done=self._trace_done, keep_http=keep_traces if keep_http is None else keep_http)
        self.facts = FactCollector()
        # Rules read traces (conditions on a request's fields); the findings they add to a trace go
        # through here to the assembler, which owns the traces.
        self.engine = RuleEngine(ruleset, on_hit=self._hit, trace_lookup=self.assembler.get,
                                 on_trace_finding=self.assembler.add_finding, facts_lookup=self.facts.by_source.get)
        self.stats = Stats()
        self.internal = InternalErrors()
        self.engine.internal = self.internal
        self.max_line = max_line
        self.fast = fast  # lifecycle lines through diag.ingest.fastpath (same events, less work)
        self.sources: list[SourceResult] = []
        self.last_ts: float | None = None  # the latest log time seen: "now" for a post-mortem
        self.samples: list[dict[str, Any]] = []  # engine stats lines (running, waiting, KV usage) for the store

    # -- sinks --------------------------------------------------------------------------
    def _hit(self, hit: Hit) -> None:
        self.findings.add(hit)
        if self._on_hit is not None:
            self._on_hit(hit)

    def _trace_done(self, t: Trace) -> None:
        """A trace leaves the assembler: run the trace rules one last time. `on_trace` hears of it
        only when that added findings or it changed since changes were last drained (everything else
        about it was already reported)."""
        before = len(t.findings)
        self.engine.check_trace(t, final=True)
        if self.keep_traces:
            self.traces.append(t)
        if self._trace_sink is not None:
            self._trace_sink(t)
        if self._on_trace is not None and (len(t.findings) != before or t.id in self.assembler.changed):
            self._on_trace(t)  # changed since the last time the daemon drained the changes
        self.assembler.changed.discard(t.id)  # it left the assembler: nothing more to drain (bounded memory)

    # -- events -------------------------------------------------------------------------
    def event(self, ev: Event) -> None:
        if self.outside(ev.ts):
            self.dropped(ev.ts, max(ev.end_lineno, ev.lineno) - ev.lineno + 1)
            return
        ts = ev.ts
        self.seen(ts)
        kind = ev.kind
        if kind == STATS and ts is not None and len(self.samples) < MAX_SAMPLES:
            self.samples.append(dict(ev.fields, source=ev.path, ts=ts))
        # One direction: facts → traces → rules, each stage under its own guard (a bug met by one
        # line costs that stage that line only).
        if kind in FACT_KINDS:  # startup facts are told in log records, never in request or access lines
            try:
                news = self.facts.feed(ev)
                if news is not None:
                    self.assembler.learn(ev.path, news.started, news.model)
                    if news.started:
                        self.engine.restarted(ev.path)
            except Exception as exc:  # noqa: BLE001
                self.internal.record("facts", ev.path, ev.lineno, exc)
        try:
            self.assembler.feed(ev)
        except Exception as exc:  # noqa: BLE001 - counted and logged by the guard
            self.internal.record("traces", ev.path, ev.lineno, exc)
        engine = self.engine
        if not engine.idle_for(ev):
            try:
                engine.feed(ev)
            except Exception as exc:  # noqa: BLE001
                self.internal.record("rules", ev.path, ev.lineno, exc)

    def outside(self, ts: float | None) -> bool:
        """Is a line of this time outside `--since`/`--until`? Such a line's event goes nowhere (an
        untimed one has the time of the line before it: `SourceParser.took_line`)."""
        return ts is not None and ((self.since is not None and ts < self.since) or (self.until is not None and ts > self.until))

    def dropped(self, ts: float, lines: int) -> None:
        """The window left out a record of `lines` lines at time `ts` (`outside`): counted, and its time
        kept if it is the earliest or latest so far, so that a scan whose window left everything out
        can say where the logs' times lie (`diag scan`)."""
        st = self.stats
        st.outside += lines
        if st.outside_first is None or ts < st.outside_first:
            st.outside_first = ts
        if st.outside_last is None or ts > st.outside_last:
            st.outside_last = ts

    def lifecycle_open(self, fmt: str, kind: str, text: str | None = None) -> bool:
        """May a lifecycle line of this format and kind go straight to the assembler, without an
        event (`TraceAssembler.apply_*`)? Only when the assembler is the one stage that would look
        at it: no rule would try its event's `text` (None: whatever the text; facts never read these
        kinds). A time window does not close it: the fast path asks `outside` of the line's time."""
        return self.engine.idle_for_line(fmt, kind, text)

    def lifecycle_needles(self, fmt: str, kind: str) -> tuple[str, ...] | None:
        """`lifecycle_open(fmt, kind, text)` for a lifecycle kind, as a question about the text, valid
        until the next event reaches the rules: open unless one of these is in the text; None:
        closed whatever the text."""
        if self.engine.holding or kind in (LOG, RAW):
            return None
        return self.engine.needles_for(fmt, kind)

    def seen(self, ts: float | None) -> None:
        """What the pipeline counts of every event it takes, and of a line the fast path applies
        without one: its time (the latest so far) and one event."""
        if ts is not None and (self.last_ts is None or ts > self.last_ts):
            self.last_ts = ts
        self.stats.events += 1

    def drain_changed(self) -> list[Trace]:
        """The traces changed since the last call (the daemon stores them), once the trace rules
        that need not wait for the end of input have looked at them: a request that failed because
        the engine died is reported when it fails, not when it leaves the assembler (which, on a
        server that just died, may be never)."""
        changed = self.assembler.drain_changed()
        for t in changed:
            try:
                self.engine.check_trace(t, final=False)
            except Exception as exc:  # noqa: BLE001 - counted and logged by the guard
                self.internal.record("rules", t.source, t.first_line, exc)
        return changed

    def forget(self, path: str) -> None:
        """A followed file is gone for good: every stage drops what it keeps for it (held hits are released)."""
        for stage, obj in (("rules", self.engine), ("traces", self.assembler), ("facts", self.facts)):
            try:
                obj.forget(path)
            except Exception as exc:  # noqa: BLE001
                self.internal.record(stage, path, 0, exc)

    def parse(self, parser: SourceParser, line: Line) -> list[Event]:
        """One line through its source's parser, guarded: a line the parser chokes on is skipped."""
        try:
            return parser.feed(line)
        except Exception as exc:  # noqa: BLE001
            self.internal.record("parse", parser.path, line.lineno, exc)
            return []

    def feed_line_batch(self, parser: SourceParser, lines: Iterable[Line], flush: bool = False) -> int:
        """Lines of one source through parser and stages; with `flush`, its last record too."""
        event, parse = self.event, self.parse
        n = 0
        for line in lines:
            n += 1
            for ev in parse(parser, line):
                event(ev)
        if flush:
            for ev in parser.flush():
                event(ev)
        return n

    def feed_lines(self, parser: SourceParser, lines: Iterable[Line], result: SourceResult) -> None:
        n = self.feed_line_batch(parser, lines, flush=True)
        result.lines += n
        self.stats.lines += n

    def scan_path(self, path: str, fmt: str | None = None, progress: Callable[[int], None] | None = None,
                  tail_bytes: int | None = None) -> SourceResult:
        """Read one file (or `-`) to the end through the pipeline; with `tail_bytes`, only its last
        part, from the first line boundary in it (a big log is not read whole; line numbers then
        count from there). The source is named by its display name (`diag.fsname`): whatever the
        bytes of a file's name, what comes out of the pipeline is text. An archive of several files
        (a support bundle) is read member by member, each its own source (`scan_archive`)."""
        name = display(path)
        res = SourceResult(name)
        self.sources.append(res)
        try:
            f, mtime = open_source(path)
        except Bundle as bundle:
            self.sources.pop()
            return self.scan_archive(path, bundle.kind, fmt, progress)
        except InputError as exc:
            res.error = str(exc)
            return res
        stdin = path == "-"
        return self.scan_stream(res, f, mtime, fmt, progress, None if stdin else tail_bytes, close=not stdin)

    def scan_named(self, name: str, f: Any, fmt: str | None = None) -> SourceResult:
        """A stream that is no file, read to its end as the source `name` (a unit's journal, which
        `diag doctor` reads from journalctl: `journalexport.read_recent`); the caller closes it."""
        res = SourceResult(name)
        self.sources.append(res)
        return self.scan_stream(res, f, None, fmt, close=False)

    def scan_archive(self, path: str, kind: str, fmt: str | None = None,
                     progress: Callable[[int], None] | None = None) -> SourceResult:
        """Each regular file in the archive at `path` (`kind`: "tar" or "zip") read as its own source,
        `<archive>:<member>` (`diag.ingest.archive`). Returns the archive's own result, the members'
        lines summed; the archive itself is one of `sources` (no lines) only when it could not be read on
        or holds no file."""
        from diag.ingest.archive import members

        whole = SourceResult(display(path))
        before = len(self.sources)
        try:
            for m in members(path, kind):
                if m.left_out is not None:  # said by the caller, as `diag scan DIR` says a directory's
                    whole.left_out.setdefault(m.left_out, []).append(m.name)
                    continue
                res = SourceResult(m.name, error=m.error)
                self.sources.append(res)
                if m.f is not None:
                    self.scan_stream(res, m.f, m.mtime, fmt, progress)
                whole.lines += res.lines
                whole.truncated_lines += res.truncated_lines
                whole.events += res.events
        except InputError as exc:
            whole.error = str(exc)
            self.sources.append(SourceResult(whole.path, error=whole.error))  # (its lines are its members')
        if len(self.sources) == before:  # no file in it: it was read all the same
            self.sources.append(SourceResult(whole.path))
        return whole

    def scan_stream(self, res: SourceResult, f: Any, mtime: float | None, fmt: str | None = None,
                    progress: Callable[[int], None] | None = None, tail_bytes: int | None = None,
                    close: bool = True) -> SourceResult:
        """An opened source (`reader.open_source`'s, an archive member's) read to its end as `res`
        (`tail_bytes`: see `scan_path`; a stream that cannot seek is read whole)."""
        name = res.path
        parser = SourceParser(name, mtime, fmt)
        splitter = LineSplitter(self.max_line)
        try:
            if tail_bytes is not None and f.seekable():
                size = f.seek(0, 2)
                f.seek(max(0, size - tail_bytes))
                if size > tail_bytes:
                    f.readline()  # a partial first line is not a line
            if self.fast:
                from diag.ingest.fastpath import FastSource

                src = FastSource(self, parser, splitter)
                try:
                    src.read(f, progress)
                finally:
                    res.lines += src.lines
                    self.stats.lines += src.lines
            else:
                lines = read_lines(f, splitter=splitter)
                if progress is not None:
                    lines = _with_progress(lines, progress)
                self.feed_lines(parser, lines, res)
        except InputError as exc:
            res.error = f"{name}: {exc}"
        finally:
            if close:
                f.close()
        res.truncated_lines = splitter.truncated_lines
        res.format = parser.detected
        res.events = sum(parser.counts.values())
        return res

    def finish(self, stuck_after: float = 300.0) -> list[Trace]:
        """End of all input: settle traces, run trace rules, release held hits."""
        self.engine.flush()
        if self.last_ts is not None:
            self.assembler.mark_stuck(self.last_ts, stuck_after)
        for t in self.assembler.finish():
            self._trace_done(t)
        self.traces.sort(key=lambda t: (t.source, t.first_line))
        self.stats.seconds = time.perf_counter() - self.stats.started
        return self.traces


def _with_progress(lines: Iterable[Line], progress: Callable[[int], None]) -> Iterable[Line]:
    last = 0
    for line in lines:
        if line.end_offset - last >= 1 << 20:
            progress(line.end_offset - last)
            last = line.end_offset
        yield line
