"""Alert delivery latency and a burst, with a real daemon process, a real writer and a real
HTTP receiver on loopback.

Run:  python tests/bench/bench_alerts.py [--samples N] [--rate LINES_PER_S] [--seconds S]

1. line appended → webhook received, group_wait = 0: p50/p99 over N alerts (each sample is a new
   alert: resolve_after is short and the bench waits for the resolution between samples).
2. burst: RATE alert-worthy lines per second (4 rules, so 4 groups) for S seconds: whether the
   daemon keeps up (every line a stored finding; catch-up time after the writer stops), the
   number of notifications (must equal the number of groups), and the daemon's RSS over time.
Targets (issue #9): p99 ≤ 50 ms; notifications == groups; RSS flat.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import Receiver  # noqa: E402 - the tests' receiver

ROOT = Path(__file__).resolve().parents[2]
LINES = [
    "(APIServer pid=1) ERROR {ts} [serving_chat.py:1012] Error in chat completion stream generator: CUDA out of memory. Tried to allocate 11.72 GiB. GPU 0 has a total capacity of 79.19 GiB of which 7.04 GiB is free.",
    "(APIServer pid=1) ERROR {ts} [serving_chat.py:1012] Error in chat completion stream generator: NCCL error: unhandled cuda error",
    "(APIServer pid=1) ERROR {ts} [serving.py:274] Error with model error=ErrorInfo(message='The model `x1` does not exist.', type='NotFoundError', param='model', code=404)",
    "(APIServer pid=1) WARNING {ts} [scheduler.py:1560] Sequence group chatcmpl-1 is preempted by PreemptionMode.RECOMPUTE mode because there is not enough KV cache space. total_num_cumulative_preemption=1",
]


def start(tmp: Path, name: str, timers: str, url: str) -> tuple[subprocess.Popen, Path, Path]:
    state, log = tmp / name, tmp / name / "vllm.log"
    state.mkdir()
    log.write_text("")
    cfg = state / "diag.toml"
    cfg.write_text(f'[alerts]\n{timers}\n[[alerts.sink]]\nname = "hook"\ntype = "webhook"\nurl = "{url}"\n')
    p = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(cfg), "--state-dir", str(state), "--log", str(log)],
                         stderr=open(state / "daemon.err", "w"), cwd=ROOT)
    deadline = time.time() + 30
    while time.time() < deadline and not (state / "diag.sqlite3").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    return p, state, log


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def bench_latency(tmp: Path, n: int, line: str, what: str) -> None:
    rec = Receiver()
    d, _state, log = start(tmp, f"lat-{what}", "group_wait = 0\ngroup_interval = 0.05\nresolve_after = 0.2", rec.url)
    lat = []
    try:
        with open(log, "a") as f:
            for i in range(n):
                before = len(rec.requests)
                f.write(line.format(ts=time.strftime("%m-%d %H:%M:%S")) + "\n")
                f.flush()
                t0 = time.perf_counter()
                doc = rec.wait(before + 1, timeout=10)[before]
                t1 = rec.requests[before]["perf"]
                assert doc["status"] == "firing", doc["status"]
                lat.append((t1 - t0) * 1000)
                rec.wait(before + 2, timeout=10)  # its resolution: the next sample is a new alert
                time.sleep(0.05)
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(30)
        rec.close()
    print(f"line appended -> webhook received ({what}; group_wait 0, loopback): p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
          f"max {max(lat):.1f} ms over {n} alerts   (target p99 <= 50 ms)")


def bench_burst(tmp: Path, rate: int, seconds: float) -> None:
    rec = Receiver()
    d, state, log = start(tmp, "burst", "group_wait = 1\ngroup_interval = 300\nresolve_after = 900", rec.url)
    proc = psutil.Process(d.pid)
    rss: list[tuple[float, float]] = []
    total = int(rate * seconds)
    t_start = time.perf_counter()
    try:
        with open(log, "a") as f:
            ts = time.strftime("%m-%d %H:%M:%S")
            written, chunk = 0, max(1, rate // 100)
            next_rss = 0.0
            while written < total:
                f.write("".join(LINES[(written + k) % len(LINES)].format(ts=ts) + "\n" for k in range(chunk)))
                f.flush()
                written += chunk
                ahead = written / rate - (time.perf_counter() - t_start)
                if ahead > 0:
                    time.sleep(ahead)
                now = time.perf_counter() - t_start
                if now >= next_rss:
                    rss.append((now, proc.memory_info().rss / 2**20))
                    next_rss = now + 1.0
        t_written = time.perf_counter()
        db = sqlite3.connect(f"file:{state / 'diag.sqlite3'}?mode=ro", uri=True, timeout=30)
        while db.execute("SELECT count(*) FROM findings").fetchone()[0] < total:
            if time.perf_counter() - t_written > 120:
                break
            time.sleep(0.05)
        caught_up = time.perf_counter() - t_written
        stored = db.execute("SELECT count(*) FROM findings").fetchone()[0]
        per_rule = dict(db.execute("SELECT rule, count(*) FROM findings GROUP BY rule").fetchall())
        time.sleep(2.0)  # group_wait and any stragglers
        rss.append((time.perf_counter() - t_start, proc.memory_info().rss / 2**20))
        cpu = proc.cpu_times()
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(30)
        rec.close()
    docs = rec.json()
    groups = {doc["groupKey"] for doc in docs}
    counts = sorted(int(a["annotations"]["count"]) for doc in docs for a in doc["alerts"])
    wall = time.perf_counter() - t_start
    print(f"burst: {total} alert-worthy lines at {rate}/s for {seconds:.0f} s ({len(LINES)} rules): {stored} findings stored, "
          f"caught up {caught_up:.2f} s after the writer finished; daemon CPU {cpu.user + cpu.system:.1f} s over {wall:.1f} s wall")
    print(f"burst: {len(docs)} notifications for {len(groups)} groups (counts in them, sent group_wait after the first line: "
          f"{counts}; stored per rule: {sorted(per_rule.values())})")
    print("burst: daemon RSS MB over time: " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in rss))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        bench_latency(Path(t), args.samples, LINES[3], "one-line WARNING record")
        bench_latency(Path(t), max(10, args.samples // 10), LINES[0], "ERROR line: held until its file is quiet for record_quiet (0.25 s), a traceback may follow")
        bench_burst(Path(t), args.rate, args.seconds)


if __name__ == "__main__":
    main()
