"""Silences: label matchers with an end time and a comment, kept in SQLite.

They mute notifications, never findings: a silenced alert is still tracked, listed by
`diag alerts` as silenced, and resolves as usual. Matchers are amtool's: `label=value`,
`label!=value`, `label=~regex`, `label!~regex` (regexes anchored, as in Alertmanager).
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

import json

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class MatcherError(ValueError):
    pass


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str

    @classmethod
    def parse(cls, text: str) -> "Matcher":
        m = _MATCHER.match(text)
        if m is None:
            raise MatcherError(f"{text!r} is not a matcher (label=value, label!=value, label=~regex, label!~regex)")
        name, op, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise MatcherError(f"{text!r}: invalid regex: {exc}") from None
        return cls(name, op, value)

    def matches(self, labels: dict[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.op == "=":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        hit = re.fullmatch(self.value, have) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        from diag.parsing.clock import iso

        now = time.time() if now is None else now
        return {"id": self.id, "matchers": [str(m) for m in self.matchers], "starts_at": iso(self.starts_at),
                "ends_at": iso(self.ends_at), "comment": self.comment, "created_by": self.created_by,
                "state": "active" if self.active(now) else ("pending" if now < self.starts_at else "expired")}


def add(db: sqlite3.Connection, matchers: list[Matcher], duration: float, comment: str = "", created_by: str = "",
        now: float | None = None) -> Silence:
    if not matchers:
        raise MatcherError("a silence needs at least one matcher")
    if duration <= 0:
        raise MatcherError("the duration must be positive")
    now = time.time() if now is None else now
    s = Silence(str(uuid.uuid4()), matchers, now, now + duration, comment, created_by)
    db.execute("INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by) VALUES (?,?,?,?,?,?)",
               (s.id, json.dumps([[m.name, m.op, m.value] for m in matchers]), s.starts_at, s.ends_at, comment, created_by))
    return s


def _row(r: Any) -> Silence:
    return Silence(r[0], [Matcher(*m) for m in json.loads(r[1])], r[2], r[3], r[4] or "", r[5] or "")


def load(db: sqlite3.Connection, include_expired: bool = False, now: float | None = None) -> list[Silence]:
    now = time.time() if now is None else now
    q = "SELECT id, matchers, starts_at, ends_at, comment, created_by FROM silences"
    rows = db.execute(q + ("" if include_expired else " WHERE ends_at > ?") + " ORDER BY starts_at",
                      () if include_expired else (now,))
    return [_row(r) for r in rows]


def expire(db: sqlite3.Connection, sid: str, now: float | None = None) -> Silence | None:
    """End a silence now; a unique prefix of its id is enough. None if no such active silence."""
    now = time.time() if now is None else now
    if not sid:
        return None
    # a prefix compared literally, as trace-id prefixes are (`_` and `%` are not wildcards)
    rows = db.execute("SELECT id, matchers, starts_at, ends_at, comment, created_by FROM silences WHERE substr(id, 1, ?) = ? "
                      "AND ends_at > ?", (len(sid), sid, now)).fetchall()
    if len(rows) != 1:
        return None
    db.execute("UPDATE silences SET ends_at = ? WHERE id = ?", (now, rows[0][0]))
    s = _row(rows[0])
    s.ends_at = now
    return s


def parse_duration(text: str) -> float:
    """`2h`, `30m`, `1d12h`, `90s`, or plain seconds."""
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", t)
    if not parts or "".join(n + u for n, u in parts) != t.replace(" ", ""):
        raise MatcherError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1d)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(float(n) * unit[u] for n, u in parts)
