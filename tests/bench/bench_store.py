"""What storing a trace costs in SQLite alone: the floor under the daemon's catch-up (issue #11).

Run:  python tests/bench/bench_store.py [--stored N] [--batch B] [--batches K]

A store (`diag.store.db.Store`, its real schema and indexes) is filled with N finished traces, then
K commits of B new traces each go through `Store.commit`, as the daemon's catch-up makes them. The
CPU per trace is printed for:

* request ids in order (`chatcmpl-000…1`, `…2`: what bench_daemon's writer logs) and in no order
  (random hex, as vLLM's): a random id lands on a random leaf of the id index, which a large store
  does not keep cached;
* the store as it is, and without the dashboard's secondary indexes (the id index only): how much
  of the cost the indexes are.

At about 3.3 log lines per request, X us per trace is X / 3.3 us per line that the catch-up pays
in SQLite whatever the pipeline does: 1e6 / (X / 3.3) lines/s is its ceiling.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from diag.analysis.trace import Trace
from diag.store.db import Store

LINES_PER_REQUEST = 3.3  # Received, Added, access line, and a share of the stats lines


def _trace(rid: str, t: float) -> Trace:
    return Trace(rid, "vllm", "/var/log/vllm/vllm.log", model="/models/Qwen3-VL-8B", client="10.0.0.1:41000",
                 endpoint="chat", received_at=t, added_at=t, status="ok", http_status=200, max_tokens=512,
                 timeline=[{"kind": "request.received", "time": t, "line": 1}, {"kind": "request.added", "time": t, "line": 2},
                           {"kind": "http.access", "time": t, "line": 3}],
                 http={"method": "POST", "path": "/v1/chat/completions", "status": 200}, first_line=1)


def run(order: str, indexes: bool, stored: int, batch: int, batches: int) -> float:
    rnd = random.Random(7)
    n = [0]

    def rid() -> str:
        n[0] += 1
        return f"chatcmpl-{n[0]:016x}" if order == "in order" else f"chatcmpl-{rnd.getrandbits(64):016x}"

    with tempfile.TemporaryDirectory(prefix="diag-bench-store-") as d:
        store = Store(Path(d) / "diag.sqlite3")
        if not indexes:
            names = [r[0] for r in store.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'traces' AND sql IS NOT NULL")]
            for name in names:
                store.db.execute(f"DROP INDEX {name}")
        for i in range(0, stored, 10_000):
            store.commit([_trace(rid(), 1e9 + i + j) for j in range(min(10_000, stored - i))], [], [])
        cpu = 0.0
        for b in range(batches):
            traces = [_trace(rid(), 2e9 + b * batch + j) for j in range(batch)]
            t = time.process_time()
            store.commit(traces, [], [])
            cpu += time.process_time() - t
        store.close()
    return cpu / (batch * batches) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stored", type=int, default=400_000, help="traces in the store before the timed commits")
    ap.add_argument("--batch", type=int, default=5_000, help="traces per commit (a catch-up commits every 16,000 lines)")
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    print(f"Store.commit of {args.batch * args.batches:,} new traces in {args.batch:,}-trace commits into a store of "
          f"{args.stored:,}; CPU per trace, and the catch-up ceiling it sets at {LINES_PER_REQUEST} lines per request")
    for order in ("in order", "random"):
        for indexes in (True, False):
            us = run(order, indexes, args.stored, args.batch, args.batches)
            what = "all indexes" if indexes else "id index only"
            print(f"  ids {order:<8}, {what:<13}: {us:6.1f} us/trace  -> at most {1e6 / (us / LINES_PER_REQUEST):10,.0f} lines/s")


if __name__ == "__main__":
    main()
