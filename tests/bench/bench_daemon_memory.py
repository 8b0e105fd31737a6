"""The daemon's memory while it follows many short-lived files one after another.

Run:  python tests/bench/bench_daemon_memory.py [--files N]

A real daemon follows a glob (`logs/*.log`). The writer creates one date-stamped file at a time
(a vLLM start, facts, five requests waiting for their access lines, a CUDA OOM, engine stats),
waits until the daemon has read it, and deletes it. Every
100 files the daemon's RSS is printed. Everything the daemon keeps per path (facts, models,
requests awaiting access lines, suppression, streaks, rotations, held hits) must be dropped when
a file is gone, so RSS stays flat (target from issue #8: no growth trend after warm-up).
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

ROOT = Path(__file__).resolve().parents[2]


def file_body(i: int) -> str:
    ts = time.strftime("%m-%d %H:%M:%S")
    pre = f"(APIServer pid={1000 + i}) INFO {ts}"
    lines = [f"{pre} [api_server.py:1] vLLM API server version 0.11.0",
             f"{pre} [api_server.py:2] non-default args: {{'model': '/models/m{i}', 'served_model_name': ['model-{i}']}}",
             f"(EngineCore pid={2000 + i}) INFO {ts} [gpu_worker.py:298] Available KV cache memory: {1 + i % 7}.5 GiB",
             f"(EngineCore pid={2000 + i}) INFO {ts} [kv_cache_utils.py:1087] GPU KV cache size: {10000 + i} tokens"]
    for j in range(5):  # received, never answered in this file: they wait for access lines
        rid = f"chatcmpl-{i:08x}{j:08x}"
        lines += [f"{pre} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, max_tokens=64), lora_request: None.",
                  f"{pre} [async_llm.py:578] Added request {rid}-0000abcd."]
    lines += [f"(EngineCore pid={2000 + i}) ERROR {ts} [core.py:1] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
              f"{pre} INFO {ts} [loggers.py:1] Engine 000: Avg prompt throughput: 0.0 tokens/s, Running: 5 reqs, Waiting: 3 reqs, GPU KV cache usage: 99.0%"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        logs, state = base / "logs", base / "state"
        logs.mkdir()
        state.mkdir()
        cfg = base / "diag.toml"
        cfg.write_text(f'[daemon]\nfrom_beginning = true\nrescan_globs = 0.2\nrotate_wait = 0.2\npoll_interval = 0.05\n'
                       f'[[log]]\npath = "{logs}/*.log"\n')
        d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(cfg), "--state-dir", str(state)],
                             stderr=open(base / "daemon.err", "w"), cwd=ROOT)
        proc = psutil.Process(d.pid)
        db = state / "diag.sqlite3"
        while not db.exists():
            time.sleep(0.05)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        t0 = time.time()
        samples = []
        try:
            for i in range(args.files):
                stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(1_790_000_000 + i * 60))
                p = logs / f"vllm-{stamp}.log"  # date-stamped pieces of one server's log
                body = file_body(i)
                p.write_text(body)
                n = body.count("\n")
                deadline = time.time() + 30
                while time.time() < deadline:
                    r = conn.execute("SELECT lines_read FROM sources WHERE path = ?", (str(p),)).fetchone()
                    if r and r[0] >= n:
                        break
                    time.sleep(0.02)
                else:
                    print(f"file {i}: not read within 30 s", file=sys.stderr)
                    return 1
                p.unlink()
                if (i + 1) % 100 == 0:
                    time.sleep(0.5)  # let it retire what was deleted
                    rss = proc.memory_info().rss / 2**20
                    samples.append(rss)
                    print(f"after {i + 1:5d} files: daemon RSS {rss:6.1f} MiB  ({time.time() - t0:5.1f} s)", flush=True)
        finally:
            d.send_signal(signal.SIGTERM)
            d.wait(timeout=60)
        findings = conn.execute("SELECT count(*) FROM findings").fetchone()[0]
        traces = conn.execute("SELECT count(*) FROM traces").fetchone()[0]
        print(f"{args.files} files: {traces} traces, {findings} findings stored")
        if len(samples) >= 4:
            half = len(samples) // 2 - 1  # the first half warms up (SQLite's page cache fills to its bound)
            grow = samples[-1] - samples[half]
            print(f"RSS growth over the second half ({(half + 1) * 100} → {len(samples) * 100} files): {grow:+.1f} MiB "
                  f"({grow / ((len(samples) - half - 1) * 100) * 1024:+.2f} KiB per file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
