"""The alert: labels (who/what), annotations (human text), a fingerprint over the labels.

The fingerprint is Alertmanager's own (FNV-1a 64 over the sorted label names and values, each
followed by 0xFF; prometheus/common `labelSetToFingerprint`), so an alert diag sends keeps the
same identity in Alertmanager, in webhook receivers and in `diag alerts`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diag.parsing.clock import iso

MAX_IDS = 10  # request ids in an annotation
SEVERITY_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6}  # sd-daemon <N> per severity


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's label-set fingerprint as 16 hex digits."""
    h = 14695981039346656037
    for k in sorted(labels):
        for part in (k.encode(), b"\xff", str(labels[k]).encode(), b"\xff"):
            for b in part:
                h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def rfc3339(ts: float | None) -> str:
    """UTC RFC 3339 as Alertmanager writes it; no time is Go's zero time."""
    return iso(ts, utc=True) or "0001-01-01T00:00:00Z"


@dataclass
class Alert:
    """One alert: the hits of one rule with one label set, from first hit until resolved.

    `starts_at`/`last_hit_at`/`ends_at` are wall-clock times of the daemon (timers run on them);
    `first_seen`/`last_seen` are the log's own times of the first and last hit (shown to people).
    """

    labels: dict[str, str]
    title: str
    template: str  # the rule's summary template, filled from `fields` with the current count
    remedy: str
    excerpt: str
    starts_at: float
    last_hit_at: float
    state_like: bool = False
    count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    request_ids: list[str] = field(default_factory=list)
    open_ids: list[str] = field(default_factory=list)  # state-like trace alerts: requests still in the condition
    ends_at: float | None = None  # set when resolved
    notified: bool = False  # a notification has carried it as firing
    silenced_by: list[str] = field(default_factory=list)
    inhibited_by: str | None = None
    am_sent_at: float = 0.0  # last push to Alertmanager sinks
    fields: dict[str, Any] = field(default_factory=dict)  # derived fields of the first hit (never user text)
    fp: str = ""

    def __post_init__(self) -> None:
        if not self.fp:
            self.fp = fingerprint(self.labels)

    @property
    def rule(self) -> str:
        return self.labels["alertname"]

    @property
    def status(self) -> str:
        return "resolved" if self.ends_at is not None else "firing"

    @property
    def summary(self) -> str:
        from diag.analysis.findings import render

        return render(self.template, self.fields, self.count, self.request_ids)

    @property
    def muted(self) -> bool:
        return bool(self.silenced_by) or self.inhibited_by is not None

    def annotations(self, external_url: str) -> dict[str, str]:
        ids = self.request_ids[:MAX_IDS]
        # summary and excerpt are made of log text the parsers already reduced (diag.parsing.usercontent: URLs to
        # scheme://host:port, queries, bodies and prompts to placeholders), so every sink shows what the
        # store and the dashboard show; no second, different redaction here.
        a = {"title": self.title, "summary": self.summary, "remedy": self.remedy, "count": str(self.count),
             "first_seen": iso(self.first_seen) or "", "last_seen": iso(self.last_seen) or ""}
        if self.excerpt:
            a["excerpt"] = self.excerpt
        if ids:
            a["request_ids"] = ", ".join(ids) + (f" (+{len(self.request_ids) - len(ids)} more)" if len(self.request_ids) > len(ids) else "")
        if external_url:
            a["url"] = self.finding_url(external_url)
        return a

    def finding_url(self, external_url: str) -> str:
        """The dashboard's page of this alert's findings (`/findings?rule=ID`); "" without a dashboard."""
        from urllib.parse import quote

        return f"{external_url.rstrip('/')}/findings?rule={quote(self.rule, safe='')}" if external_url else ""

    def to_webhook(self, external_url: str) -> dict[str, Any]:
        """One entry of `alerts[]` in Alertmanager's webhook payload (version 4)."""
        return {"status": self.status, "labels": dict(self.labels), "annotations": self.annotations(external_url),
                "startsAt": rfc3339(self.starts_at), "endsAt": rfc3339(self.ends_at), "generatorURL": self.finding_url(external_url),
                "fingerprint": self.fp}

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Alert":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
