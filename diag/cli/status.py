"""`diag status`, `diag trace`, `diag findings`: what the daemon stored, read without its help
(the documents are `diag.store.views`, shared with the dashboard), printed for people or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # rich is imported where these print: `diag scan --json` (which imports this module) never loads it
    from rich.console import Console

from diag.cli.state import add_state_options, open_store
from diag.cli.usage import UsageError, console
from diag.parsing.clock import iso


def add_parsers(sub: Any) -> None:
    st = sub.add_parser("status", help="what the daemon follows and how far it got (reads the store)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    tr = sub.add_parser("trace", help="one request's timeline from the store")
    tr.add_argument("id", help="request id (a unique prefix is enough)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)
    fi = sub.add_parser("findings", help="findings the daemon stored")
    fi.add_argument("--since", metavar="T", help="ISO time, epoch, or a duration like 2h")
    fi.add_argument("--json", action="store_true")
    fi.set_defaults(func=cmd_findings)
    for x in (st, tr, fi):
        add_state_options(x)


def cmd_status(args: argparse.Namespace) -> int:
    from diag.store.views import status_doc

    store = open_store(args)
    doc = status_doc(store)
    return _show(doc, args.json, print_status)


def cmd_trace(args: argparse.Namespace) -> int:
    from diag.fsname import display, text
    from diag.store.views import trace_doc

    store = open_store(args)
    tid = text(args.id)  # an argument's bytes that are not UTF-8: no stored id has them (ids are text), none is found
    doc = trace_doc(store, tid)
    if doc is None:
        cands = store.trace_candidates(tid, 21)
        if len(cands) > 1:
            more = " …" if len(cands) > 20 else ""
            raise UsageError(f"{tid!r} is ambiguous: {len(cands) if not more else 'more than 20'} traces start with it "
                             f"({', '.join(cands[:20])}{more})")
        print(f"diag: no trace {tid!r} in {display(store.path)}", file=sys.stderr)
        return 1
    return _show(doc, args.json, print_trace)


def cmd_findings(args: argparse.Namespace) -> int:
    from diag.parsing.clock import parse_user_time

    store = open_store(args)
    try:
        since = parse_user_time(args.since) if args.since else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = store.findings(since=since)
    return _show(rows, args.json, lambda rows, out: print_findings(rows, out, args.since))


def _show(doc: Any, as_json: bool, printer: Callable[[Any, "Console"], None]) -> int:
    """`--json`: the document as it is, for scripts; else `printer`'s rendering for people."""
    if as_json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        printer(doc, console())
    return 0


def print_status(doc: dict[str, Any], out: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table

    d = doc["daemon"]
    state = f"running, pid {d['pid']}, up {d['uptime_s']:.0f} s" if d["running"] else f"not running (last pid {d['pid']})"
    out.print(f"[bold]diag daemon[/]: {state}; store {escape(doc['state'])}; last commit {d['last_commit']}")
    t = Table(show_edge=False, header_style="bold")
    for c in ("path", "format", "offset", "size", "lag", "lines", "last line", "rotations", "error"):
        t.add_column(c, overflow="fold")
    for s in doc["sources"]:
        t.add_row(escape(s["path"]), str(s["format"] or ""), str(s["offset"]), str(s["size"] if s["size"] is not None else ""),
                  str(s["lag_bytes"] if s["lag_bytes"] is not None else ""), str(s["lines_read"]), str(s["last_line_time"] or ""),
                  str(s["rotations"]), f"[red]{escape(s['last_error'])}[/]" if s["last_error"] else "")
    out.print(t)
    out.print(f"{doc['traces']} traces, {doc['findings']} findings stored")
    for e in doc["rule_errors"]:
        out.print(f"[red]rule error:[/] {escape(e)}")
    for stage, e in doc.get("internal_errors", {}).items():
        out.print(f"[red]internal errors in {escape(stage)}:[/] {e['count']}, last at {escape(e['last_location'])} "
                      f"({escape(e['last_error'])})")


def print_trace(d: dict[str, Any], out: "Console") -> None:
    from rich.markup import escape

    out.print(f"[bold]{escape(d['id'])}[/] {d['status']}  server {d['server']}  model {escape(str(d['model']))}  "
                  f"HTTP {d['http_status']}  client {escape(str(d['client']))}")
    facts = ", ".join(f"{k} {d[k]}" for k in ("prompt_tokens", "output_tokens", "max_tokens", "images", "prompt_chars", "latency_s")
                      if d.get(k) is not None)
    if facts:
        out.print(f"  {facts}")
    if d.get("reason"):
        out.print(f"  reason: {escape(d['reason'])}")
    for e in d["timeline"]:
        out.print(f"  {e['time'] or '?':32} {e['kind']:18} {escape(e['path'])}:{e['line']}")
    for f in d["findings"]:
        out.print(f"  [red]{f['severity']}[/] {f['rule']}: {escape(f['summary'] or '')}")


def print_findings(rows: list[dict[str, Any]], out: "Console", since: str | None = None) -> None:
    """`since`: the --since the rows were asked with (a post-mortem store's findings are often older)."""
    from rich.markup import escape

    if not rows:
        out.print("No findings stored." if since is None else f"No findings stored since {escape(since)} (without --since: all of them).")
        return
    for r in rows:
        when = iso(r["ts"] or r["created_at"])
        rid = f" [{escape(r['request_id'])}]" if r["request_id"] else ""
        times = f" ×{r['count']}" if r.get("count", 1) > 1 else ""
        out.print(f"{when} [bold]{r['severity']}[/] {r['rule']}{times}{rid}: {escape(r['summary'] or '')}  "
                      f"[dim]{escape(str(r['path']))}:{r['line']}[/]")
