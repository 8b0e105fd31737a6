"""Read-only queries the pages, the API and the live stream share.

Everything here takes a read-only `Store` (its own SQLite connection, one per server thread) and
returns plain dicts. Listing uses the indexed columns of the traces table, never the JSON blob, and
keyset pagination on `(t, rowid)` so the 50th page costs what the first does with 1,000,000 rows.
Request ids are opaque, client-chosen strings: they are bound parameters here and escaped text on
every page.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any

from diag.parsing.clock import iso, parse_user_time
from diag.report.percentile import percentiles
from diag.store.db import Store
from diag.analysis.trace import STATUSES, Trace

PAGE = 50
MAX_PAGE = 500
# The few facts a list row needs from the JSON state are extracted by SQLite (C), not json.loads of each blob.
_LIST_COLS = ("rowid, id, t, status, model, http_status, latency_s, images, nfindings, server, source, "
              "json_extract(data, '$.client') AS client, json_extract(data, '$.prompt_tokens') AS prompt_tokens, "
              "json_extract(data, '$.output_tokens') AS output_tokens, json_extract(data, '$.stuck') AS stuck, "
              "round(json_extract(data, '$.first_output_at') - json_extract(data, '$.received_at'), 3) AS ttft_s")


class BadFilter(ValueError):
    """A filter value that cannot mean anything (the page shows it, the API answers 400)."""


@dataclass
class Filters:
    """The /requests filters; the same names in the page's URL, the API and the live stream."""

    status: str = ""
    model: str = ""
    http_status: str = ""
    since: str = ""
    until: str = ""
    min_latency: str = ""
    images: str = ""
    findings: str = ""

    @classmethod
    def from_query(cls, q: Any) -> "Filters":
        return cls(**{f.name: (q.get(f.name) or "").strip()[:200] for f in fields(cls)})

    def as_query(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def compile(self, now: float | None = None) -> tuple[list[str], list[Any]]:
        """SQL conditions over the indexed columns; BadFilter with a one-line reason."""
        where: list[str] = []
        args: list[Any] = []
        if self.status:
            if self.status not in STATUSES:
                raise BadFilter(f"status must be one of {', '.join(STATUSES)}")
            where.append("status = ?")
            args.append(self.status)
        if self.model:
            where.append("model = ?")
            args.append(self.model)
        if self.http_status:
            if not self.http_status.isdigit() or not 100 <= int(self.http_status) <= 599:
                raise BadFilter("http_status must be a number from 100 to 599")
            where.append("http_status = ?")
            args.append(int(self.http_status))
        for name, op in (("since", ">="), ("until", "<=")):
            val = getattr(self, name)
            if val:
                try:
                    where.append(f"t {op} ?")
                    args.append(parse_user_time(val, now))
                except ValueError as exc:
                    raise BadFilter(f"{name}: {exc}") from None
        if self.min_latency:
            try:
                v = float(self.min_latency)
            except ValueError:
                raise BadFilter("min_latency must be a number of seconds") from None
            if not math.isfinite(v):
                raise BadFilter("min_latency must be a number of seconds")
            where.append("latency_s >= ?")
            args.append(v)
        if self.images in ("1", "true", "yes"):
            where.append("images > 0")
        if self.findings in ("1", "true", "yes"):
            where.append("nfindings > 0")
        return where, args

    def matches(self, row: dict[str, Any], now: float | None = None) -> bool:
        """The same filters over one listed row (the live stream filters per subscriber)."""
        if self.status and row["status"] != self.status:
            return False
        if self.model and row["model"] != self.model:
            return False
        if self.http_status and str(row["http_status"]) != self.http_status:
            return False
        try:
            if self.since and (row["t"] or 0) < parse_user_time(self.since, now):
                return False
            if self.until and (row["t"] or 0) > parse_user_time(self.until, now):
                return False
            if self.min_latency and (row["latency_s"] is None or row["latency_s"] < float(self.min_latency)):
                return False
        except ValueError:
            return False
        if self.images in ("1", "true", "yes") and not row["images"]:
            return False
        if self.findings in ("1", "true", "yes") and not row["findings"]:
            return False
        return True


def encode_cursor(t: float, rowid: int) -> str:
    return f"{t!r}_{rowid}"


def decode_cursor(c: str) -> tuple[float, int]:
    try:
        t, _, rowid = c.partition("_")
        return float(t), int(rowid)
    except ValueError:
        raise BadFilter("cursor is not one this server handed out") from None


def list_row(r: Any) -> dict[str, Any]:
    """One trace as the list and the live stream show it: facts only, no text from the request."""
    return {
        "id": r["id"], "t": r["t"], "time": iso(r["t"]), "status": r["status"], "model": r["model"],
        "http_status": r["http_status"], "latency_s": r["latency_s"], "images": r["images"],
        "findings": r["nfindings"], "server": r["server"], "source": r["source"], "client": r["client"],
        "prompt_tokens": r["prompt_tokens"], "output_tokens": r["output_tokens"], "ttft_s": r["ttft_s"], "stuck": bool(r["stuck"]),
    }


def list_traces(store: Store, flt: Filters, cursor: str | None = None, limit: int = PAGE) -> dict[str, Any]:
    """Newest first. `{"traces": [...], "next": cursor or None}`."""
    limit = max(1, min(int(limit), MAX_PAGE))
    where, args = flt.compile()
    if cursor:
        t, rowid = decode_cursor(cursor)
        where.append("(t, rowid) < (?, ?)")
        args += [t, rowid]
    sql = f"SELECT {_LIST_COLS} FROM traces"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY t DESC, rowid DESC LIMIT ?"
    rows = store.db.execute(sql, args + [limit + 1]).fetchall()
    nxt = encode_cursor(rows[limit - 1]["t"], rows[limit - 1]["rowid"]) if len(rows) > limit else None
    return {"traces": [list_row(r) for r in rows[:limit]], "next": nxt}


def changed_since(store: Store, mark: tuple[float, int], limit: int = 200) -> tuple[list[dict[str, Any]], tuple[float, int], bool]:
    """Traces committed after `mark` (updated_at, rowid), for the live stream: the rows, the new mark, and
    whether more were committed than `limit` (then the mark skips to now: pages show a reload link rather
    than this process encoding a burst of thousands of rows while the daemon ingests it)."""
    rows = store.db.execute(f"SELECT {_LIST_COLS}, updated_at FROM traces WHERE (updated_at, rowid) > (?, ?) "
                            "ORDER BY updated_at, rowid LIMIT ?", (*mark, limit)).fetchall()
    if not rows:
        return [], mark, False
    truncated = len(rows) == limit
    mark = high_water(store) if truncated else (rows[-1]["updated_at"], rows[-1]["rowid"])
    rows.sort(key=lambda r: (r["t"], r["rowid"]))  # the list's order, oldest first: the page puts each on top
    return [list_row(r) for r in rows], mark, truncated


def high_water(store: Store) -> tuple[float, int]:
    r = store.db.execute("SELECT max(updated_at) FROM traces").fetchone()
    return (r[0] or 0.0, 1 << 62)


def resolve(store: Store, q: str) -> tuple[str | None, list[str]]:
    """A full id or a unique prefix → that id; otherwise (None, the candidates)."""
    q = q.strip()
    if not q:
        return None, []
    if store.db.execute("SELECT 1 FROM traces WHERE id = ?", (q,)).fetchone():
        return q, [q]
    cands = store.trace_candidates(q, 21)
    return (cands[0] if len(cands) == 1 else None), cands


def trace_detail(store: Store, tid: str, neighbours: int = 5) -> dict[str, Any] | None:
    """Everything the trace page shows, or None for an unknown id."""
    r = store.db.execute("SELECT rowid, t, data FROM traces WHERE id = ?", (tid,)).fetchone()
    if r is None:
        return None
    state = json.loads(r["data"])
    tr = Trace.from_state(state)
    d = tr.to_dict()
    base = tr.received_at if tr.received_at is not None else min((e["time"] for e in tr.timeline if e.get("time")), default=None)
    d["timeline"] = [{"kind": e["kind"], "time": iso(e.get("time")),
                      "offset_s": round(e["time"] - base, 3) if e.get("time") is not None and base is not None else None,
                      "path": e.get("path", tr.source), "line": e["line"]} for e in tr.timeline]
    d["ttft_s"] = round(tr.first_output_at - tr.received_at, 3) if tr.first_output_at and tr.received_at else None
    d["findings"] = [{k: f[k] for k in ("rule", "severity", "category", "title", "summary", "remedy", "path", "line", "excerpt")}
                     | {"time": iso(f["ts"] or f["created_at"])} for f in store.findings(request_id=tid, limit=200)]
    end = tr.finished_at or tr.failed_at or tr.aborted_at or base
    d["engine"] = engine_around(store, tr.source, base, end) if base is not None else []
    rowid, t = r["rowid"], r["t"]
    older = store.db.execute(f"SELECT {_LIST_COLS} FROM traces WHERE (t, rowid) < (?, ?) ORDER BY t DESC, rowid DESC LIMIT ?",
                             (t, rowid, neighbours)).fetchall()
    newer = store.db.execute(f"SELECT {_LIST_COLS} FROM traces WHERE (t, rowid) > (?, ?) ORDER BY t, rowid LIMIT ?",
                             (t, rowid, neighbours)).fetchall()
    d["neighbours"] = {"before": [list_row(x) for x in older], "after": [list_row(x) for x in reversed(newer)]}
    return d


def engine_around(store: Store, source: str, start: float, end: float | None, margin: float = 30.0) -> list[dict[str, Any]]:
    """The engine's stats lines from `margin` s before the request to `margin` s after it: its own log first."""
    lo, hi = start - margin, (end if end is not None else start) + margin
    rows = store.db.execute("SELECT source, ts, running, waiting, kv_usage, prompt_tps, gen_tps FROM engine_stats "
                            "WHERE source = ? AND ts BETWEEN ? AND ? ORDER BY ts LIMIT 60", (source, lo, hi)).fetchall()
    if not rows:
        rows = store.db.execute("SELECT source, ts, running, waiting, kv_usage, prompt_tps, gen_tps FROM engine_stats "
                                "WHERE ts BETWEEN ? AND ? ORDER BY ts LIMIT 60", (lo, hi)).fetchall()
    return [dict(x) | {"time": iso(x["ts"]), "offset_s": round(x["ts"] - start, 1)} for x in rows]


# -- findings and alerts -----------------------------------------------------------------------
def finding_groups(store: Store, rule: str | None = None, ids_per_group: int = 10) -> list[dict[str, Any]]:
    """Findings grouped by rule: count, first and last time, latest excerpt, remedy, affected requests."""
    q = ("SELECT rule, severity, category, max(title) AS title, count(*) AS count, min(coalesce(ts, created_at)) AS first, "
         "max(coalesce(ts, created_at)) AS last, max(id) AS last_id FROM findings")
    args: list[Any] = []
    if rule:
        q += " WHERE rule = ?"
        args.append(rule)
    q += " GROUP BY rule ORDER BY last DESC"
    out = []
    for g in store.db.execute(q, args).fetchall():
        latest = store.db.execute("SELECT summary, remedy, excerpt, path, line FROM findings WHERE id = ?", (g["last_id"],)).fetchone()
        ids = [x[0] for x in store.db.execute(
            "SELECT DISTINCT request_id FROM findings WHERE rule = ? AND request_id IS NOT NULL ORDER BY id DESC LIMIT ?",
            (g["rule"], ids_per_group))]
        out.append({"rule": g["rule"], "severity": g["severity"], "category": g["category"], "title": g["title"],
                    "count": g["count"], "first": iso(g["first"]), "last": iso(g["last"]), "summary": latest["summary"],
                    "remedy": latest["remedy"], "excerpt": latest["excerpt"], "path": latest["path"], "line": latest["line"],
                    "request_ids": ids})
    return out


def latest_findings(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    rows = store.db.execute("SELECT rule, severity, summary, request_id, path, line, coalesce(ts, created_at) AS t "
                            "FROM findings ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [dict(r) | {"time": iso(r["t"])} for r in rows]


# -- overview ----------------------------------------------------------------------------------
def servers(store: Store, meta: dict[str, Any], series: bool = True) -> list[dict[str, Any]]:
    """Per followed server log: its startup facts, its latest stats line, the last hour of stats."""
    facts: dict[str, dict[str, Any]] = meta.get("facts") or {}
    sources = set(facts) | {r[0] for r in store.db.execute("SELECT DISTINCT source FROM engine_stats")}
    out = []
    for src in sorted(sources):
        latest = store.db.execute("SELECT ts, running, waiting, kv_usage, prompt_tps, gen_tps FROM engine_stats "
                                  "WHERE source = ? ORDER BY ts DESC LIMIT 1", (src,)).fetchone()
        chart: dict[str, list] = {"ts": [], "running": [], "waiting": [], "kv_usage": []}
        if latest is not None and series:
            for r in store.db.execute("SELECT ts, running, waiting, kv_usage FROM engine_stats WHERE source = ? AND ts >= ? "
                                      "ORDER BY ts LIMIT 2000", (src, latest["ts"] - 3600)):
                for k in chart:
                    chart[k].append(r[k])
        f = dict(facts.get(src) or {})
        out.append({"source": src, "facts": f, "latest": dict(latest) | {"time": iso(latest["ts"])} if latest else None,
                    "series": chart})
    return out


def traffic(store: Store, window: float = 3600.0) -> dict[str, Any]:
    """Requests per minute by status and the latency p50/p95 of the completed ones over the last hour of data."""
    top = store.db.execute("SELECT max(t) FROM traces").fetchone()[0]
    if top is None:
        return {"minutes": [], "by_status": {}, "p50": None, "p95": None, "count": 0, "until": None}
    ref = top  # the last hour of data: a store copied off a server days ago still shows its last hour
    lo = ref - window
    per: dict[str, dict[int, int]] = {}
    for minute, status, n in store.db.execute("SELECT CAST(t / 60 AS INTEGER), status, count(*) FROM traces WHERE t >= ? "
                                              "GROUP BY 1, 2", (lo,)):
        per.setdefault(status, {})[minute] = n
    first = int(lo // 60) + 1
    minutes = list(range(first, int(ref // 60) + 1))
    # completed requests only, as `diag scan`'s summary (diag.report.document.TraceSummary)
    lat = [r[0] for r in store.db.execute("SELECT latency_s FROM traces WHERE t >= ? AND latency_s IS NOT NULL "
                                          "AND status = 'ok' ORDER BY t DESC LIMIT 20000", (lo,))]
    p50, p95 = percentiles(lat, 50, 95)
    return {"minutes": [m * 60 for m in minutes], "by_status": {s: [v.get(m, 0) for m in minutes] for s, v in sorted(per.items())},
            "p50": p50, "p95": p95, "count": sum(sum(v.values()) for v in per.values()), "until": iso(ref)}


def models(store: Store) -> list[str]:
    """Distinct model names for the filter's choices (index-only: skips through traces_model_t)."""
    out: list[str] = []
    cur: str | None = ""
    while len(out) < 50:
        r = store.db.execute("SELECT model FROM traces WHERE model > ? ORDER BY model LIMIT 1", (cur,)).fetchone()
        if r is None:
            break
        cur = r[0]
        out.append(cur)
    return out
