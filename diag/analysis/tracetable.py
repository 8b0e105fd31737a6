"""The traces being assembled, found by request id: open, recently ended, and their aliases.

The trace assembler (`diag.analysis.traces`) builds on this table. A request id as logged in
a source is scoped to that source's server run (`diag.analysis.traceids`); vLLM 0.14+ logs the
engine's id (the request's and `-<8 hex>`) on its Added line, which is aliased to the request's
trace. A trace's status is settled here from what is known of it so far; an ended one leaves
the open set for a small window of recent ones (late lines: a llama.cpp cancel after its
release) and is then handed over (`on_done`).

Memory is bounded: open traces are capped (the oldest is dropped and handed over as it is), so
are aliases and the recent window.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from diag.parsing.events import RECEIVED, STARTED, Event
from diag.analysis.access_index import AwaitingIndex
from diag.analysis.trace import Trace
from diag.analysis.traceids import IdScopes, engine_base

MAX_TIMELINE = 48
MAX_OPEN = 20000
RECENT = 512


class TraceTable:
    """The traces of the requests being assembled, by trace id, and what is settled about them."""

    __slots__ = ('alias', 'awaiting', 'changed', 'dropped', 'ends_logged', 'ids', 'max_open', 'models', 'on_done', 'open',
                 'recent')

    def __init__(self, on_done: Callable[[Trace], None] | None = None, max_open: int = MAX_OPEN):
        self.open: OrderedDict[str, Trace] = OrderedDict()
        self.recent: OrderedDict[str, Trace] = OrderedDict()
        self.alias: OrderedDict[str, str] = OrderedDict()
        self.on_done = on_done
        self.max_open = max_open
        self.models: dict[str, str] = {}  # source path -> served model name (from startup facts)
        # source -> traces without an access line yet (`diag.analysis.access_lines`); here because settling
        # a trace tells its index (a settled trace may no longer take one)
        self.awaiting: dict[str, AwaitingIndex] = {}
        self.changed: set[str] = set()
        self.dropped = 0
        self.ids = IdScopes()
        # Sources whose server logs explicit request ends (finish lines, timings, attached access lines):
        # only there does a request without an end show that it should have ended (stuck, never completed).
        self.ends_logged: set[str] = set()

    # -- lookup -------------------------------------------------------------------------
    def canonical(self, rid: str, path: str | None, sfx: str | None = None) -> str:
        """The trace id of request id `rid` as logged in `path` (`sfx`: that path's id suffix, when
        the caller has it already)."""
        if path is None:
            key = rid
        else:
            key = rid + (self.ids.suffix(path) if sfx is None else sfx)
        a = self.alias.get(key)
        if a is not None:
            return a
        if key in self.open or key in self.recent or path is None:
            return key
        base = engine_base(rid)
        if base is not None:
            bkey = base + key[len(rid):]
            if bkey in self.open or bkey in self.recent or "-" in base:
                self.add_alias(key, bkey)
                return bkey
        return key

    def add_alias(self, rid: str, base: str) -> None:
        aliases = self.alias
        aliases[rid] = base
        if len(aliases) > self.max_open:  # the oldest goes (once full, on every new alias)
            del aliases[next(iter(aliases))]  # not popitem(last=False): compiled, a keyword call builds a dict

    def get(self, rid: str, path: str | None = None) -> Trace | None:
        """The trace of a request id as logged in `path`, or of a trace id (path None)."""
        c = self.canonical(rid, path)
        return self.open.get(c) or self.recent.get(c)

    def trace_of(self, ev: Event, rid: str, create: bool = True) -> Trace | None:
        """The trace request id `rid` of event `ev` belongs to; a new one unless `create` is false."""
        path = ev.path
        sfx = self.ids.suffix(path)
        cid = self.canonical(rid, path, sfx)
        t = self.open.get(cid)
        if t is None:
            t = self.recent.get(cid)
            if t is not None and ev.kind in (RECEIVED, STARTED) and t._ended and ev.fmt in ("llamacpp", "lmdeploy"):
                # an ended task/session number starting again: the server restarted without startup lines
                self.ids.new_epoch(path)
                sfx = self.ids.suffix(path)
                t, cid = None, self.canonical(rid, path, sfx)
            if t is None and not create:
                return None
        if t is None:
            if len(self.open) >= self.max_open:
                _, old = self.open.popitem(last=False)
                self.dropped += 1
                self.settle_final(old)
                self.hand_over(old)
            t = self.open_trace(cid, rid, ev.fmt if ev.fmt != "uvicorn" else "vllm", path, ev.lineno)
        key = rid + sfx
        if key != cid and key not in self.alias:
            self.add_alias(key, cid)
        return t

    def open_trace(self, cid: str, rid: str, server: str, path: str, lineno: int) -> Trace:
        """A new open trace (the open set has room)."""
        t = self.open[cid] = Trace(cid, server, path, self.models.get(path))
        t.first_line = lineno
        if rid.startswith(("chatcmpl-", "chat-")):
            t.endpoint = "chat"
        elif rid.startswith("cmpl-"):
            t.endpoint = "completions"
        return t

    def await_access(self, t: Trace, aw: AwaitingIndex | None) -> None:
        """`t` waits for its access line (`aw`: its source's index, when there is one yet)."""
        if aw is None:
            aw = self.awaiting[t.source] = AwaitingIndex()
        aw.add(t)

    def add_timeline(self, t: Trace, kind: str, ts: float | None, lineno: int, path: str) -> None:
        tl = t.timeline
        if len(tl) < MAX_TIMELINE:
            if path == t.source:  # the trace's own source is implied (keeps the stored state small)
                tl.append({"kind": kind, "time": ts, "line": lineno})
            else:
                tl.append({"kind": kind, "time": ts, "line": lineno, "path": path})

    # -- status -------------------------------------------------------------------------
    def settle(self, t: Trace) -> None:
        """Recompute status and latency from what is known so far."""
        if not (t._failed or t._aborted or t._completed or t._ended) and t.http_status is None:
            t.status = "in_flight"  # nothing else can change for a request plainly in flight (the common case)
            return
        if t._failed:
            t.status = "rejected" if (t.http_status is not None and 400 <= t.http_status < 500) else "failed"
        elif t._aborted:
            t.status = "aborted"
        elif t._completed:
            t.status = "ok"
        elif t.http_status is not None:
            t.status = "ok" if t.http_status < 400 else ("rejected" if t.http_status < 500 else "failed")
        elif t._ended:
            t.status = "unknown"
        else:
            t.status = "in_flight"
        aw = self.awaiting.get(t.source)
        if aw is not None:
            aw.settled(t)
        if t._completed or t.http_status is not None or (t._ended and not t._aborted and not t._failed and t.server == "llamacpp"):
            self.ends_logged.add(t.source)
        if t.latency_s is None and t.received_at is not None:
            end = t.finished_at or t.failed_at or t.aborted_at
            if end is not None and end >= t.received_at and t.status != "in_flight":
                t.latency_s = round(end - t.received_at, 3)
        if t.status != "in_flight" and t.id in self.open and (t._ended or t.http_status is not None or t._completed):
            # Keep it reachable a little longer for late lines, but out of the open set. (Subscripts
            # rather than pop/popitem(last=False): compiled, a method call with a keyword builds a dict.)
            recent = self.recent
            del self.open[t.id]
            recent[t.id] = t
            while len(recent) > RECENT:
                oldest = next(iter(recent))
                old = recent[oldest]
                del recent[oldest]
                self.hand_over(old)

    def settle_final(self, t: Trace) -> None:
        """No line can follow: settle `t` for good and take it out of the table."""
        self.settle(t)
        if t.status == "in_flight" and t.source not in self.ends_logged:
            t.status = "unknown"  # this server logs no request ends: nothing shows it should have ended
        self.open.pop(t.id, None)
        self.recent.pop(t.id, None)

    def hand_over(self, t: Trace) -> None:
        t._text = ""
        if self.on_done is not None:
            self.on_done(t)

    def mark_stuck(self, now: float, after: float) -> list[Trace]:
        """Requests received more than `after` seconds before `now` and still in flight."""
        out = []
        for t in self.open.values():
            if (t.status == "in_flight" and not t.stuck and t.received_at is not None and now - t.received_at > after
                    and t.source in self.ends_logged):  # stuck only where the log shows it should have ended
                t.stuck = True
                self.changed.add(t.id)
                out.append(t)
        return out

    def drain_changed(self) -> list[Trace]:
        out = []
        for tid in self.changed:
            t = self.open.get(tid) or self.recent.get(tid)
            if t is not None:
                out.append(t)
        self.changed.clear()
        return out
