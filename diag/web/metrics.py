"""Prometheus `/metrics`: a prometheus-client collector that reads the store at scrape time.

Counters come from the store's cumulative `counters` table (see `diag.store.counters`), so they never
go down when retention prunes traces; gauges are read fresh (latest stats line per server log,
lag per followed file, NVML). Names follow Prometheus practice (`diag_` prefix, base units,
`_total`), `model_name` is the label vLLM uses so Grafana can join on it, and no label ever holds
a request id (one series per request would swamp Prometheus).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from diag.store import counters
from diag.alerts import view as alerts_view
from diag.store.views import sources_doc
from diag.store.db import Store
from diag.web import queries


class StoreCollector:
    def __init__(self, get_store: Callable[[], Store], gpus: Callable[[], dict[str, Any]]):
        self.get_store = get_store
        self.gpus = gpus

    def describe(self) -> list[Metric]:
        return []  # collect() reads the store: not at registration time

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        store = self.get_store()
        db = store.db
        meta = store.meta()
        yield from self._requests(db)
        f = CounterMetricFamily("diag_findings", "Findings stored, by rule.", labels=["rule", "severity", "category"])
        for lab, v in _merged(counters.read(db, "findings"), ("rule", "severity", "category")):
            f.add_metric(lab, v)
        yield f
        firing = alerts_view.firing_count(db)
        yield GaugeMetricFamily("diag_alerts_firing", "Alerts firing now, silenced and inhibited ones not counted.", value=firing or 0)
        lag = GaugeMetricFamily("diag_source_lag_bytes", "Bytes of a followed log not read yet.", labels=["path"])
        lines = CounterMetricFamily("diag_lines_read", "Lines read from a followed log, rotated files included.", labels=["path"])
        pruned = {lab["path"]: v for lab, v in counters.read(db, "lines_pruned")}
        for s in sources_doc(store, meta):
            if s["lag_bytes"] is not None:
                lag.add_metric([s["path"]], s["lag_bytes"])
            lines.add_metric([s["path"]], s["lines_read"] + pruned.pop(s["path"], 0))
        for path, v in pruned.items():
            lines.add_metric([path], v)
        yield lag
        yield lines
        yield from self._engine(store, meta)
        yield from self._gpu()
        hb = meta.get("heartbeat")
        if isinstance(hb, (int, float)):
            yield GaugeMetricFamily("diag_last_commit_timestamp_seconds", "When the daemon last committed to the store.", value=hb)
        yield GaugeMetricFamily("diag_scrape_duration_seconds", "Time this scrape spent reading the store.",
                                value=time.perf_counter() - started)

    def _requests(self, db: Any) -> Iterator[Metric]:
        req = CounterMetricFamily("diag_requests", "Requests that reached a final status, by served model, status and HTTP status.",
                                  labels=["model_name", "status", "http_status"])
        for lab, v in _merged(counters.read(db, "requests"), ("model_name", "status", "http_status")):
            req.add_metric(lab, v)
        yield req
        buckets: dict[str, dict[str, float]] = defaultdict(dict)
        for lab, v in counters.read(db, "latency_bucket"):
            b = buckets[lab.get("model_name", "")]
            b[lab["le"]] = b.get(lab["le"], 0) + v
        sums = dict(_merged(counters.read(db, "latency_sum"), ("model_name",)))
        h = HistogramMetricFamily("diag_request_latency_seconds", "Request latency from receipt to its end, as the logs tell it.",
                                  labels=["model_name"])
        for model, per in sorted(buckets.items()):
            cum, rows = 0.0, []
            for le in [repr(b) for b in counters.LATENCY_BUCKETS] + ["+Inf"]:
                cum += per.get(le, 0)
                rows.append((le, cum))
            h.add_metric([model], rows, sum_value=sums.get((model,), 0.0))
        yield h

    def _engine(self, store: Store, meta: dict[str, Any]) -> Iterator[Metric]:
        names = ("running", "waiting", "kv")
        fams = {
            "running": GaugeMetricFamily("diag_engine_requests_running", "Requests running, from the server's latest stats line.",
                                         labels=["path", "model_name"]),
            "waiting": GaugeMetricFamily("diag_engine_requests_waiting", "Requests waiting, from the server's latest stats line.",
                                         labels=["path", "model_name"]),
            "kv": GaugeMetricFamily("diag_engine_kv_cache_usage_ratio", "KV-cache usage (0-1), from the server's latest stats line.",
                                    labels=["path", "model_name"]),
        }
        for srv in queries.servers(store, meta, series=False):
            latest = srv["latest"]
            if not latest:
                continue
            f = srv["facts"]
            lab = [srv["source"], str(f.get("served_model_name") or f.get("model") or "")]
            for key, name in (("running", "running"), ("waiting", "waiting")):
                if latest.get(key) is not None:
                    fams[name].add_metric(lab, latest[key])
            if latest.get("kv_usage") is not None:
                fams["kv"].add_metric(lab, latest["kv_usage"] / 100.0)
        for n in names:
            yield fams[n]

    def _gpu(self) -> Iterator[Metric]:
        g = self.gpus()
        if not g.get("available"):
            return
        labels = ["gpu", "name"]
        used = GaugeMetricFamily("diag_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=labels)
        total = GaugeMetricFamily("diag_gpu_memory_total_bytes", "GPU memory in all (NVML).", labels=labels)
        util = GaugeMetricFamily("diag_gpu_utilization_ratio", "GPU utilisation over NVML's last sample period (0-1).", labels=labels)
        temp = GaugeMetricFamily("diag_gpu_temperature_celsius", "GPU temperature (NVML).", labels=labels)
        for d in g["gpus"]:
            lab = [str(d["index"]), d["name"]]
            for fam, key in ((used, "memory_used_bytes"), (total, "memory_total_bytes"), (util, "utilization_ratio"),
                             (temp, "temperature_celsius")):
                if isinstance(d.get(key), (int, float)):
                    fam.add_metric(lab, d[key])
        yield from (used, total, util, temp)


def _merged(rows: list[tuple[dict[str, str], float]], names: tuple[str, ...]) -> list[tuple[tuple[str, ...], float]]:
    """Label sets in a fixed order, duplicates summed (rows written by older versions may order keys differently)."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for lab, v in rows:
        out[tuple(str(lab.get(n, "")) for n in names)] += v
    return sorted(out.items())


def make_registry(get_store: Callable[[], Store], gpus: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(get_store, gpus))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
