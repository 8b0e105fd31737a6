"""What `diag scan` prints for people: the sources read, the findings with their fix, the request
summary and the startup facts. Every string that came from a log is escaped for rich markup."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diag.parsing.clock import iso
from diag.pipeline import Pipeline
from diag.report.document import TraceSummary, trace_summary

_SEV_STYLE = {"critical": "bold white on red", "error": "bold red", "warning": "yellow", "info": "cyan"}


def print_human(pipe: Pipeline, console: Console, verbose: bool = False, summary: TraceSummary | None = None,
                warnings: list[str] | None = None, window: str | None = None, nothing_read: bool = False) -> None:
    """The report; `warnings`: what the scan could not analyse (a file no line of which is a server's,
    a --since/--until window no line is in), `window`: what the window left out, `nothing_read`: no
    file with lines was recognised as a server log (`diag.cli.scan`)."""
    t = Table(title="Sources", show_edge=False, header_style="bold")
    for col in ("file", "format", "lines", "cut lines", "note"):
        t.add_column(col, overflow="fold")
    for s in pipe.sources:
        note = f"[red]{escape(s.error)}[/]" if s.error else "" if s.recognised else "[yellow]not recognised as a server log[/]"
        t.add_row(escape(s.path), s.format, str(s.lines), str(s.truncated_lines) if s.truncated_lines else "", note)
    console.print(t)
    console.print()
    if window:
        console.print(escape(window))
    for w in warnings or ():
        console.print(f"[yellow]{escape(w)}[/]")
    if window or warnings:
        console.print()

    findings = pipe.findings.sorted()
    if not findings and nothing_read:
        console.print("[yellow]Nothing was read as a server log: no findings does not mean healthy.[/]")
    elif not findings and pipe.stats.outside and pipe.last_ts is None:
        console.print("[yellow]Nothing was read in the window: no findings does not mean healthy.[/]")
    elif not findings:
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
        console.print(f"  latency of completed requests: p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, max {lat['max']:.2f} s "
                      f"({lat['known']} of {s['by_status'].get('ok', 0)} with a finish time)")
    elif s["by_status"].get("ok"):
        console.print("  latency: unknown (no completed request's finish time is in these logs)")
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
                "weights_gib", "listen", "upstream", "starts")
        shown = ", ".join(f"{k}={escape(str(facts[k]))}" for k in keys if facts.get(k) is not None)
        console.print(f"[bold]Startup facts[/] [dim]{escape(path)}[/]: {shown}")
    if pipe.engine.errors:
        for e in pipe.engine.errors:
            console.print(f"[red]rule error:[/] {escape(e)}")
    console.print(f"[dim]{pipe.stats.lines} lines, {pipe.stats.events} events in {pipe.stats.seconds:.2f} s[/]")
