"""Per-request traces assembled from lifecycle events.

One trace per request id joins every line that belongs to it: vLLM's Received / Added (with
the 0.14+ `-<8hex>` engine suffix mapped back) / Aborted / failed / Generated response,
LMDeploy sessions, llama.cpp tasks, the deployment guide's `req-…` lines. The assembler is
built in layers, one concept each: the table of traces being assembled and how a request id
finds its trace (`diag.analysis.tracetable`), access lines attached to those traces when that
is unambiguous (`diag.analysis.access_lines`, where the rule is), and here what each lifecycle
event does to its trace, the plain lifecycle the fast path applies without an event, and the
end of input.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from diag.parsing.events import (ABORTED, ACCESS, ADDED, FAILED, FINISHED, OUTPUT, RECEIVED, REQUEST_KINDS, STARTED, STATS,
                                 TIMING, Event)
from diag.analysis.access_lines import AccessAttacher
from diag.analysis.trace import Trace
from diag.analysis.traceids import engine_base
from diag.analysis.tracetable import MAX_OPEN

NO_IMAGE_PHRASES = ("看不到图片", "看不到图像", "没有看到图片", "没有图片", "无法看到图片", "无法查看图片", "没有提供图片",
                    "can't see the image", "cannot see the image", "can't see any image", "no image was provided",
                    "don't see an image", "do not see an image", "unable to see the image")


def _says_no_image(low: str) -> bool:
    """Do the first generated characters say the model saw no image?"""
    return any(p in low for p in NO_IMAGE_PHRASES)


def _measured(t: Trace, f: dict[str, Any]) -> None:
    """What a request line measured of the request (never its text)."""
    for key in ("prompt_tokens", "max_tokens", "images", "prompt_chars"):
        v = f.get(key)
        if v is not None:
            setattr(t, key, v)


def _whole_prompt(t: Trace, slot_tokens: int | None, truncated: bool | None) -> None:
    """llama.cpp's `prompt eval time = … / N tokens` counts the tokens it evaluated, not those its
    prompt cache already held: a repeated system prompt reads as 1 token. The slot's release says
    how many tokens its cache holds (`stop processing: n_tokens = N`, the `slot_tokens` field): the
    whole prompt and every generated token but the last (sampled, never decoded), so the prompt is
    `N - output_tokens + 1`, checked against the `n_past` / `task.n_tokens` that the real server
    (tools/real-llamacpp's build) logs where it says them. Only ever raised from the evaluated
    count, and left alone when the context was shifted (`truncated`). Older builds' JSON
    `slot released` n_past is not used: what it counted there was not checked."""
    if slot_tokens is None or truncated or t.prompt_tokens is None or not t.output_tokens or t.output_tokens < 1:
        return
    whole = slot_tokens - t.output_tokens + 1
    if whole > t.prompt_tokens:
        t.prompt_tokens = whole


def _take_timings(t: Trace, f: dict[str, Any]) -> None:
    """llama.cpp's timings of a task (its own timing event, or a 2023 release carrying them): its
    token counts, and its latency, which makes it a completed request."""
    for key in ("prompt_tokens", "output_tokens"):
        if f.get(key) is not None:
            setattr(t, key, f[key])
    if f.get("total_ms") is not None:
        t.latency_s = round(f["total_ms"] / 1000.0, 6)
        t._completed = True


class TraceAssembler(AccessAttacher):
    """Lifecycle events → traces (one per request), handed over (`on_done`) as they end."""

    __slots__ = ('_last_started',)

    def __init__(self, on_done: Callable[[Trace], None] | None = None, max_open: int = MAX_OPEN, keep_http: bool = True):
        super().__init__(on_done, max_open, keep_http)
        self._last_started: dict[str, str] = {}  # source -> last llama.cpp task (classic image lines)

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

    # -- events -------------------------------------------------------------------------
    def feed(self, ev: Event) -> Trace | None:
        """Apply one event; returns the trace it touched, if any."""
        k = ev.kind
        if k == ACCESS:
            return self.take_access(ev)
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
        others = ()
        if k == ABORTED and "request_ids" in f:
            rid, others = self._aborted_listed(ev, rid, f["request_ids"])
            if rid is None:
                return None
        t = self.trace_of(ev, rid)
        if t is None:
            return None
        ts = ev.ts
        src = t.source
        self.changed.add(t.id)
        if (k == FAILED or (k == FINISHED and not f.get("released"))) and ev.fmt in ("vllm", "lmdeploy"):
            self.just_ended[src] = t
        else:
            self.just_ended.pop(src, None)
        self.add_timeline(t, k, ts, ev.lineno, ev.path)
        if (k == RECEIVED or k == ADDED) and t.http_status is None and ev.fmt in ("vllm", "lmdeploy"):
            aw = self.awaiting.get(src)
            if self.waits_apart(src, t.id):
                self.give_up(src)
                aw = None
            self.await_access(t, aw)
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
            _take_timings(t, f)
        elif k == FINISHED:
            if f.get("released"):
                # llama.cpp: the slot is free whatever happened; success only with timings.
                t.finished_at = t.finished_at or ts
                t._ended = True
                if f.get("total_ms") is not None:  # examples/server of 2023: the timings it printed before (llamacpp_plain)
                    _take_timings(t, f)
                _whole_prompt(t, f.get("slot_tokens"), f.get("truncated"))
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
            for other in others:
                o = self.trace_of(ev, other)
                if o is not None:
                    o.aborted_at = o.aborted_at or ts
                    o._aborted = o._ended = True
                    self.settle(o)
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
        self.settle(t)
        return t

    def _aborted_listed(self, ev: Event, whole: str, ids: list[str]) -> tuple[str | None, list[str]]:
        """Which requests `Aborted request(s) a,b.` names: vLLM joins the ids with ",", and a client's
        X-Request-Id may hold one (`x,chatcmpl-<another's id>`), so the text is read against the
        requests known: the whole text when it names one, else each listed id that names one. A
        listed id no request has opens no trace: with a comma in the text, what it meant is not
        known. Returns the first request's id and the others' (None: none named)."""
        if self.trace_of(ev, whole, False) is not None:
            return whole, []
        known = [i for i in dict.fromkeys(ids) if self.trace_of(ev, i, False) is not None]
        return (known[0], known[1:]) if known else (None, [])

    # -- the plain lifecycle, without events ---------------------------------------------
    # A busy server's log is almost all of this: a request arrives (vLLM's `Received request`),
    # the engine takes it (`Added request`, the same id or, since 0.14, it and `-<8 hex>`), and one access
    # line answers it while it is the only request waiting. `diag.ingest.fastpath` asks `plain_*`
    # whether a line is that plain case — a question that changes nothing — and then applies it
    # with `apply_*`, which does exactly what `feed` does with the line's event; anything else
    # (a repeated id, another source's trace, access lines waiting to be told apart, a full open
    # set) goes the full way. The access line's pair, `plain_access`/`apply_access`, is with the
    # rest of access-line attachment (`diag.analysis.access_lines`). tests/test_fastpath.py holds
    # both ways equal on every corpus log and on fuzzed ones.

    def plain_received(self, path: str, rid: str) -> str | None:
        """The trace id a vLLM `Received request` line would open, when it opens a new trace plainly."""
        cid = rid + self.ids.suffix(path)
        if (cid in self.alias or cid in self.open or cid in self.recent or engine_base(rid) is not None
                or len(self.open) >= self.max_open or self.waiting_lines.get(path)):
            return None
        return cid

    def apply_received(self, cid: str, rid: str, path: str, lineno: int, f: dict[str, Any], ts: float | None) -> None:
        t = self.open_trace(cid, rid, "vllm", path, lineno)
        self.changed.add(cid)
        self.just_ended.pop(path, None)
        self.add_timeline(t, RECEIVED, ts, lineno, path)
        self.await_access(t, self.awaiting.get(path))
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
            base = engine_base(rid)
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
        if t.http_status is None and self.waits_apart(path, cid):
            return None
        return t, alias

    def apply_added(self, t: Trace, alias: str | None, path: str, lineno: int, ts: float | None) -> None:
        if alias is not None:
            self.add_alias(alias, t.id)
        self.changed.add(t.id)
        self.just_ended.pop(path, None)
        self.add_timeline(t, ADDED, ts, lineno, path)
        if t.http_status is None:
            self.await_access(t, self.awaiting.get(path))
        t.added_at = t.added_at or ts
        if t.received_at is None:
            t.received_at = ts
        self.settle(t)

    def _idle(self, path: str) -> None:
        """The engine says nothing is running or waiting. In a server that logs no request ends
        (vLLM 0.11+ without access lines) its requests have ended, how is unknown: they leave the
        open set as `unknown` (no stuck or never-completed finding, and bounded memory)."""
        if path in self.ends_logged:
            return
        for t in [t for t in self.open.values() if t.source == path and t.status == "in_flight"]:
            t._ended = True
            self.changed.add(t.id)
            self.settle(t)

    # -- end ----------------------------------------------------------------------------
    def finish(self) -> list[Trace]:
        """End of input: everything still held, in first-seen order."""
        for p in list(self.waiting_lines):
            self.flush_waiting(p)
        rest = list(self.recent.values()) + list(self.open.values())
        self.recent.clear()
        self.open.clear()
        for t in rest:
            self.settle_final(t)
            t._text = ""
        rest.sort(key=lambda t: (t.source, t.first_line))
        return rest

    def forget(self, path: str) -> None:
        """A source that is gone for good (a deleted, globbed file): drop what is kept per path, so
        following thousands of short-lived files one after another does not grow memory."""
        self.flush_waiting(path)
        gone = [t for t in list(self.open.values()) + list(self.recent.values()) if t.source == path]
        for t in gone:
            self.settle_final(t)  # no line can follow: hand them over as they are
            self.hand_over(t)
        if gone:
            ids = {t.id for t in gone}
            self.alias = OrderedDict((k, v) for k, v in self.alias.items() if v not in ids)
        self.ids.forget(path)
        for d in (self.models, self._last_started, self.just_ended, self.awaiting):
            d.pop(path, None)
        self.ends_logged.discard(path)

    def adopt(self, t: Trace) -> None:
        """A trace still in flight when the daemon last stopped: carry on assembling it."""
        self.open[t.id] = t
        if t.server in ("vllm", "lmdeploy") and t.http_status is None:
            self.await_access(t, self.awaiting.get(t.source))

