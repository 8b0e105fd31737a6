"""What the store says, as plain documents: the daemon's status and how far it got in each file
(`diag status`, `/api/status`, the dashboard's overview, `/metrics`) and one request's trace with
its findings (`diag trace`). Read without the daemon's help, from any process."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

from diag.fsname import display
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
    """Per configured path (and followed journal): how far the daemon got (lag against the file's size now), lines read, errors.
    Paths are shown by their display names (`diag.fsname`), as the daemon keys its errors."""
    by_path: dict[str, list] = defaultdict(list)
    for s in store.sources():
        by_path[s.path].append(s)
    sources = []
    errors = meta.get("errors") or {}
    shown = set()
    for path, rows in by_path.items():
        active = next((r for r in reversed(rows) if r.state == "active"), rows[-1])
        name = display(path)
        shown.add(name)
        try:
            size = os.stat(path).st_size
        except OSError:
            size = active.size
        sources.append({
            "path": name, "format": active.format, "offset": active.offset, "size": size,
            "lag_bytes": max(0, size - active.offset) if active.state == "active" else 0,
            "lines_read": sum(r.lines_read for r in rows), "truncated_lines": sum(r.truncated_lines for r in rows),
            "last_line_time": iso(max((r.last_line_time for r in rows if r.last_line_time), default=None)),
            "rotations": max(r.rotations for r in rows), "files": len(rows),
            "last_error": errors.get(name) or active.last_error,
        })
    for name, j in (meta.get("journal") or {}).items():
        if not isinstance(j, dict):
            continue
        # a systemd unit's journal (diag.ingest.journal): its place is a cursor, not an offset in a file of known size
        shown.add(name)
        sources.append({"path": name, "format": j.get("format"), "offset": j.get("offset") or 0, "size": None, "lag_bytes": None,
                        "lines_read": j.get("lines_read") or 0, "truncated_lines": 0, "last_line_time": iso(j.get("last_line_time")),
                        "rotations": 0, "files": 0, "last_error": errors.get(name)})
    for path, err in errors.items():
        if path not in shown:
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
        "state": display(store.path),
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


def trace_doc(store: Store, tid: str) -> dict[str, Any] | None:
    from diag.analysis.trace import Trace

    state = store.trace(tid)
    if state is None:
        return None
    d = Trace.from_state(state).to_dict()
    d["findings"] = [{k: f[k] for k in ("rule", "severity", "summary", "remedy", "path", "line")} | {"time": iso(f["ts"])}
                     for f in store.findings(request_id=d["id"])]
    return d
