"""What `diag scan` reports, as a stable JSON document (`to_json`) and its request summary.

The JSON shape is documented in the README and versioned by `diag_version`; it holds derived
facts only (counts, sizes, timings, ids, a redacted excerpt per finding), never prompt text.
`diag.report.jsonstream` writes the same document streamed; `diag.report.text` prints it for people.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any, Sequence

from diag import __version__
from diag.parsing.clock import iso
from diag.pipeline import Pipeline
from diag.report.percentile import percentiles
from diag.analysis.trace import Trace


def _host(client: str) -> str:
    """`10.0.0.5:51234` → `10.0.0.5` (ports change per connection; hosts are what people recognise);
    a client with no colon or several (an IPv6 address) stays whole."""
    i = client.find(":")
    return client[:i] if i >= 0 and client.find(":", i + 1) < 0 else client


class TraceSummary:
    """The `summary` section, accumulated trace by trace: `diag scan` streams traces out and
    keeps only this (counts, and one float per request for the latency percentiles).

    The latency percentiles are of completed (`ok`) requests only. An aborted request's time is
    how long its client waited before giving up, a failed one's how long until the engine gave
    up: mixed in, they made "p50 0.00 s (2 known)" of a vLLM 0.32 log whose ten completed
    requests have no finish time at INFO and whose two aborted ones ended at once.

    `add` takes each trace's place in the document (`order`), because the top clients list
    breaks ties by where a client first appears among the sorted traces."""

    __slots__ = ("count", "by_status", "latencies", "images_known", "images_total", "images_max", "http", "hosts",
                 "_host_first")

    def __init__(self) -> None:
        self.count = 0
        # plain dicts counted with get: a Counter's `+=` goes through its Python-level item slots
        self.by_status: dict[str, int] = {}
        self.latencies = array("d")
        self.images_known = 0
        self.images_total = 0
        self.images_max: int | None = None
        self.http: dict[Any, int] = {}  # HTTP status (as logged: an int, or None) -> traces
        self.hosts: dict[str, int] = {}
        self._host_first: dict[str, Any] = {}

    def add(self, t: Trace, order: Any = None) -> None:
        """`order`: the trace's place in the document; None for a trace streamed out as it settled,
        whose place is (source, first line, arrival) — made only for a trace with a client, as this
        runs once per request."""
        n = self.count
        self.count = n + 1
        by_status = self.by_status
        k = t.status
        by_status[k] = by_status.get(k, 0) + 1
        v = t.latency_s
        if v is not None and k == "ok":  # the percentiles are of completed requests (see `to_dict`)
            self.latencies.append(v)
        v = t.images
        if v is not None:
            self.images_known += 1
            self.images_total += v
            if self.images_max is None or v > self.images_max:
                self.images_max = v
        if t.http is not None:  # an access line attached to the trace
            http = self.http  # by the status itself, made text once in `to_dict` (str() and its hash per trace cost)
            k = t.http_status
            http[k] = http.get(k, 0) + 1
        client = t.client
        if client:
            h = _host(client)
            hosts = self.hosts
            hosts[h] = hosts.get(h, 0) + 1
            if order is None:
                order = (t.source, t.first_line, n)
            first = self._host_first.get(h)
            if first is None or order < first:
                self._host_first[h] = order

    def to_dict(self, http_records: list[dict[str, Any]], shared_clients: Sequence[str] = ()) -> dict[str, Any]:
        """The section, with the access lines that stayed records of their own (no trace took them),
        and the clients of those attached by count (`AccessAttacher.shared_clients`: a request each,
        no trace's client)."""
        http: Counter[str] = Counter()
        for k, n in self.http.items():
            http[str(k)] += n
        clients: Counter[str] = Counter()
        for h in sorted(self._host_first, key=self._host_first.__getitem__):
            clients[h] = self.hosts[h]
        for r in http_records:
            http[str(r.get("status"))] += 1
            c = r.get("client")
            if c:
                clients[_host(c)] += 1
        for c in shared_clients:
            clients[_host(c)] += 1
        lat = list(self.latencies)
        p50, p95 = percentiles(lat, 50, 95)
        return {
            "count": self.count,
            "by_status": dict(sorted(self.by_status.items())),
            "latency_s": {"p50": p50, "p95": p95, "max": max(lat) if lat else None, "known": len(lat)},
            "images": {"requests_with_count": self.images_known, "total": self.images_total, "max_per_request": self.images_max},
            "http_status": dict(sorted(http.items())),
            "top_clients": [{"client": c, "requests": n} for c, n in clients.most_common(5)],
        }


def trace_summary(pipe: Pipeline, summary: TraceSummary | None = None) -> dict[str, Any]:
    """The summary of a pipeline that kept its traces, or of the traces `summary` saw stream by."""
    if summary is None:
        summary = TraceSummary()
        for i, t in enumerate(pipe.traces):
            summary.add(t, i)
    return summary.to_dict(pipe.assembler.http_records, pipe.assembler.shared_clients)


def to_json(pipe: Pipeline, summary: TraceSummary | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
    """The document as a dict (the traces the pipeline kept; `summary` when they were streamed;
    `warnings`: what the scan could not analyse, each in the line it printed on stderr)."""
    facts = {}
    for path, f in pipe.facts.by_source.items():
        d = dict(f)
        for k in ("last_start", "last_shutdown"):
            if k in d:
                d[k] = iso(d[k])
        facts[path] = d
    return {
        "diag_version": __version__,
        "files": [s.to_dict() for s in pipe.sources],
        "findings": [f.to_dict() for f in pipe.findings.sorted()],
        "traces": [t.to_dict() for t in pipe.traces],
        "summary": trace_summary(pipe, summary),
        "facts": facts,
        "rule_errors": pipe.engine.errors,
        "internal_errors": pipe.internal.to_dict(),
        "warnings": list(warnings or ()),
        "stats": {"lines": pipe.stats.lines, "events": pipe.stats.events, "seconds": round(pipe.stats.seconds, 4),
                  "outside_window": pipe.stats.outside},
    }
