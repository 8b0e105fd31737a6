"""What the alerts look like from outside the daemon: the one read API over the alerts tables.

`diag alerts` (terminal and `--json`), the dashboard's Alerts page and overview, `/api/status` and
`diag_alerts_firing` in /metrics all read through here, so they agree on what "firing",
"silenced" and "recently resolved" mean and nothing outside this package reads the tables or the
alerts' JSON state itself. Reads only: any connection will do (the web's read-only one included),
and a store from before alerts (no tables yet) reads as no alerts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any
from urllib.parse import quote

from diag.alerts import silences as sil
from diag.alerts.model import MAX_IDS, Alert
from diag.parsing.clock import iso

RECENT = 86400  # "recently resolved": the last day


def silences(db: sqlite3.Connection, include_expired: bool = False) -> list[sil.Silence]:
    try:
        return sil.load(db, include_expired)
    except sqlite3.OperationalError:
        return []  # a store from before alerts: the daemon adds the tables when it next starts


def item(a: Alert) -> dict[str, Any]:
    """One alert as people see it: labels, derived text (redacted at parse time), counts and times."""
    return {"fingerprint": a.fp, "status": a.status, "rule": a.rule, "title": a.title, "labels": a.labels,
            "summary": a.summary, "excerpt": a.excerpt, "remedy": a.remedy, "count": a.count,
            "starts_at": iso(a.starts_at), "ends_at": iso(a.ends_at), "last_hit_at": iso(a.last_hit_at),
            "first_seen": iso(a.first_seen), "last_seen": iso(a.last_seen), "request_ids": a.request_ids[:MAX_IDS],
            "more_request_ids": max(0, len(a.request_ids) - MAX_IDS), "silenced_by": a.silenced_by,
            "inhibited_by": a.inhibited_by, "finding_path": f"/findings?rule={quote(a.rule, safe='')}"}


def alerts_doc(db: sqlite3.Connection, now: float | None = None) -> dict[str, Any]:
    """Firing, silenced (or inhibited) and recently resolved alerts, active silences, and the outbox
    per sink (queued, delivered, expired, the last error of a failing sink). What `diag alerts --json` prints."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {"firing": [], "resolved": [], "silenced": [], "silences": [s.to_dict(now) for s in silences(db)],
                           "outbox": {"queued": 0, "expired": 0, "delivered": 0, "sinks": []}}
    try:
        rows = db.execute("SELECT data FROM alerts WHERE active = 1 OR updated_at >= ? ORDER BY updated_at DESC",
                          (now - RECENT,)).fetchall()
        ob = db.execute("SELECT sink, state, count(*), min(created_at), max(delivered_at) FROM outbox GROUP BY sink, state").fetchall()
        errs = {r[0]: r[1] for r in db.execute(
            "SELECT sink, last_error FROM outbox WHERE state = 'queued' AND last_error IS NOT NULL ORDER BY id DESC")}
    except sqlite3.OperationalError:
        return out
    for (data,) in rows:
        a = Alert.from_state(json.loads(data))
        key = "resolved" if a.status == "resolved" else "silenced" if a.muted else "firing"
        out[key].append(item(a))
    sinks: dict[str, dict[str, Any]] = {}
    for sink, state, n, oldest, last_ok in ob:
        d = sinks.setdefault(sink, {"sink": sink, "queued": 0, "delivered": 0, "expired": 0, "last_error": None,
                                    "oldest_queued": None, "last_delivered": None})
        d[state] = n
        out["outbox"][state] = out["outbox"].get(state, 0) + n
        if state == "queued":
            d["oldest_queued"] = iso(oldest)
            d["last_error"] = errs.get(sink)
        if state == "delivered":
            d["last_delivered"] = iso(last_ok)
    out["outbox"]["sinks"] = sorted(sinks.values(), key=lambda d: d["sink"])
    return out


def firing_count(db: sqlite3.Connection) -> int | None:
    """How many alerts fire and notify now (silenced and inhibited ones not counted, as in
    `alerts_doc()["firing"]`); None for a store without the alerts tables."""
    try:
        rows = db.execute("SELECT data FROM alerts WHERE status = 'firing' AND active = 1").fetchall()
    except sqlite3.OperationalError:
        return None
    return sum(1 for (data,) in rows if not Alert.from_state(json.loads(data)).muted)
