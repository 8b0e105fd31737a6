"""The dashboard with 1,000,000 traces in the store: page and scrape latency, live-stream latency,
and the daemon's ingestion throughput with ten live pages open versus none.

Run:  python tests/bench/bench_web.py [--traces N] [--keep DIR]

1. Fills a store with N traces (default 1,000,000) through Store.commit, the daemon's write path:
   a week of traffic, three models, the usual mix of statuses, images on a third, findings on 1 %,
   engine stats lines every 10 s.
2. `diag web` over it (real uvicorn, real HTTP, one client): p50/p99 of a trace page (random ids),
   the first /requests page, filtered pages, /api/traces, and a /metrics scrape.
3. `diag daemon --web` following a fresh log into that store: one request appended at a time, the
   time until it arrives on an open /api/events stream (p50/p99 of 200).
4. Ingestion: 60,000 requests (180,000 lines) appended at once; lines/s until all are stored, with no
   event stream open and with ten open (each consuming every event), alternated, three times each.
Targets (issue #10): trace page p99 <= 20 ms; first and filtered /requests p99 <= 50 ms;
/metrics <= 100 ms; throughput with ten streams within 10 % of none.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, vllm_request_lines  # noqa: E402 - the tests' helpers

from diag.analysis.rules import ruleset as rules  # noqa: E402
from diag.analysis.findings import Hit  # noqa: E402
from diag.store.db import Store  # noqa: E402
from diag.analysis.trace import Trace  # noqa: E402

MODELS = ("qwen3-vl-32b", "qwen2.5-vl-7b", "internvl3-8b")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def fill(path: Path, n: int) -> list[str]:
    """N traces over the last 7 days; returns a sample of ids."""
    rng = random.Random(10)
    store = Store(path)
    rule = rules.load().rules[0]
    now = time.time()
    start = now - 7 * 86400
    step = 7 * 86400 / n
    sample: list[str] = []
    t0 = time.perf_counter()
    batch, hits, samples = [], [], []
    for i in range(n):
        rid = f"chatcmpl-{rng.getrandbits(128):032x}"
        rec = start + i * step
        r = rng.random()
        status, http = ("ok", 200) if r < 0.93 else ("aborted", 200) if r < 0.96 else ("failed", 500) if r < 0.985 else ("rejected", 400)
        lat = round(rng.lognormvariate(0.5, 0.9), 3)
        t = Trace(rid, "vllm", "/var/log/vllm/vllm.log", model=MODELS[i % 3], client=f"10.0.{i % 250}.{i % 199}:{40000 + i % 20000}",
                  received_at=rec, added_at=rec + 0.01, first_output_at=rec + 0.2, finished_at=rec + lat, status=status,
                  http_status=http, prompt_tokens=300 + i % 3000, output_tokens=20 + i % 500, max_tokens=2048,
                  images=(1 + i % 3) if i % 3 == 0 else 0, latency_s=lat, first_line=3 * i,
                  timeline=[{"kind": "request.received", "time": rec, "line": 3 * i}, {"kind": "request.added", "time": rec + 0.01, "line": 3 * i + 1},
                            {"kind": "http.access", "time": rec + lat, "line": 3 * i + 2}])
        if i % 100 == 0:
            t.findings = [rule.id]
            hits.append(Hit(rule, rec, "/var/log/vllm/vllm.log", 3 * i, {}, rid, "ERROR ... excerpt"))
        if i % max(1, n // 500) == 0:
            sample.append(rid)
        batch.append(t)
        if i % max(1, int(10 / step)) == 0:
            samples.append({"source": "/var/log/vllm/vllm.log", "ts": rec, "running": i % 17, "waiting": i % 5, "kv_usage": float(i % 100),
                            "prompt_tps": 1200.0, "gen_tps": 300.0})
        if len(batch) == 20000:
            store.commit(batch, hits, [], {"facts": {"/var/log/vllm/vllm.log": {"server": "vllm", "version": "0.11.0", "model": MODELS[0]}}}, samples)
            batch, hits, samples = [], [], []
    store.commit(batch, hits, [], None, samples)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    print(f"filled {n:,} traces in {time.perf_counter() - t0:.0f} s ({path.stat().st_size / 2**20:.0f} MB)")
    return sample


def wait_up(url: str) -> None:
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(url, timeout=5)
            return
        except httpx.HTTPError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def timed(client: httpx.Client, urls: list[str]) -> list[float]:
    out = []
    for u in urls:
        t0 = time.perf_counter()
        r = client.get(u)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (u, r.status_code, r.text[:200])
    return out


def report(name: str, ms: list[float], target: float | None = None) -> None:
    tail = f"   (target p99 <= {target:.0f} ms)" if target else ""
    print(f"{name:44} p50 {pct(ms, 50):6.1f} ms  p99 {pct(ms, 99):6.1f} ms  max {max(ms):6.1f} ms  n={len(ms)}{tail}")


def bench_pages(state: Path, sample: list[str]) -> None:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "diag", "web", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"],
                         stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base + "/api/status")
        with httpx.Client(base_url=base, timeout=30) as c:
            rng = random.Random(1)
            timed(c, ["/requests", "/trace/" + sample[0], "/metrics"] * 3)  # warm
            report("trace page /trace/{id} (random ids)", timed(c, ["/trace/" + rng.choice(sample) for _ in range(300)]), 20)
            report("first /requests page", timed(c, ["/requests"] * 200), 50)
            report("/requests?status=failed", timed(c, ["/requests?status=failed"] * 200), 50)
            report("/requests?model=…&status=rejected", timed(c, ["/requests?model=internvl3-8b&status=rejected"] * 200), 50)
            report("/requests?findings=1", timed(c, ["/requests?findings=1"] * 200), 50)
            report("/requests?min_latency=20 (rare: scans)", timed(c, ["/requests?min_latency=20"] * 100), 50)
            report("/requests?images=1&http_status=500", timed(c, ["/requests?images=1&http_status=500"] * 100), 50)
            doc = c.get("/api/traces", params={"status": "failed"}).json()
            deep = []
            for _ in range(20):  # 20 pages down
                doc = c.get("/api/traces", params={"status": "failed", "cursor": doc["next"]}).json()
            report("/api/traces?status=failed, page 21", timed(c, [f"/api/traces?status=failed&cursor={doc['next']}"] * 100) + deep, 50)
            report("/api/traces first page", timed(c, ["/api/traces"] * 200), 50)
            report("/metrics scrape", timed(c, ["/metrics"] * 50), 100)
            report("overview /", timed(c, ["/"] * 20))
    finally:
        p.terminate()
        p.wait(30)


class Listener(threading.Thread):
    """One open /api/events stream that parses every event, as a page would."""

    def __init__(self, url: str, seen: dict[str, float] | None = None):
        super().__init__(daemon=True)
        self.url, self.seen, self.events, self.reloads, self.ready = url, seen, 0, 0, threading.Event()
        self.stop = False
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._run()
        except httpx.HTTPError:
            pass  # the daemon stopped
        except Exception as exc:  # noqa: BLE001 - reported by the measurement that waits on this stream
            self.error = exc

    def _run(self) -> None:
        with httpx.Client(timeout=None) as c, c.stream("GET", self.url) as r:
            for line in r.iter_lines():
                if self.stop:
                    return
                if line.startswith("event: hello"):
                    self.ready.set()
                elif line.startswith("event: reload"):
                    self.reloads += 1
                elif line.startswith("data: ["):
                    rows = json.loads(line[6:])
                    self.events += 1
                    if self.seen is not None:
                        now = time.perf_counter()
                        for row in rows:
                            self.seen.setdefault(row["id"], now)


def start_daemon(state: Path, log: Path, port: int) -> subprocess.Popen:
    cfg = state / "bench.toml"  # no retention pass in the middle of an A/B comparison (the store is past 1,000,000)
    cfg.write_text("[daemon]\nretention_traces = 100000000\n")
    p = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(cfg), "--state-dir", str(state), "--log", str(log),
                          "--web", f"127.0.0.1:{port}"], stderr=open(state / "daemon.err", "a"))
    wait_up(f"http://127.0.0.1:{port}/api/status")
    time.sleep(1.0)
    return p


def bench_live(state: Path, log: Path) -> None:
    port = free_port()
    d = start_daemon(state, log, port)
    seen: dict[str, float] = {}
    ls = Listener(f"http://127.0.0.1:{port}/api/events", seen)
    ls.start()
    ls.ready.wait(10)
    lat = []
    try:
        with open(log, "a") as f:
            for i in range(200):
                rid = f"chatcmpl-live{random.getrandbits(40):010x}{i:09x}"
                f.write(vllm_request_lines(rid, 20000 + i % 40000))
                f.flush()
                t0 = time.perf_counter()
                while rid not in seen:
                    if time.perf_counter() - t0 > 10:
                        raise RuntimeError(f"{rid} not on the event stream after 10 s (stream ready: {ls.ready.is_set()}, "
                                           f"alive: {ls.is_alive()}, error: {ls.error!r}, events: {ls.events})")
                    time.sleep(0.0005)
                lat.append((seen[rid] - t0) * 1000)
                time.sleep(0.02)
    finally:
        ls.stop = True
        d.send_signal(signal.SIGTERM)
        d.wait(30)
    report("line appended -> on the open event stream", lat)


def bench_ingest(state: Path, log: Path, runs: int = 3, n: int = 60000) -> None:
    results: dict[int, list[float]] = {0: [], 10: []}
    db = state / "diag.sqlite3"
    tag = f"{random.getrandbits(32):08x}"  # ids new to this store even when --keep reuses it
    for run in range(runs * 2):
        clients = 10 if run % 2 else 0
        port = free_port()
        d = start_daemon(state, log, port)
        ls = [Listener(f"http://127.0.0.1:{port}/api/events") for _ in range(clients)]
        for x in ls:
            x.start()
        for x in ls:
            x.ready.wait(10)
        ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        last = f"chatcmpl-{tag}r{run}{n - 1:012x}"
        try:
            text = "".join(vllm_request_lines(f"chatcmpl-{tag}r{run}{i:012x}", 20000 + i % 40000) for i in range(n))
            t0 = time.perf_counter()
            with open(log, "a") as f:
                f.write(text)
            while not (row := ro.execute("SELECT status FROM traces WHERE id = ?", (last,)).fetchone()) or row[0] != "ok":
                time.sleep(0.01)
            secs = time.perf_counter() - t0
        finally:
            for x in ls:
                x.stop = True
            d.send_signal(signal.SIGTERM)
            d.wait(60)
            ro.close()
        rate = 3 * n / secs
        results[clients].append(rate)
        ev, rl = sum(x.events for x in ls), sum(x.reloads for x in ls)
        print(f"ingestion run {run + 1}: {clients:2} event streams open: {3 * n:,} lines in {secs:.2f} s = {rate:,.0f} lines/s"
              + (f" ({ev} batches and {rl} reload notices delivered)" if clients else ""))
    for how, f in (("best", max), ("median", lambda v: sorted(v)[len(v) // 2])):
        base, with10 = f(results[0]), f(results[10])
        print(f"ingestion, {how} of {runs}: none {base:,.0f} lines/s, ten streams {with10:,.0f} lines/s: {100 * (with10 / base - 1):+.1f} %"
              f"   (target within 10 %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="use (and keep) this state dir; an existing store there is reused")
    ap.add_argument("--only", choices=("pages", "live", "ingest"))
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="diag-bench-web-"))
    tmp.mkdir(parents=True, exist_ok=True)
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    ids_file = tmp / "ids.json"
    if not (state / "diag.sqlite3").exists():
        ids_file.write_text(json.dumps(fill(state / "diag.sqlite3", args.traces)))
    sample = json.loads(ids_file.read_text())
    log = tmp / "vllm.log"
    log.touch()
    if args.only in (None, "pages"):
        bench_pages(state, sample)
    if args.only in (None, "live"):
        bench_live(state, log)
    if args.only in (None, "ingest"):
        bench_ingest(state, log)
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
