"""What the rules produce: hits, aggregated into findings.

A `Hit` is one rule matching one event (or one trace); a `Finding` is all hits of one rule
in a run, with count, first/last time, request ids, locations, the fields of the first hit and
one redacted excerpt. The daemon stores hits; `diag scan` prints findings. The engine that makes
hits is `diag.analysis.engine`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from diag.parsing.clock import iso
from diag.analysis.rules.ruleset import SEVERITY_RANK, Rule

MAX_IDS = 200
MAX_LOCATIONS = 50

@dataclass(slots=True)
class Hit:
    rule: Rule
    ts: float | None
    path: str
    line: int
    fields: dict[str, Any]
    request_id: str | None
    excerpt: str
    count: int = 1  # occurrences this hit stands for (Ray's "[repeated 7x across cluster]")


@dataclass
class Finding:
    rule: Rule
    count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)
    excerpt: str = ""

    def add(self, h: Hit) -> None:
        self.count += h.count
        if h.ts is not None:
            if self.first_seen is None or h.ts < self.first_seen:
                self.first_seen = h.ts
            if self.last_seen is None or h.ts > self.last_seen:
                self.last_seen = h.ts
        if not self.fields and not self.excerpt:
            self.fields = h.fields
            self.excerpt = h.excerpt
        if h.request_id and h.request_id not in self.request_ids and len(self.request_ids) < MAX_IDS:
            self.request_ids.append(h.request_id)
        if len(self.locations) < MAX_LOCATIONS:
            self.locations.append({"path": h.path, "line": h.line})

    @property
    def summary(self) -> str:
        return render(self.rule.summary, self.fields, self.count, self.request_ids)

    def to_dict(self) -> dict[str, Any]:
        r = self.rule
        return {"rule": r.id, "title": r.title, "category": r.category, "severity": r.severity, "count": self.count,
                "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen), "summary": self.summary,
                "remedy": r.remedy, "references": r.references, "fields": self.fields,
                "request_ids": self.request_ids, "locations": self.locations, "excerpt": self.excerpt}


_SLOT = re.compile(r"\{([A-Za-z_][\w|]*)\}")
# `[ … {name} … ]`: an optional part, left out when a slot in it has no value (square brackets
# around no slot are plain text); or a slot by itself
_PART = re.compile(r"\[([^\[\]{}]*(?:\{[A-Za-z_][\w|]*\}[^\[\]{}]*)+)\]|\{([A-Za-z_][\w|]*)\}")
EMPTY = "''"  # how a value the log gave as the empty string reads (Python's spelling of it)


def render(template: str, fields: dict[str, Any], count: int = 1, ids: list[str] | None = None) -> str:
    """Fill `{name}` (or `{a|b|c}`: the first one present) from a hit's fields; `?` if none is.
    A part in square brackets with a slot in it (`[ (down to {n_batch})]`) is left out, brackets
    and all, when one of its slots has no value, so a sentence reads well without what the log
    did not say. A field captured as the empty string is present and reads `''`."""
    vals = {k: v for k, v in fields.items() if v is not None and v != ""}
    empty = {k for k, v in fields.items() if v == ""}
    vals.setdefault("count", count)
    if ids:
        vals.setdefault("request_ids", ", ".join(ids[:10]) + (" …" if len(ids) > 10 else ""))

    def value(names: str) -> str | None:
        alts = names.split("|")
        for name in alts:
            if name in vals:
                return str(vals[name])
        for name in alts:
            if name in empty:
                return EMPTY
        return None

    def sub(m: re.Match) -> str:
        if m.group(2) is not None:
            v = value(m.group(2))
            return "?" if v is None else v
        part = m.group(1)  # an optional part: all its slots or nothing (one pass: a value is never read as a template)
        got = [value(s.group(1)) for s in _SLOT.finditer(part)]
        if None in got:
            return ""
        it = iter(got)
        return _SLOT.sub(lambda _s: next(it), part)  # type: ignore[arg-type,return-value]

    return _PART.sub(sub, template)


def _order(f: Finding) -> tuple:
    loc = f.locations[0] if f.locations else {}
    return (-SEVERITY_RANK[f.rule.severity], f.first_seen or 0, loc.get("path") or "", loc.get("line") or 0, f.rule.id)


class FindingSet:
    """Hits aggregated per rule, in the order rules first fired."""

    def __init__(self) -> None:
        self.by_rule: dict[str, Finding] = {}

    def add(self, hit: Hit) -> None:
        f = self.by_rule.get(hit.rule.id)
        if f is None:
            f = self.by_rule[hit.rule.id] = Finding(hit.rule)
        f.add(hit)

    def sorted(self) -> list[Finding]:
        """Worst first; within a severity, in the order the logs said them: by time, and at the same
        time (vLLM stamps whole seconds) by where the first hit was. A cause and what it caused are
        often logged in one second (a killed worker, then the engine's death): the rule id put
        `engine-dead` above `worker-killed`, whose remedy says the cause is the error before it."""
        return sorted(self.by_rule.values(), key=_order)

    def worst(self) -> str | None:
        if not self.by_rule:
            return None
        return max((f.rule.severity for f in self.by_rule.values()), key=lambda s: SEVERITY_RANK[s])
