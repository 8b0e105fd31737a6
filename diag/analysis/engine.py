"""The rule engine: events and traces matched against the rule set, hits reported as they occur.

Which rules can look at an event is planned once per (format, kind) and kept (`_plan`); a line
no rule can match is skipped on literal needles before any regex runs (`idle_for_line`, asked
by the fast path too). A rule whose pattern raises or runs past its time limit is switched off
with one logged reason, never the engine. What a hit is and how hits aggregate:
`diag.analysis.findings`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable

from diag.parsing import events as E
from diag.parsing.events import Event
from diag.analysis.findings import Hit
from diag.analysis.rules.prefilter import literal_needles
from diag.parsing.redact import excerpt as make_excerpt
from diag.parsing.usercontent import clean
from diag.analysis.rules.ruleset import MATCH_TIMEOUT, Rule, RuleSet, condition_holds, event_applies
from diag.analysis.trace import Trace

log = logging.getLogger("diag")


class RuleEngine:
    """Matches events and traces against a rule set; reports hits to `on_hit`."""

    def __init__(self, ruleset: RuleSet, on_hit: Callable[[Hit], None], trace_lookup: Callable[[str], Trace | None] | None = None,
                 on_trace_finding: Callable[[Trace, str], None] | None = None,
                 facts_lookup: Callable[[str], dict[str, Any] | None] | None = None):
        self.on_hit = on_hit
        self.trace_lookup = trace_lookup or (lambda rid, path=None: None)  # read only: rules never change a trace
        self.facts_lookup = facts_lookup or (lambda path: None)  # a source's startup facts so far (`from_facts`), read only
        self.on_trace_finding = on_trace_finding  # told which trace a hit is about (the pipeline records it)
        self.errors: list[str] = list(ruleset.errors)
        self.internal: Any = None  # diag.analysis.guard.InternalErrors, set by the pipeline
        self.set_rules(ruleset)
        self._suppress_seen: dict[tuple[str, str], float] = {}  # (path, rule) -> last time a quieting line was seen
        # hits waiting to see whether a retry follows: (hit, events left, source path, wall-clock time held)
        self._held: deque[tuple[Hit, int, Any, float]] = deque()
        self._streak: dict[tuple[str, str], int] = {}  # (rule, path) -> consecutive matching events
        self.on_clear: Callable[[Rule, str], None] | None = None  # a state-like rule stopped matching on a source

    def set_rules(self, ruleset: RuleSet) -> None:
        self.rules = [r for r in ruleset.rules if not r.disabled]
        self.event_rules = [r for r in self.rules if r.scope == "event"]
        self.trace_rules = [r for r in self.rules if r.scope == "trace"]
        self._by_status: dict[str, list[tuple[Rule, bool, str, dict]]] = {}  # trace status -> (rule, final, id, when) of the trace rules that may hold for it
        self.quieting = [r for r in self.event_rules if r.unless_after is not None]
        self._quiet_needles = {r.id: literal_needles(r.unless_after[0].pattern) for r in self.quieting}  # type: ignore[index]
        self._by_kind: dict[tuple[str, str], Any] = {}

    def rules_for(self, ev: Event) -> list[Rule]:
        """The rules worth trying on this event: those that apply to its format and kind, and
        whose literal prefilter (one needle per alternative) occurs in its text."""
        rs, always, pairs, _frames = self._plan(ev.fmt, ev.kind)
        if not pairs:
            return always
        text = ev.text
        found = {id(r) for n, r in pairs if n in text}
        if not found:
            return always
        found.update(map(id, always))
        return [r for r in rs if id(r) in found]

    def _plan(self, fmt: str, kind: str) -> tuple[list[Rule], list[Rule], list[tuple[str, Rule]], list[Rule]]:
        """Per (format, kind): the text rules that apply (all, those without a prefilter, needle → rule
        pairs) and the rules that match frames (tried only on events that have frames)."""
        key = (fmt, kind)
        plan = self._by_kind.get(key)
        if plan is None:
            applies = [r for r in self.event_rules if event_applies(r, fmt, kind)]
            rs = [r for r in applies if r.frames is None]
            always = [r for r in rs if not r.needles or r.consecutive > 1 or r.state]  # streak/state rules must see misses too
            pairs = [(n, r) for r in rs if r.needles and r.consecutive == 1 and not r.state for n in r.needles]
            plan = self._by_kind[key] = (rs, always, pairs, [r for r in applies if r.frames is not None])
        return plan

    def _frame_matches(self, ev: Event) -> list[tuple[Rule, Any]]:
        """The frames rules whose `frames` pattern matches this traceback's code locations (one per line)."""
        rules = self._plan(ev.fmt, ev.kind)[3]
        if not rules:
            return []
        joined = "\n".join(ev.frames or ())
        out = []
        for r in rules:
            if r.frame_needles and not any(n in joined for n in r.frame_needles):
                continue
            fm = self._search(r, r.frames, joined)
            if fm is not None and not r.disabled:
                out.append((r, fm))
        return out

    def disable(self, rule: Rule, why: str) -> None:
        rule.disabled = why
        msg = f"rule {rule.id} ({rule.file}:{rule.line}) disabled: {why}"
        self.errors.append(msg)
        log.error(msg)
        self.event_rules = [r for r in self.event_rules if r is not rule]
        self.trace_rules = [r for r in self.trace_rules if r is not rule]
        self._by_status.clear()
        self.quieting = [r for r in self.quieting if r is not rule]
        self._by_kind.clear()

    @property
    def holding(self) -> bool:
        """Is a hit held until a later line says whether it stands (`unless_followed_by`)? Only
        feeding an event makes one."""
        return bool(self._held)

    def needles_for(self, fmt: str, kind: str) -> tuple[str, ...] | None:
        """What `idle_for_line` asks of the text of an event of this format and a kind no quieting
        rule reads, without frames, while no hit is held: idle unless one of these is in it; None:
        never idle (a rule reads every such text)."""
        _, always, pairs, _ = self._plan(fmt, kind)
        return None if always else tuple(dict.fromkeys(n for n, _ in pairs))

    def idle_for(self, ev: Event) -> bool:
        """Would `feed(ev)` do nothing? True for the lifecycle lines of a busy server, which no rule
        targets or whose text has none of the needles of the rules that do (no held hit counting
        events, no quieting line): the pipeline then skips the call."""
        return self.idle_for_line(ev.fmt, ev.kind, ev.text, bool(ev.frames))

    def idle_for_line(self, fmt: str, kind: str, text: str | None, frames: bool = False) -> bool:
        """`idle_for` an event of this format, kind and text (None: whatever its text); the fast path
        asks before it builds no event at all."""
        if self._held or (self.quieting and kind in (E.LOG, E.RAW)):
            return False
        text_rules, always, pairs, frame_rules = self._plan(fmt, kind)
        if frame_rules and (frames or text is None):
            return False
        if text is None:
            return not text_rules
        if always:
            return False
        for n, _ in pairs:
            if n in text:
                return False
        return True

    # -- events -------------------------------------------------------------------------
    def feed(self, ev: Event) -> None:
        text = ev.text
        if self._held:
            self._check_held(ev)
        for r in self.quieting if ev.kind in (E.LOG, E.RAW) else ():
            pat, _ = r.unless_after  # type: ignore[misc]
            qn = self._quiet_needles.get(r.id)
            if qn and not any(n in text for n in qn):
                continue
            if self._search(r, pat, text) is not None:
                self._suppress_seen[(ev.path, r.id)] = ev.ts or 0.0
        for r in self.rules_for(ev):
            self._guarded(r, ev, text)
        if ev.frames:  # only tracebacks have frames: every other event skips the frames rules
            for r, fm in self._frame_matches(ev):
                self._guarded(r, ev, text, fm)

    def _guarded(self, r: Rule, ev: Event, text: str, fm: Any = None) -> None:
        try:
            self._apply(r, ev, text, fm)
        except Exception as exc:  # noqa: BLE001 - one rule's bug costs that rule this event only
            if self.internal is None:
                raise
            self.internal.record("rules", ev.path, ev.lineno, exc, rule=r.id)

    def _apply(self, r: Rule, ev: Event, text: str, fm: Any = None) -> None:
        """`fm`: the match of the rule's `frames` pattern, when it has one (its other conditions still apply)."""
        if (r.consecutive > 1 or r.state) and r.needles and not any(n in text for n in r.needles):
            self._miss(r, ev.path)
            return
        m = None
        for p in r.patterns:
            m = self._search(r, p, text)
            if m is not None or r.disabled:
                break
        if r.patterns and m is None:
            self._miss(r, ev.path)
            return
        if r.consecutive > 1:
            n = self._streak.get((r.id, ev.path), 0) + 1
            self._streak[(r.id, ev.path)] = n
            if n != r.consecutive:
                return
        if r.unless is not None and self._search(r, r.unless, text) is not None:
            return
        groups = {k: v for k, v in m.groupdict().items() if v is not None} if m is not None else {}
        if fm is not None:
            for k, v in fm.groupdict().items():
                if v is not None:
                    groups.setdefault(k, v)
        rid = ev.fields.get("request_id")
        if rid is None and "session" in ev.fields:
            rid = f"session-{ev.fields['session']}"
        trace = self.trace_lookup(rid, ev.path) if rid else None
        if r.when and not condition_holds(r.when, _lookup(groups, ev.fields, trace)):
            return
        if r.unless_after is not None:
            seen = self._suppress_seen.get((ev.path, r.id))
            if seen is not None and (ev.ts is None or ev.ts - seen <= r.unless_after[1]):
                return
        fields = {k: clean(v) for k, v in groups.items()}  # what a pattern captured is bounded and redacted like an excerpt
        for k, src in r.from_event.items():  # the parser's reading wins over the text (masked there)
            v = ev.fields.get(src)
            if v.__class__ in (str, int, float):  # one value: a list (`request_ids`) would carry clients' ids unbounded
                fields[k] = clean(v)
        if r.from_facts:
            facts = self.facts_lookup(ev.path)
            if facts:
                for k, src in r.from_facts.items():  # what a line captured wins over what the server said at its start
                    v = facts.get(src)
                    if k not in fields and v.__class__ in (str, int, float):
                        fields[k] = clean(v)
        for k in ("status", "path", "method", "reason"):
            if k in ev.fields and k not in fields and ev.kind == E.ACCESS:
                fields[k] = clean(ev.fields[k])
        start = m.start() if m is not None else 0
        hit = Hit(r, ev.ts, ev.path, ev.line_at(start), fields,
                  trace.id if trace is not None else rid, make_excerpt(text, start), max(1, ev.repeated))
        if r.unless_followed_by is not None:
            self._held.append((hit, r.unless_followed_by[1], ev.path, time.time()))
            return
        self._emit(hit, trace)

    def _miss(self, r: Rule, path: str) -> None:
        if r.consecutive > 1:
            self._streak.pop((r.id, path), None)
        if r.state and self.on_clear is not None:
            self.on_clear(r, path)

    def _search(self, rule: Rule, pat: Any, text: str):
        try:
            return pat.search(text, timeout=MATCH_TIMEOUT)
        except TimeoutError:
            self.disable(rule, f"pattern {pat.pattern[:80]!r} took longer than {MATCH_TIMEOUT * 1000:.0f} ms on one event (catastrophic backtracking?)")
            return None

    def _check_held(self, ev: Event) -> None:
        keep: deque = deque()
        for hit, left, path, since in self._held:
            if path != ev.path:
                keep.append((hit, left, path, since))
                continue
            pat = hit.rule.unless_followed_by[0]  # type: ignore[index]
            if self._search(hit.rule, pat, ev.text) is not None:
                continue  # recovered: the failure was retried
            if left <= 1:
                self._emit(hit, None)
            else:
                keep.append((hit, left - 1, path, since))
        self._held = keep

    def release_due(self, now: float) -> int:
        """The daemon's tick: a held hit whose source stayed quiet for the rule's `within_s` is real
        (the failure was the last line written). Returns how many were released."""
        n = 0
        keep: deque = deque()
        for item in self._held:
            hit, _left, _path, since = item
            if now - since >= hit.rule.hold_s:
                self._emit(hit, None)
                n += 1
            else:
                keep.append(item)
        self._held = keep
        return n

    def held_state(self) -> list[dict[str, Any]]:
        """Held hits as data, committed with the read offsets past their lines: a hit that is
        neither stored nor re-read after a crash would be lost."""
        return [{"rule": h.rule.id, "ts": h.ts, "path": h.path, "line": h.line, "fields": h.fields, "request_id": h.request_id,
                 "excerpt": h.excerpt, "count": h.count, "left": left, "since": since} for h, left, _p, since in self._held]

    def restore_held(self, items: Any) -> None:
        """Held hits of a previous run (`held_state`), for rules that still exist."""
        if not isinstance(items, list):
            return
        by_id = {r.id: r for r in self.rules}
        for d in items:
            try:
                r = by_id.get(d["rule"])
                if r is None or r.unless_followed_by is None:
                    continue
                hit = Hit(r, d["ts"], d["path"], int(d["line"]), dict(d["fields"]), d["request_id"], str(d["excerpt"]),
                          int(d.get("count", 1)))
                self._held.append((hit, int(d["left"]), d["path"], float(d["since"])))
            except (KeyError, TypeError, ValueError):
                continue

    def forget(self, path: str) -> None:
        """A source that is gone for good: its held hits are real (nothing can follow them any more),
        and what is kept per source (quieting lines seen, streaks) goes."""
        keep: deque = deque()
        for item in self._held:
            if item[2] == path:
                self._emit(item[0], None)
            else:
                keep.append(item)
        self._held = keep
        self.restarted(path)  # (its quieting lines seen go, as at a new start)
        self._streak = {k: v for k, v in self._streak.items() if k[1] != path}

    def restarted(self, path: str) -> None:
        """The server logging to `path` started again: a quieting line (`unless_after`) from before
        says nothing about this start. Most needed where lines have no wall-clock time (llama.cpp's
        relative stamps): there `within_s` cannot end the quiet, and one failed --mmproj silenced
        a later start's model-load failure for the rest of the file."""
        if self._suppress_seen:
            self._suppress_seen = {k: v for k, v in self._suppress_seen.items() if k[0] != path}

    def flush(self) -> None:
        """End of input (or shutdown): held hits with no retry after them are real."""
        while self._held:
            hit = self._held.popleft()[0]
            self._emit(hit, None)

    def _emit(self, hit: Hit, trace: Trace | None) -> None:
        if trace is None and hit.request_id:
            trace = self.trace_lookup(hit.request_id)
        if trace is not None and self.on_trace_finding is not None:
            self.on_trace_finding(trace, hit.rule.id)
        self.on_hit(hit)

    # -- traces -------------------------------------------------------------------------
    def check_trace(self, t: Trace, final: bool) -> None:
        status = t.status
        plan = self._by_status.get(status)
        if plan is None:  # every trace is checked as it leaves: the rules for another status are left out once,
            # and what is asked of each rule per trace is read off it once (a rule's attributes are lookups)
            plan = self._by_status[status] = [(r, r.final, r.id, r.when) for r in self.trace_rules
                                              if not isinstance(r.when.get("status"), str) or r.when["status"] == status]
        get = None
        done = t.findings
        for r, final_only, rid, when in plan:
            if (final_only and not final) or rid in done:
                continue
            if get is None:
                get = _reader(t)
            if condition_holds(when, get):
                ts = t.failed_at or t.finished_at or t.aborted_at or t.received_at
                fields = {"request_id": t.id, "images": t.images, "latency_s": t.latency_s, "status": t.status,
                          "prompt_tokens": t.prompt_tokens, "http_status": t.http_status}
                self._emit(Hit(r, ts, t.source, t.first_line, fields, t.id, ""), t)


def _reader(t: Trace):
    """A trace's fields by name, for `condition_holds` (None for a name it has not)."""
    return lambda k: getattr(t, k, None)


def _lookup(groups: dict, evf: dict, trace: Trace | None):
    def get(key: str) -> Any:
        if key in groups:
            return groups[key]
        if key in evf:
            return evf[key]
        if trace is not None:
            return getattr(trace, key, None)
        return None

    return get
