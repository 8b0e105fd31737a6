"""What every format parser shares: the per-source context and the parse contract.

A parser is a module with `NAME` and `parse(text, ctx) -> Parsed | None`. It receives one
physical line that wrappers (docker, journald, process tags) were already stripped from and
returns a typed event plus a continuation key, or None when the line is not in its format.
"""

from __future__ import annotations

import math
import re
from typing import Any

from diag.parsing.clock import Clock
from diag.parsing.events import Event


class Ctx:
    """One source's parsing context. A class by hand, not a dataclass: a built package lays it out
    in C (base.pxd), and the fast path sets three of its fields on every line it applies."""

    __slots__ = ("path", "clock", "proc", "pid", "wrap_ts", "state")

    def __init__(self, path: str, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.proc: str | None = None  # set by the process-tag wrapper for the current line
        self.pid: int | None = None
        self.wrap_ts: float | None = None  # a time supplied by a wrapper (docker --timestamps, journald)
        self.state: dict[str, Any] = {}  # per-parser scratch, bounded by the parser


# (event, continuation key). Consecutive lines with the same non-None key whose previous line
# ended in \r (or that look like a continuation) are one record.
Parsed = tuple[Event, Any]


MAX_DIGITS = 30  # a count, size or time in a log never needs more; longer is garbage (and int() of 4300+ digits raises)


def to_int(value: str | None) -> int | None:
    """A logged integer, or None: parsing a number from a log is total (`1,234` is allowed)."""
    if value is None:
        return None
    if len(value) <= MAX_DIGITS and value.isdigit() and value.isascii():  # the common case, at once
        return int(value)
    s = value.replace(",", "").strip()
    if not s or len(s) > MAX_DIGITS:
        return None
    try:
        return int(s)
    except ValueError:
        return None


def to_float(value: str | None) -> float | None:
    """A logged finite number, or None: `1.2.3`, `nan`, `inf` and `1e999999` are unknown, not errors."""
    if value is None:
        return None
    s = value.replace(",", "").strip()
    if not s or len(s) > MAX_DIGITS + 10:
        return None
    try:
        f = float(s)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def to_number(value: str | None) -> int | float | None:
    """An int when the text is one (`4096`, `1,024`), else a finite float, else None."""
    i = to_int(value)
    return i if i is not None else to_float(value)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Unicode's bidirectional embeddings, overrides and isolates: invisible, they reorder what follows
# them on a terminal or a web page, so log text holding one could show an excerpt or an id other
# than it is ("Trojan Source"). They mean nothing to a diagnosis: log text is read without them
# (`diag.ingest.reader.normalise`, `json_text`; the fast path leaves such lines to the full parser).
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")


def without_bidi(s: str) -> str:
    """`s` without bidirectional controls (the same str when it has none)."""
    if s.isascii() or _BIDI.search(s) is None:  # isascii: a flag the str keeps
        return s
    return _BIDI.sub("", s)


def json_text(value: Any) -> str:
    """A value from a JSON log line as log text. JSON may escape a lone surrogate (`"\\udcff"`), which
    json.loads returns as is and no UTF-8 sink (the store, `scan --json`, a terminal) takes: it
    becomes U+FFFD, as an invalid byte in a line does (a pair is one character, kept). An escaped
    bidirectional control is taken out, as from a line's text."""
    s = value if isinstance(value, str) else str(value)
    return without_bidi(_LONE_SURROGATE.sub("\ufffd", s))  # the same str when there is none
