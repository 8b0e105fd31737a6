"""Reading the daemon's store without its help: `diag status`, `diag trace`, `diag findings`."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diag.parsing.clock import iso
from diag.store.db import Store


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def sources_doc(store: Store, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Per configured path: how far the daemon got (lag against the file's size now), lines read, errors."""
    by_path: dict[str, list] = defaultdict(list)
    for s in store.sources():
        by_path[s.path].append(s)
    sources = []
    errors = meta.get("errors") or {}
    for path, rows in by_path.items():
        active = next((r for r in reversed(rows) if r.state == "active"), rows[-1])
        try:
            size = os.stat(path).st_size
        except OSError:
            size = active.size
        sources.append({
            "path": path, "format": active.format, "offset": active.offset, "size": size,
            "lag_bytes": max(0, size - active.offset) if active.state == "active" else 0,
            "lines_read": sum(r.lines_read for r in rows), "truncated_lines": sum(r.truncated_lines for r in rows),
            "last_line_time": iso(max((r.last_line_time for r in rows if r.last_line_time), default=None)),
            "rotations": max(r.rotations for r in rows), "files": len(rows),
            "last_error": errors.get(path) or active.last_error,
        })
    for path, err in errors.items():
        if path not in by_path:
            sources.append({"path": path, "format": None, "offset": 0, "size": None, "lag_bytes": None, "lines_read": 0,
                            "truncated_lines": 0, "last_line_time": None, "rotations": 0, "files": 0, "last_error": err})
    return sources


def status_doc(store: Store) -> dict[str, Any]:
    meta = store.meta()
    sources = sources_doc(store, meta)
    pid = meta.get("pid")
    running = _alive(pid) and not meta.get("stopped_at") or (_alive(pid) and meta.get("stopped_at", 0) < meta.get("started_at", 0))
    counts = store.counts()
    return {
        "state": str(store.path),
        "schema_version": store.schema_version,
        "daemon": {"pid": pid, "running": bool(running), "started_at": iso(meta.get("started_at")),
                   "uptime_s": round(time.time() - meta["started_at"], 1) if running and meta.get("started_at") else None,
                   "last_commit": iso(meta.get("heartbeat")), "version": meta.get("version"), "config": meta.get("config")},
        "sources": sources,
        "traces": counts["traces"],
        "findings": counts["findings"],
        "rule_errors": meta.get("rule_errors") or [],
        "internal_errors": meta.get("internal_errors") or {},
    }


def print_status(doc: dict[str, Any], console: Console) -> None:
    d = doc["daemon"]
    state = f"running, pid {d['pid']}, up {d['uptime_s']:.0f} s" if d["running"] else f"not running (last pid {d['pid']})"
    console.print(f"[bold]diag daemon[/]: {state}; store {escape(doc['state'])}; last commit {d['last_commit']}")
    t = Table(show_edge=False, header_style="bold")
    for c in ("path", "format", "offset", "size", "lag", "lines", "last line", "rotations", "error"):
        t.add_column(c, overflow="fold")
    for s in doc["sources"]:
        t.add_row(escape(s["path"]), str(s["format"] or ""), str(s["offset"]), str(s["size"] if s["size"] is not None else ""),
                  str(s["lag_bytes"] if s["lag_bytes"] is not None else ""), str(s["lines_read"]), str(s["last_line_time"] or ""),
                  str(s["rotations"]), f"[red]{escape(s['last_error'])}[/]" if s["last_error"] else "")
    console.print(t)
    console.print(f"{doc['traces']} traces, {doc['findings']} findings stored")
    for e in doc["rule_errors"]:
        console.print(f"[red]rule error:[/] {escape(e)}")
    for stage, e in doc.get("internal_errors", {}).items():
        console.print(f"[red]internal errors in {escape(stage)}:[/] {e['count']}, last at {escape(e['last_location'])} "
                      f"({escape(e['last_error'])})")


def trace_doc(store: Store, tid: str) -> dict[str, Any] | None:
    from diag.analysis.traces import Trace

    state = store.trace(tid)
    if state is None:
        return None
    d = Trace.from_state(state).to_dict()
    d["findings"] = [{k: f[k] for k in ("rule", "severity", "summary", "remedy", "path", "line")} | {"time": iso(f["ts"])}
                     for f in store.findings(request_id=d["id"])]
    return d


def print_trace(d: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{escape(d['id'])}[/] {d['status']}  server {d['server']}  model {escape(str(d['model']))}  "
                  f"HTTP {d['http_status']}  client {escape(str(d['client']))}")
    facts = ", ".join(f"{k} {d[k]}" for k in ("prompt_tokens", "output_tokens", "max_tokens", "images", "prompt_chars", "latency_s")
                      if d.get(k) is not None)
    if facts:
        console.print(f"  {facts}")
    if d.get("reason"):
        console.print(f"  reason: {escape(d['reason'])}")
    for e in d["timeline"]:
        console.print(f"  {e['time'] or '?':32} {e['kind']:18} {escape(e['path'])}:{e['line']}")
    for f in d["findings"]:
        console.print(f"  [red]{f['severity']}[/] {f['rule']}: {escape(f['summary'] or '')}")


def print_findings(rows: list[dict[str, Any]], console: Console) -> None:
    if not rows:
        console.print("No findings stored.")
        return
    for r in rows:
        when = iso(r["ts"] or r["created_at"])
        rid = f" [{escape(r['request_id'])}]" if r["request_id"] else ""
        times = f" ×{r['count']}" if r.get("count", 1) > 1 else ""
        console.print(f"{when} [bold]{r['severity']}[/] {r['rule']}{times}{rid}: {escape(r['summary'] or '')}  "
                      f"[dim]{escape(str(r['path']))}:{r['line']}[/]")
