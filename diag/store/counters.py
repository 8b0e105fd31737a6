"""Cumulative counters kept in the store, beside the rows that retention prunes.

`/metrics` must expose counters that only ever go up: if `diag_requests_total` were a `count(*)`
over the traces table, every retention pass would look like a counter reset to Prometheus. So the
single writer adds to these counters in the same transaction that stores the rows they count:
a trace once, when it is first committed with a final status; a finding when it is stored; the
lines read from a file that retention forgets. The collector (`diag.web.metrics`) only reads them.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections import Counter
from typing import Any, Iterable

# vLLM's buckets for vllm:e2e_request_latency_seconds, so both histograms can be compared.
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                   240.0, 480.0, 960.0, 1920.0, 7680.0)


def labels_key(**labels: Any) -> str:
    """The counters table's key for a label set: JSON with sorted keys, values as strings."""
    return _encoded(tuple(sorted((k, "" if v is None else str(v)) for k, v in labels.items())))


@functools.lru_cache(maxsize=4096)
def _encoded(items: tuple[tuple[str, str], ...]) -> str:
    """The same few label sets come back at every commit (tens a second when a server writes each
    line on its own): each is encoded once."""
    return json.dumps(dict(items), ensure_ascii=False, separators=(",", ":"))


def bucket_of(value: float) -> str:
    for b in LATENCY_BUCKETS:
        if value <= b:
            return repr(b)
    return "+Inf"


def count_new(db: sqlite3.Connection, final: Iterable[Any], hits: Iterable[Any]) -> None:
    """Inside the writer's transaction: add `final` (traces reaching a final status for the first
    time, as `Store.commit` found them) and `hits` to the counters.

    Label keys are built once per distinct label set, not per trace: a catch-up counts 100,000s of
    traces that share a handful of (model, status, HTTP status) combinations."""
    per: Counter[tuple[Any, str, Any]] = Counter()
    lat: dict[Any, list[float]] = {}
    for t in final:
        model = t.model
        per[model, t.status, t.http_status] += 1
        latency = t.latency_s
        if latency is not None and latency >= 0:
            lat.setdefault(model, []).append(latency)
    add: Counter[tuple[str, str]] = Counter()
    for (model, status, http_status), n in per.items():
        add["requests", labels_key(model_name=model, status=status, http_status=http_status)] += n
    for model, values in lat.items():
        buckets: Counter[str] = Counter(bucket_of(v) for v in values)
        for le, n in buckets.items():
            add["latency_bucket", labels_key(model_name=model, le=le)] += n
        add["latency_sum", labels_key(model_name=model)] += sum(values)
        add["latency_count", labels_key(model_name=model)] += len(values)
    for h in hits:
        add["findings", labels_key(rule=h.rule.id, severity=h.rule.severity, category=h.rule.category)] += 1
    if add:
        db.executemany("INSERT INTO counters (name, labels, value) VALUES (?,?,?) "
                       "ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value",
                       [(n, lab, v) for (n, lab), v in add.items()])


def keep_lines_read(db: sqlite3.Connection, where: str, args: tuple) -> None:
    """Before retention deletes finished files' rows (`where`, with `args`: the condition its DELETE
    uses, so a row is counted exactly when it goes): keep their line counts in `lines_pruned{path}`."""
    db.execute("INSERT INTO counters (name, labels, value) "
               f"SELECT 'lines_pruned', json_object('path', path), sum(lines_read) FROM sources WHERE {where} GROUP BY path "
               "ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value", args)


def read(db: sqlite3.Connection, name: str) -> list[tuple[dict[str, str], float]]:
    return [(json.loads(lab), v) for lab, v in db.execute("SELECT labels, value FROM counters WHERE name = ?", (name,))]
