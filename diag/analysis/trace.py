"""One request's trace: the record the assembler (`diag.analysis.traces`) builds from lifecycle
lines and every sink reads — the report, the store (as its state), rules (`when` on its fields).

Times are epoch seconds inside; `to_dict` gives the public, documented shape with ISO times.
Fields starting with `_` are the assembler's working flags: kept in the stored state (so the
daemon can carry on after a restart), never in the public shape.
"""

from __future__ import annotations

from typing import Any

from diag.parsing.clock import iso

STATUSES = ("ok", "aborted", "failed", "rejected", "in_flight", "unknown")


# The fields, in order (positional arguments follow it); the defaults are in `__init__`.
FIELDS = ("id", "server", "source", "model", "client", "endpoint", "received_at", "added_at", "first_output_at",
          "finished_at", "aborted_at", "failed_at", "status", "http_status", "prompt_tokens", "output_tokens",
          "max_tokens", "images", "prompt_chars", "latency_s", "reason", "says_no_image", "stuck", "findings",
          "timeline", "http", "first_line", "_text", "_ended", "_aborted", "_failed", "_completed")


class Trace:
    """A dataclass by hand: a built package compiles this class to a C type with the same fields
    (trace.pxd), so the assembler reads and writes them as struct members instead of through the
    type's attribute lookup — a dataclass decorator would replace that type with a Python class.

    `stuck`: in flight for longer than stuck_after. `_text`: transient, the first characters of
    the guide's generated tokens, never serialised. `_aborted`, `_failed`: flags, not times
    (llama.cpp lines carry no wall-clock time). `_completed`: an explicit success marker
    (Finished, timing, final output)."""

    __slots__ = FIELDS

    def __init__(self, id: str, server: str, source: str, model: str | None = None, client: str | None = None,
                 endpoint: str | None = None, received_at: float | None = None, added_at: float | None = None,
                 first_output_at: float | None = None, finished_at: float | None = None,
                 aborted_at: float | None = None, failed_at: float | None = None, status: str = "in_flight",
                 http_status: int | None = None, prompt_tokens: int | None = None, output_tokens: int | None = None,
                 max_tokens: int | None = None, images: int | None = None, prompt_chars: int | None = None,
                 latency_s: float | None = None, reason: str | None = None, says_no_image: bool = False,
                 stuck: bool = False, findings: list[str] | None = None, timeline: list[dict[str, Any]] | None = None,
                 http: dict[str, Any] | None = None, first_line: int = 0, _text: str = "", _ended: bool = False,
                 _aborted: bool = False, _failed: bool = False, _completed: bool = False) -> None:
        self.id = id
        self.server = server
        self.source = source
        self.model = model
        self.client = client
        self.endpoint = endpoint
        self.received_at = received_at
        self.added_at = added_at
        self.first_output_at = first_output_at
        self.finished_at = finished_at
        self.aborted_at = aborted_at
        self.failed_at = failed_at
        self.status = status
        self.http_status = http_status
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.max_tokens = max_tokens
        self.images = images
        self.prompt_chars = prompt_chars
        self.latency_s = latency_s
        self.reason = reason
        self.says_no_image = says_no_image
        self.stuck = stuck
        self.findings = [] if findings is None else findings
        self.timeline = [] if timeline is None else timeline
        self.http = http
        self.first_line = first_line
        self._text = _text
        self._ended = _ended
        self._aborted = _aborted
        self._failed = _failed
        self._completed = _completed

    def __repr__(self) -> str:
        return "Trace(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in FIELDS) + ")"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return tuple(getattr(self, k) for k in FIELDS) == tuple(getattr(other, k) for k in FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value (as a dataclass)

    def to_state(self) -> dict[str, Any]:
        """Everything needed to carry on assembling after a restart (raw times, flags), no text.

        Shallow on purpose (serialised at once): dataclasses.asdict deep-copies and dominated the
        daemon's CPU time."""
        out = {}
        for k in STATE_FIELDS:
            v = getattr(self, k)
            if v is not None and v is not False and v != "" and v != []:  # defaults are left out (0 is kept)
                out[k] = v
        return out

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Trace":
        return cls(**{k: v for k, v in d.items() if k in _KNOWN})

    def to_dict(self) -> dict[str, Any]:
        """The public shape (ISO times, no internal flags), in the documented key order.

        Spelled out rather than built from the field list: a scan serialises every trace, and a
        dict display is three times faster (tests/test_fastpath.py pins the keys to the fields)."""
        source = self.source
        http = self.http
        return {
            "id": self.id, "server": self.server, "source": source, "model": self.model, "client": self.client,
            "endpoint": self.endpoint, "received_at": iso(self.received_at), "added_at": iso(self.added_at),
            "first_output_at": iso(self.first_output_at), "finished_at": iso(self.finished_at),
            "aborted_at": iso(self.aborted_at), "failed_at": iso(self.failed_at), "status": self.status,
            "http_status": self.http_status, "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
            "max_tokens": self.max_tokens, "images": self.images, "prompt_chars": self.prompt_chars,
            "latency_s": self.latency_s, "reason": self.reason, "says_no_image": self.says_no_image, "stuck": self.stuck,
            "findings": list(self.findings),
            "timeline": [{"kind": e["kind"], "time": iso(e["time"]), "path": e.get("path", source), "line": e["line"]}
                         for e in self.timeline],
            "http": dict(http) if http else None,
        }


_KNOWN = frozenset(FIELDS)
STATE_FIELDS = tuple(f for f in FIELDS if f != "_text")  # to_state's keys, in its order
PUBLIC_FIELDS = tuple(f for f in STATE_FIELDS if not f.startswith("_") and f != "first_line")  # to_dict's keys
