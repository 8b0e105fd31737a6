"""What `diag scan` prints: a stable JSON document, or a rich report for people.

The JSON shape is documented in the README and versioned by `diag_version`; it holds derived
facts only (counts, sizes, timings, ids, a redacted excerpt per finding), never prompt text.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diag import __version__
from diag.parsing.clock import iso
from diag.pipeline import Pipeline
from diag.analysis.traces import Trace

_SEV_STYLE = {"critical": "bold white on red", "error": "bold red", "warning": "yellow", "info": "cyan"}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def _host(client: str) -> str:
    """`10.0.0.5:51234` → `10.0.0.5` (ports change per connection; hosts are what people recognise)."""
    return client.rsplit(":", 1)[0] if client.count(":") == 1 else client


class TraceSummary:
    """The `summary` section, accumulated trace by trace: `diag scan` streams traces out and
    keeps only this (counts, and one float per request for the latency percentiles).

    `add` takes each trace's place in the document (`order`), because the top clients list
    breaks ties by where a client first appears among the sorted traces."""

    def __init__(self) -> None:
        self.count = 0
        self.by_status: Counter[str] = Counter()
        self.latencies = array("d")
        self.images_known = 0
        self.images_total = 0
        self.images_max: int | None = None
        self.http: Counter[str] = Counter()
        self.hosts: Counter[str] = Counter()
        self._host_first: dict[str, Any] = {}

    def add(self, t: Trace, order: Any) -> None:
        self.count += 1
        self.by_status[t.status] += 1
        if t.latency_s is not None:
            self.latencies.append(t.latency_s)
        if t.images is not None:
            self.images_known += 1
            self.images_total += t.images
            if self.images_max is None or t.images > self.images_max:
                self.images_max = t.images
        if t.http is not None:  # an access line attached to the trace
            self.http[str(t.http_status)] += 1
        if t.client:
            h = _host(t.client)
            self.hosts[h] += 1
            first = self._host_first.get(h)
            if first is None or order < first:
                self._host_first[h] = order

    def add_settled(self, t: Trace) -> None:
        """A trace streamed out as it settled: its place is (source, first line, arrival)."""
        self.add(t, (t.source, t.first_line, self.count))

    def to_dict(self, http_records: list[dict[str, Any]]) -> dict[str, Any]:
        """The section, with the access lines that stayed records of their own (no trace took them)."""
        http = self.http.copy()
        clients: Counter[str] = Counter()
        for h in sorted(self._host_first, key=self._host_first.__getitem__):
            clients[h] = self.hosts[h]
        for r in http_records:
            http[str(r.get("status"))] += 1
            c = r.get("client")
            if c:
                clients[_host(c)] += 1
        lat = list(self.latencies)
        return {
            "count": self.count,
            "by_status": dict(sorted(self.by_status.items())),
            "latency_s": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "max": max(lat) if lat else None, "known": len(lat)},
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
    return summary.to_dict(pipe.assembler.http_records)


def to_json(pipe: Pipeline, summary: TraceSummary | None = None) -> dict[str, Any]:
    """The document as a dict (the traces the pipeline kept; `summary` when they were streamed)."""
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
        "stats": {"lines": pipe.stats.lines, "events": pipe.stats.events, "seconds": round(pipe.stats.seconds, 4)},
    }


def print_human(pipe: Pipeline, console: Console, verbose: bool = False, summary: TraceSummary | None = None) -> None:
    t = Table(title="Sources", show_edge=False, header_style="bold")
    for col in ("file", "format", "lines", "cut lines", "note"):
        t.add_column(col, overflow="fold")
    for s in pipe.sources:
        t.add_row(escape(s.path), s.format, str(s.lines), str(s.truncated_lines) if s.truncated_lines else "",
                  f"[red]{escape(s.error)}[/]" if s.error else "")
    console.print(t)
    console.print()

    findings = pipe.findings.sorted()
    if not findings:
        console.print("[green]No findings.[/]")
    else:
        console.print(f"[bold]Findings[/] ({len(findings)} rules fired)")
        for f in findings:
            r = f.rule
            when = iso(f.first_seen) or "?"
            if f.last_seen and f.last_seen != f.first_seen:
                when += f" → {iso(f.last_seen)}"
            console.print(f"\n[{_SEV_STYLE[r.severity]}]{r.severity.upper()}[/] [bold]{escape(r.title)}[/] "
                          f"[dim]({r.id}, {r.category}) ×{f.count}  {escape(when)}[/]")
            console.print(f"  {escape(f.summary)}")
            if f.excerpt:
                loc = f.locations[0] if f.locations else {}
                console.print(f"  [dim]{escape(str(loc.get('path', '')))}:{loc.get('line', '')}[/]  [italic]{escape(f.excerpt)}[/]")
            console.print(f"  [green]fix:[/] {escape(r.remedy)}")
            if verbose and f.request_ids:
                console.print(f"  [dim]requests: {escape(', '.join(f.request_ids[:20]))}[/]")
    console.print()

    s = trace_summary(pipe, summary)
    console.print(f"[bold]Requests[/]: {s['count']} traced  " + "  ".join(f"{k}: {v}" for k, v in s["by_status"].items()))
    lat = s["latency_s"]
    if lat["known"]:
        console.print(f"  latency p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, max {lat['max']:.2f} s ({lat['known']} known)")
    if s["images"]["requests_with_count"]:
        im = s["images"]
        console.print(f"  images: {im['total']} in {im['requests_with_count']} requests with a known count (max {im['max_per_request']} per request)")
    if s["http_status"]:
        console.print("  HTTP: " + ", ".join(f"{k}: {v}" for k, v in s["http_status"].items()))
    if s["top_clients"]:
        console.print("  top clients: " + ", ".join(f"{escape(c['client'])} ({c['requests']})" for c in s["top_clients"]))
    if verbose:
        tt = Table(show_edge=False, header_style="bold")
        for col in ("id", "status", "http", "prompt", "output", "images", "latency s", "findings"):
            tt.add_column(col, overflow="fold")
        for tr in pipe.traces[:200]:
            tt.add_row(escape(tr.id), tr.status, str(tr.http_status or ""), str(tr.prompt_tokens or ""),
                       str(tr.output_tokens or ""), "" if tr.images is None else str(tr.images),
                       "" if tr.latency_s is None else f"{tr.latency_s:.2f}", escape(",".join(tr.findings)))
        console.print(tt)
    console.print()
    for path, facts in pipe.facts.by_source.items():
        keys = ("server", "version", "model", "served_model_name", "max_model_len", "kv_cache_tokens", "max_concurrency",
                "weights_gib", "listen", "starts")
        shown = ", ".join(f"{k}={escape(str(facts[k]))}" for k in keys if facts.get(k) is not None)
        console.print(f"[bold]Startup facts[/] [dim]{escape(path)}[/]: {shown}")
    if pipe.engine.errors:
        for e in pipe.engine.errors:
            console.print(f"[red]rule error:[/] {escape(e)}")
    console.print(f"[dim]{pipe.stats.lines} lines, {pipe.stats.events} events in {pipe.stats.seconds:.2f} s[/]")
