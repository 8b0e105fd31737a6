"""What every format parser shares: the per-source context and the parse contract.

A parser is a module with `NAME` and `parse(text, ctx) -> Parsed | None`. It receives one
physical line that wrappers (docker, journald, process tags) were already stripped from and
returns a typed event plus a continuation key, or None when the line is not in its format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diag.clock import Clock
from diag.events import Event


@dataclass(slots=True)
class Ctx:
    path: str
    clock: Clock
    proc: str | None = None  # set by the process-tag wrapper for the current line
    pid: int | None = None
    wrap_ts: float | None = None  # a time supplied by a wrapper (docker --timestamps, journald)
    state: dict[str, Any] = field(default_factory=dict)  # per-parser scratch, bounded by the parser


# (event, continuation key). Consecutive lines with the same non-None key whose previous line
# ended in \r (or that look like a continuation) are one record.
Parsed = tuple[Event, Any]


def to_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.replace(",", ""))
    except ValueError:
        return None


def to_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
