"""Per-request traces assembled from lifecycle events.

One trace per request id joins every line that belongs to it: vLLM's Received / Added (with
the 0.14+ `-<8hex>` engine suffix mapped back) / Aborted / failed / Generated response,
LMDeploy sessions, llama.cpp tasks, the deployment guide's `req-…` lines.

Access lines (uvicorn, nginx, http.server) carry no request id. They are attached to a trace
only when that is unambiguous, by this rule:

* only POSTs to a generation endpoint are candidates, and only for traces of the same source
  file whose id family matches the endpoint (`chatcmpl-` ↔ chat, `cmpl-` ↔ completions);
* a candidate trace has been received, has no HTTP status yet and was not aborted;
* the line comes right after the explicit end of a candidate (LMDeploy's `session N finished`,
  vLLM's `Request X failed`), with no other request line between them → attached to it;
* exactly one candidate → the line is attached (status and client address);
* several candidates → the lines wait; when as many lines wait as there are candidates and
  all carry the same status, that status is attached to all of them (not the client, which
  stays ambiguous);
* otherwise the line stays an HTTP record of its own.

Memory is bounded: open traces are capped, ended ones are handed over (`done`) and only a
small window of recent ones is kept for late lines (a llama.cpp cancel after its release).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from diag.parsing.events import (ABORTED, ACCESS, ADDED, FAILED, FINISHED, OUTPUT, RECEIVED, REQUEST_KINDS, STARTED, STATS,
                                 TIMING, Event)
from diag.analysis.access_index import AwaitingIndex
from diag.analysis.trace import Trace
from diag.analysis.traceids import IdScopes

GEN_ENDPOINTS = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions", "/completion",
                           "/v1/responses", "/generate", "/v1/messages"})
NO_IMAGE_PHRASES = ("看不到图片", "看不到图像", "没有看到图片", "没有图片", "无法看到图片", "无法查看图片", "没有提供图片",
                    "can't see the image", "cannot see the image", "can't see any image", "no image was provided",
                    "don't see an image", "do not see an image", "unable to see the image")
# the id family an endpoint's requests have (`chatcmpl-` ↔ chat, `cmpl-` ↔ completions), None: any
_FAMILY = {p: "completions" if "completions" in p and "chat" not in p else ("chat" if "chat" in p else None) for p in GEN_ENDPOINTS}
MAX_TIMELINE = 48
MAX_OPEN = 20000
RECENT = 512


def _engine_base(rid: str) -> str | None:
    """vLLM 0.14+: the engine's id is the request's id and "-<8 hex>"; that request id, or None."""
    n = len(rid)
    if n <= 9 or rid[n - 9] != "-":
        return None
    for i in range(n - 8, n):  # a loop of characters: a built package compiles it to C (traces.pxd)
        if rid[i] not in "0123456789abcdef":
            return None
    return rid[:-9]


def _says_no_image(low: str) -> bool:
    """Do the first generated characters say the model saw no image?"""
    return any(p in low for p in NO_IMAGE_PHRASES)


def _measured(t: Trace, f: dict[str, Any]) -> None:
    """What a request line measured of the request (never its text)."""
    for key in ("prompt_tokens", "max_tokens", "images", "prompt_chars"):
        v = f.get(key)
        if v is not None:
            setattr(t, key, v)


class TraceAssembler:
    __slots__ = ('_awaiting', '_just_ended', '_last_started', '_waiting', 'alias', 'changed', 'dropped', 'ends_logged', 'http_count', 'http_records', 'ids', 'keep_http', 'max_open', 'models', 'on_done', 'open', 'recent')

    def __init__(self, on_done: Callable[[Trace], None] | None = None, max_open: int = MAX_OPEN, keep_http: bool = True):
        self.open: OrderedDict[str, Trace] = OrderedDict()
        self.recent: OrderedDict[str, Trace] = OrderedDict()
        self.alias: OrderedDict[str, str] = OrderedDict()
        self.on_done = on_done
        self.max_open = max_open
        self.models: dict[str, str] = {}  # source path -> served model name (from startup facts)
        self.http_records: list[dict[str, Any]] = []
        self.http_count = 0
        self._waiting: dict[str, list[Event]] = {}  # source -> access lines waiting for disambiguation
        self._last_started: dict[str, str] = {}  # source -> last llama.cpp task (classic image lines)
        self._just_ended: dict[str, Trace] = {}  # source -> trace whose end was the last request line
        self._awaiting: dict[str, AwaitingIndex] = {}  # source -> traces without an access line yet
        self.changed: set[str] = set()
        self.dropped = 0
        self.keep_http = keep_http  # `diag scan` reports HTTP records; the daemon only counts them
        self.ids = IdScopes()
        # Sources whose server logs explicit request ends (finish lines, timings, attached access lines):
        # only there does a request without an end show that it should have ended (stuck, never completed).
        self.ends_logged: set[str] = set()

    # -- lookup -------------------------------------------------------------------------
    def _canonical(self, rid: str, path: str | None, sfx: str | None = None) -> str:
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
        base = _engine_base(rid)
        if base is not None:
            bkey = base + key[len(rid):]
            if bkey in self.open or bkey in self.recent or "-" in base:
                self._alias(key, bkey)
                return bkey
        return key

    def _alias(self, rid: str, base: str) -> None:
        aliases = self.alias
        aliases[rid] = base
        if len(aliases) > self.max_open:  # the oldest goes (once full, on every new alias)
            del aliases[next(iter(aliases))]  # not popitem(last=False): compiled, a keyword call builds a dict

    def get(self, rid: str, path: str | None = None) -> Trace | None:
        """The trace of a request id as logged in `path`, or of a trace id (path None)."""
        c = self._canonical(rid, path)
        return self.open.get(c) or self.recent.get(c)

    def learn(self, path: str, started: bool, model: str | None) -> None:
        """What the facts stage learnt from a record of `path`: a server start (ids logged from now
        on belong to a new run) and the served model name (later traces carry it)."""
        if started:
            self.ids.new_epoch(path)
        if model:
            self.models[path] = model

    def add_finding(self, t: Trace, rule_id: str) -> None:
        """A rule found something about this request (the rules stage reports it; traces are only
        changed here)."""
        if rule_id not in t.findings:
            t.findings.append(rule_id)

    def _trace(self, ev: Event, rid: str, create: bool = True) -> Trace | None:
        path = ev.path
        sfx = self.ids.suffix(path)
        cid = self._canonical(rid, path, sfx)
        t = self.open.get(cid)
        if t is None:
            t = self.recent.get(cid)
            if t is not None and ev.kind in (RECEIVED, STARTED) and t._ended and ev.fmt in ("llamacpp", "lmdeploy"):
                # an ended task/session number starting again: the server restarted without startup lines
                self.ids.new_epoch(path)
                sfx = self.ids.suffix(path)
                t, cid = None, self._canonical(rid, path, sfx)
            if t is None and not create:
                return None
        if t is None:
            if len(self.open) >= self.max_open:
                _, old = self.open.popitem(last=False)
                self.dropped += 1
                self._settle_final(old)
                self._finish(old)
            t = self._open(cid, rid, ev.fmt if ev.fmt != "uvicorn" else "vllm", path, ev.lineno)
        key = rid + sfx
        if key != cid and key not in self.alias:
            self._alias(key, cid)
        return t

    # -- events -------------------------------------------------------------------------
    def feed(self, ev: Event) -> Trace | None:
        """Apply one event; returns the trace it touched, if any."""
        k = ev.kind
        if k == ACCESS:
            return self._access(ev)
        if k == STATS:
            f = ev.fields
            if f.get("running") == 0 and not f.get("waiting"):
                self._idle(ev.path)
            return None
        if k not in REQUEST_KINDS:
            if ev.fields.get("image_event") and ev.fmt == "llamacpp":
                tid = self._last_started.get(ev.path)
                t = self.open.get(tid) if tid else None
                if t is not None:
                    t.images = (t.images or 0) + 1
                    return t
            return None
        f = ev.fields
        rid = f.get("request_id")
        if not rid:
            return None
        t = self._trace(ev, rid)
        if t is None:
            return None
        ts = ev.ts
        src = t.source
        self.changed.add(t.id)
        if (k == FAILED or (k == FINISHED and not f.get("released"))) and ev.fmt in ("vllm", "lmdeploy"):
            self._just_ended[src] = t
        else:
            self._just_ended.pop(src, None)
        self._timeline(t, k, ts, ev.lineno, ev.path)
        if (k == RECEIVED or k == ADDED) and t.http_status is None and ev.fmt in ("vllm", "lmdeploy"):
            aw = self._awaiting.get(src)
            if self._waits_apart(src, t.id):
                self._give_up(src)
                aw = None
            self._await(t, aw)
        if k == RECEIVED:
            if t.received_at is None and not f.get("detail"):  # a DEBUG details line is not the arrival
                t.received_at = ts
            if t.added_at is None and f.get("added"):
                t.added_at = ts
            _measured(t, f)
        elif k == ADDED:
            t.added_at = t.added_at or ts
            if t.received_at is None:
                t.received_at = ts
        elif k == STARTED:
            if t.received_at is None:
                t.received_at = ts
            if ev.fmt == "llamacpp":
                self._last_started[ev.path] = t.id
        elif k == OUTPUT:
            if t.first_output_at is None:
                t.first_output_at = ts
            if "token_index" in f:
                if f["token_index"] is not None:  # None: a malformed (60-digit) index, unknown
                    t.output_tokens = max(t.output_tokens or 0, f["token_index"])
                if len(t._text) < 64 and not t.says_no_image:
                    t._text += f.get("token_text", "")[:64]
                    if _says_no_image(t._text.lower()):
                        t.says_no_image = True
                        t._text = ""
            if f.get("output_tokens") is not None:
                t.output_tokens = f["output_tokens"]
            fr = f.get("finish_reason")
            if fr and fr not in ("None", "null") and f.get("streaming") != "delta":
                t._completed = True
                t.finished_at = ts
                if fr == "abort":
                    t.aborted_at = ts
                    t._aborted = True
        elif k == TIMING:
            for key in ("prompt_tokens", "output_tokens"):
                if f.get(key) is not None:
                    setattr(t, key, f[key])
            if f.get("total_ms") is not None:
                t.latency_s = round(f["total_ms"] / 1000.0, 6)
                t._completed = True
        elif k == FINISHED:
            if f.get("released"):
                # llama.cpp: the slot is free whatever happened; success only with timings.
                t.finished_at = t.finished_at or ts
                t._ended = True
            else:
                t.finished_at = ts
                t._completed = True
                t._ended = True
                for key in ("prompt_tokens", "output_tokens"):
                    if f.get(key) is not None:
                        setattr(t, key, f[key])
                if f.get("total_tokens") is not None and t.prompt_tokens is not None:
                    t.output_tokens = f["total_tokens"] - t.prompt_tokens
                if f.get("latency_s") is not None:
                    t.latency_s = f["latency_s"]
        elif k == ABORTED:
            for other in f.get("request_ids", [])[1:]:
                o = self._trace(ev, other)
                if o is not None:
                    o.aborted_at = o.aborted_at or ts
                    o._aborted = o._ended = True
                    self._settle(o)
                    self.changed.add(o.id)
            t.aborted_at = t.aborted_at or ts
            t._aborted = True
            t._ended = True
        elif k == FAILED:
            t.failed_at = t.failed_at or ts
            t._failed = True
            t.reason = f.get("reason") or t.reason
            if f.get("http_status"):
                t.http_status = f["http_status"]
            t._ended = True
        self._settle(t)
        return t

    # -- the plain lifecycle, without events ---------------------------------------------
    # A busy server's log is almost all of this: a request arrives (vLLM's `Received request`),
    # the engine takes it (`Added request`, the same id or, since 0.14, it and `-<8 hex>`), and one access
    # line answers it while it is the only request waiting. `diag.ingest.fastpath` asks `plain_*`
    # whether a line is that plain case — a question that changes nothing — and then applies it
    # with `apply_*`, which does exactly what `feed` does with the line's event; anything else
    # (a repeated id, another source's trace, access lines waiting to be told apart, a full open
    # set) goes the full way. tests/test_fastpath.py holds both ways equal on every corpus log
    # and on fuzzed ones.

    def plain_received(self, path: str, rid: str) -> str | None:
        """The trace id a vLLM `Received request` line would open, when it opens a new trace plainly."""
        cid = rid + self.ids.suffix(path)
        if (cid in self.alias or cid in self.open or cid in self.recent or _engine_base(rid) is not None
                or len(self.open) >= self.max_open or self._waiting.get(path)):
            return None
        return cid

    def apply_received(self, cid: str, rid: str, path: str, lineno: int, f: dict[str, Any], ts: float | None) -> None:
        t = self._open(cid, rid, "vllm", path, lineno)
        self.changed.add(cid)
        self._just_ended.pop(path, None)
        self._timeline(t, RECEIVED, ts, lineno, path)
        self._await(t, self._awaiting.get(path))
        t.received_at = ts
        _measured(t, f)

    def plain_added(self, path: str, rid: str) -> tuple[Trace, str | None] | None:
        """(the trace a vLLM `Added request` line belongs to, the engine id to alias to it or None
        when known already), when the line plainly continues a trace of this source: one still
        open, or one its access line answered already (a streamed response's comes first)."""
        key = rid + self.ids.suffix(path)
        # `in` and subscripts rather than .get on these OrderedDicts: compiled, each method call is a lookup
        aliases = self.alias
        cid = aliases[key] if key in aliases else None
        alias = None
        if cid is None:
            base = _engine_base(rid)
            if key in self.open or key in self.recent:
                cid = key  # the id Received had (vLLM before 0.14)
            elif base is None:
                return None
            else:
                cid = base + key[len(rid):]  # the engine's id: Received's and "-<8 hex>"
                alias = key
        if cid in self.open:
            t = self.open[cid]
        elif cid in self.recent:
            t = self.recent[cid]
        else:
            return None
        if t.source != path:
            return None
        if t.http_status is None and self._waits_apart(path, cid):
            return None
        return t, alias

    def apply_added(self, t: Trace, alias: str | None, path: str, lineno: int, ts: float | None) -> None:
        if alias is not None:
            self._alias(alias, t.id)
        self.changed.add(t.id)
        self._just_ended.pop(path, None)
        self._timeline(t, ADDED, ts, lineno, path)
        if t.http_status is None:
            self._await(t, self._awaiting.get(path))
        t.added_at = t.added_at or ts
        if t.received_at is None:
            t.received_at = ts
        self._settle(t)

    def plain_access(self, path: str, method: str, hpath: str) -> Trace | None:
        """The trace an access line is attached to, when it is the only request of the source that
        waits for one and no line before it makes that less plain."""
        if method != "POST" or hpath not in GEN_ENDPOINTS or path in self._just_ended or self._waiting.get(path):
            return None
        aw = self._awaiting.get(path)
        if aw is None:
            return None
        aw.prune()  # what `_access` does first: forgetting dead entries changes no answer
        return aw.sole(_FAMILY[hpath])[1]

    def apply_access(self, t: Trace, path: str, lineno: int, client: str | None, method: str, hpath: str, status: int,
                     ts: float | None) -> None:
        self._attach(t, path, lineno, ts, client, method, hpath, status, True)

    def _waits_apart(self, path: str, tid: str) -> bool:
        """Do access lines of `path` wait to be told apart among requests that `tid` is not one of?
        A request line for it then gives them up (`_give_up`)."""
        if not self._waiting.get(path):
            return False
        aw = self._awaiting.get(path)
        return aw is None or tid not in aw

    def _open(self, cid: str, rid: str, server: str, path: str, lineno: int) -> Trace:
        """A new open trace (the open set has room)."""
        t = self.open[cid] = Trace(cid, server, path, self.models.get(path))
        t.first_line = lineno
        if rid.startswith(("chatcmpl-", "chat-")):
            t.endpoint = "chat"
        elif rid.startswith("cmpl-"):
            t.endpoint = "completions"
        return t

    def _await(self, t: Trace, aw: AwaitingIndex | None) -> None:
        """`t` waits for its access line (`aw`: its source's index, when there is one yet)."""
        if aw is None:
            aw = self._awaiting[t.source] = AwaitingIndex()
        aw.add(t)

    def _timeline(self, t: Trace, kind: str, ts: float | None, lineno: int, path: str) -> None:
        tl = t.timeline
        if len(tl) < MAX_TIMELINE:
            if path == t.source:  # the trace's own source is implied (keeps the stored state small)
                tl.append({"kind": kind, "time": ts, "line": lineno})
            else:
                tl.append({"kind": kind, "time": ts, "line": lineno, "path": path})

    def _idle(self, path: str) -> None:
        """The engine says nothing is running or waiting. In a server that logs no request ends
        (vLLM 0.11+ without access lines) its requests have ended, how is unknown: they leave the
        open set as `unknown` (no stuck or never-completed finding, and bounded memory)."""
        if path in self.ends_logged:
            return
        for t in [t for t in self.open.values() if t.source == path and t.status == "in_flight"]:
            t._ended = True
            self.changed.add(t.id)
            self._settle(t)

    def _settle(self, t: Trace) -> None:
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
        aw = self._awaiting.get(t.source)
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
                self._finish(old)

    def _finish(self, t: Trace) -> None:
        t._text = ""
        if self.on_done is not None:
            self.on_done(t)

    # -- access lines -------------------------------------------------------------------
    def _access(self, ev: Event) -> Trace | None:
        f = ev.fields
        path = f.get("path") or ""
        if ev.fmt in ("nginx", "proxy") or f.get("method") != "POST" or path not in GEN_ENDPOINTS:
            self._record(ev)
            return None
        fam = _FAMILY[path]
        adj = self._just_ended.pop(ev.path, None)
        if adj is not None and adj.http_status is None and not self._waiting.get(ev.path):
            self._attach_line(adj, ev, with_client=True)
            aw = self._awaiting.get(ev.path)
            if aw is not None:
                aw.remove(adj.id)
            return adj
        # Candidates: live, received, no status yet, same family (a rejected one has its status).
        aw = self._awaiting.get(ev.path)
        if aw is not None:
            aw.prune()
            n, only = aw.sole(fam)
        else:
            n, only = 0, None
        waiting = self._waiting.get(ev.path)
        if only is not None and not waiting:
            self._attach_line(only, ev, with_client=True)
            return only
        if not n:
            self._flush_waiting(ev.path)
            self._record(ev)
            return None
        if waiting is None:
            waiting = self._waiting[ev.path] = []
        waiting.append(ev)
        if len(waiting) >= n:
            statuses = {w.fields.get("status") for w in waiting}
            if len(waiting) == n and len(statuses) == 1:
                for t in aw.candidates(fam):  # type: ignore[union-attr]
                    self._attach_line(t, waiting[0], with_client=False)
                waiting.clear()
                return None
            self._flush_waiting(ev.path)
        return None

    def _attach_line(self, t: Trace, ev: Event, with_client: bool) -> None:
        f = ev.fields
        self._attach(t, ev.path, ev.lineno, ev.ts, f.get("client"), f.get("method"), f.get("path"), f.get("status"), with_client)

    def _attach(self, t: Trace, path: str, lineno: int, ts: float | None, client: str | None, method: str | None,
                hpath: str | None, status: int | None, with_client: bool) -> None:
        t.http_status = status
        if with_client:
            t.client = client
        t.http = {"method": method, "path": hpath, "status": status, "path_file": path, "line": lineno,
                  "client": client if with_client else None}
        self._timeline(t, ACCESS, ts, lineno, path)
        self.changed.add(t.id)
        self._settle(t)

    def _give_up(self, path: str) -> None:
        """Access lines still waiting when a new request arrives cannot be told apart any more:
        their candidates end as `unknown` instead of staying in flight forever."""
        for t in list(self._awaiting.pop(path, ())):
            if t.http_status is None and not t._ended:
                t._ended = True
                self._settle(t)
                self.changed.add(t.id)
        self._flush_waiting(path)

    def _flush_waiting(self, path: str) -> None:
        for w in self._waiting.pop(path, []):
            self._record(w)

    def _record(self, ev: Event) -> None:
        self.http_count += 1
        f = ev.fields
        if self.keep_http and len(self.http_records) < 100000:
            self.http_records.append({"source": ev.path, "line": ev.lineno, "time": ev.ts, "server": ev.fmt,
                                      "client": f.get("client"), "method": f.get("method"), "path": f.get("path"),
                                      "status": f.get("status")})

    # -- end ----------------------------------------------------------------------------
    def finish(self) -> list[Trace]:
        """End of input: everything still held, in first-seen order."""
        for p in list(self._waiting):
            self._flush_waiting(p)
        rest = list(self.recent.values()) + list(self.open.values())
        self.recent.clear()
        self.open.clear()
        for t in rest:
            self._settle_final(t)
            t._text = ""
        rest.sort(key=lambda t: (t.source, t.first_line))
        return rest

    def _settle_final(self, t: Trace) -> None:
        self._settle(t)
        if t.status == "in_flight" and t.source not in self.ends_logged:
            t.status = "unknown"  # this server logs no request ends: nothing shows it should have ended
        self.open.pop(t.id, None)
        self.recent.pop(t.id, None)

    def forget(self, path: str) -> None:
        """A source that is gone for good (a deleted, globbed file): drop what is kept per path, so
        following thousands of short-lived files one after another does not grow memory."""
        self._flush_waiting(path)
        gone = [t for t in list(self.open.values()) + list(self.recent.values()) if t.source == path]
        for t in gone:
            self._settle_final(t)  # no line can follow: hand them over as they are
            self._finish(t)
        if gone:
            ids = {t.id for t in gone}
            self.alias = OrderedDict((k, v) for k, v in self.alias.items() if v not in ids)
        self.ids.forget(path)
        for d in (self.models, self._last_started, self._just_ended, self._awaiting):
            d.pop(path, None)
        self.ends_logged.discard(path)

    def adopt(self, t: Trace) -> None:
        """A trace still in flight when the daemon last stopped: carry on assembling it."""
        self.open[t.id] = t
        if t.server in ("vllm", "lmdeploy") and t.http_status is None:
            self._await(t, self._awaiting.get(t.source))

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
