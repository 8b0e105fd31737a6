"""CPU of the daemon following a log as a container runtime keeps it, against the plain log.

Usage: python tests/bench/bench_daemon_containerlog.py LOG [--rounds 3] [--formats cri,docker-json]

LOG (e.g. a 200,000-line vLLM log) is written as is, and wrapped line by line as containerd/CRI-O
(`<time> stdout F <line>`) and dockerd's json-file driver write it; a real daemon (its own state
directory, `--from-beginning`) reads each from its first byte to its end, and its CPU seconds
(user + system, from /proc) are printed, the runs interleaved (plain, cri, docker-json, plain, ...):
best and spread over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def wrap(src: Path, dst: Path, fmt: str) -> None:
    with open(src, "rb") as f, open(dst, "wb") as out:
        for i, line in enumerate(f):
            line = line.rstrip(b"\n")
            ts = f"2026-11-22T18:{27 + i // 360000 % 30:02d}:{(i // 6000) % 60:02d}.{i:09d}Z"
            if fmt == "cri":
                out.write(f"{ts} stdout F ".encode() + line + b"\n")
            else:
                out.write(json.dumps({"log": line.decode("utf-8", "replace") + "\n", "stream": "stdout", "time": ts}).encode() + b"\n")


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def follow(log: Path, tmp: Path) -> tuple[float, int]:
    """The daemon's CPU seconds to read `log` to its end, and the traces it stored."""
    state = tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--state-dir", str(state), "--log", str(log), "--no-web",
                          "--from-beginning"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    size = log.stat().st_size
    try:
        while True:
            time.sleep(0.5)
            r = subprocess.run([sys.executable, "-m", "diag", "status", "--json", "--state-dir", str(state)],
                               capture_output=True, text=True)
            if r.returncode == 0:
                doc = json.loads(r.stdout)
                if any(s["offset"] == size for s in doc["sources"]):
                    return cpu(d.pid), doc["traces"]
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--formats", default="cri,docker-json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        files = {"plain": args.log}
        for fmt in args.formats.split(","):
            files[fmt] = tmp / f"{fmt}.log"
            wrap(args.log, files[fmt], fmt)
        got: dict[str, list[float]] = {k: [] for k in files}
        for _ in range(args.rounds):
            for name, f in files.items():
                secs, traces = follow(f, tmp)
                got[name].append(secs)
                print(f"{name:12} {secs:6.2f} s CPU  ({traces} traces)", flush=True)
        lines = sum(1 for _ in open(args.log, "rb"))
        for name, v in got.items():
            print(f"{name:12} best {min(v):6.2f} s CPU, spread {max(v) - min(v):5.2f} s, {lines / min(v):9,.0f} lines/CPU s"
                  f"  ({min(v) / min(got['plain']):.2f}x plain)")


if __name__ == "__main__":
    main()
